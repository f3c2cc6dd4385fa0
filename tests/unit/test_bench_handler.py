"""bench.handler times the real handlers: the webhook's answers every review with its
patch from memory (or the harness refuses to report), and a child process reports one
figure as JSON."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from bench import handler


@pytest.mark.parametrize("kind", handler.KINDS)
def test_each_handler_is_timed_on_the_benchmarks_review(kind: str) -> None:
    us = asyncio.run(handler._measure(kind, batches=2, batch=5))
    assert 0 < us < 1e6


def test_a_webhook_that_does_not_patch_is_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.admission import decision

    # Every image then misses the config: the pod is left alone, unpatched.
    monkeypatch.setattr(decision, "pod_needs", lambda config, pod: ())
    with pytest.raises(RuntimeError, match="did not patch"):
        asyncio.run(handler._measure("webhook", batches=1, batch=2))


def test_a_child_process_reports_its_fastest_batch_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.handler", "--run", "floor", "--batches", "2", "--batch", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    figure = json.loads(out.stdout.strip().splitlines()[-1])
    assert figure["kind"] == "floor" and figure["us"] > 0
