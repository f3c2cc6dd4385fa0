"""Hypothesis settings for the property-based tests.

``make test`` runs a sample (``FUZZ_EXAMPLES`` unset: 150 cases per property);
``make fuzz`` sets ``FUZZ_EXAMPLES`` so the properties together run >= 100,000 cases and
prints how many ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.threaded import ThreadedServer, threaded_server

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))

settings.register_profile(
    "webhook",
    max_examples=EXAMPLES,
    deadline=None,  # the HTTP properties share a machine with other work; time is not the point
    database=None,  # no .hypothesis/ directory left in the tree
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("webhook")

#: Cases run per property in this session, printed at the end.
CASES: dict[str, int] = {}


def count(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    # Module scope: the server sets the root logger to DEBUG and records every record while
    # it runs; held for the session, that reached every later suite (their logs kept in
    # memory for the rest of the run, and their DEBUG lines formatted and handled).
    with threaded_server() as s:
        yield s


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        total = sum(CASES.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
        terminalreporter.write_line(f"generated cases: {total} ({parts})")
