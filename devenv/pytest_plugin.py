"""Pytest plugin: the local environment as session fixtures, for every suite that asks.

Loaded with ``-p devenv.pytest_plugin`` (pyproject.toml), so the behaviour tests in
``tests/e2e`` and the environment's own self-tests in ``devenv/tests`` share one control
plane and one stack per session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import pytest

from devenv.controlplane import Binaries, ControlPlane, MissingBinariesError, locate
from devenv.node.build import MissingNodeBinariesError, NodeBinaries, locate_node
from devenv.peers.fixtures import claim_gcp_metadata_host, require_binaries
from devenv.peers.registry import REGISTRY_BINARY, SKOPEO_BINARY
from devenv.stack import Stack, running_stack

# A warm start takes well under 15 s. The session fixture's setup counts against the
# pytest-timeout budget (120 s) of the first test that uses it, so startup gives up well
# before that and fails with the component logs rather than a bare timeout traceback.
STARTUP_TIMEOUT_SECONDS = 60.0
# How many log lines per component a failing test's report shows.
LOG_TAIL_LINES = 60

PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item; attach control-plane logs to failures."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    if report.failed:
        control_plane = getattr(item, "funcargs", {}).get("controlplane")
        if isinstance(control_plane, ControlPlane) and control_plane.running:
            report.sections.append(
                ("control plane logs (last lines)", control_plane.log_tails(LOG_TAIL_LINES))
            )
    return report


T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """Points google-auth's metadata server client at a loopback port before anything
    imports it (it reads GCE_METADATA_HOST once, at import): the ``gcp_emulator``
    fixture serves there. A test process never reaches a real metadata server."""
    claim_gcp_metadata_host()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def _located(locate: Callable[[], T], missing: type[Exception]) -> T:
    """What ``locate`` finds; skips (fails under CI=true) when it raises ``missing``."""
    try:
        return locate()
    except missing as exc:
        problem = str(exc)
    # Outside the except block, so the report shows the message and not a chained traceback.
    if _in_ci():
        pytest.fail(f"CI=true and {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def controlplane_binaries() -> Binaries:
    """The binaries; skips (fails under CI=true) when they have not been built."""
    return _located(locate, MissingBinariesError)


@pytest.fixture(scope="session")
def node_binaries() -> NodeBinaries:
    """What a local node runs; skips (fails under CI=true) when something is missing."""
    return _located(locate_node, MissingNodeBinariesError)


@pytest.fixture(scope="session")
def controlplane(controlplane_binaries: Binaries) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver + kube-controller-manager shared by the session."""
    with ControlPlane(controlplane_binaries, startup_timeout=STARTUP_TIMEOUT_SECONDS) as cp:
        yield cp


@pytest.fixture
def namespace(controlplane: ControlPlane) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (so pods can be created)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    controlplane.kubectl("create", "namespace", name)
    controlplane.wait_for_service_account(name)
    yield name
    controlplane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def stack(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The whole product on the control plane: two webhook replicas under their own
    ServiceAccount, the cloud emulators and real registries (devenv/stack.py)."""
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    with running_stack(controlplane, tmp_path_factory.mktemp("stack"), refresh_fraction=0.1) as s:
        yield s


@pytest.fixture
def webhook_logs_on_failure(request: pytest.FixtureRequest, stack: Stack) -> Iterator[None]:
    """Print the webhook replicas' logs when a test fails (pytest shows captured output)."""
    yield
    reports = request.node.stash.get(PHASE_REPORTS, {})
    if any(r.failed for r in reports.values()):
        print(stack.logs())
