"""The real node beside a control plane of the test module's own, for the modules that run
pods: the fixtures (module-scoped, used by name: each module that imports them gets its
own) and ways to act on the cluster as its users do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devenv.controlplane import Binaries, ControlPlane
from devenv.node.build import NodeBinaries
from devenv.node.harness import Node
from devenv.node.image import missing_tools
from devenv.node.pods import trust_stack_registries
from devenv.stack import Stack
from tests.support.manifests import missing_tool


@pytest.fixture(scope="module")
def controlplane(controlplane_binaries: Binaries) -> Iterator[ControlPlane]:
    """This module's own control plane: the session's holds other tests' pods (Pending for
    lack of a node), which the node's scheduler would all take on."""
    with ControlPlane(controlplane_binaries) as cp:
        yield cp


@pytest.fixture(scope="module")
def node(controlplane: ControlPlane, node_binaries: NodeBinaries, stack: Stack) -> Iterator[Node]:
    """The node, trusting the registries of the module's ``stack``."""
    with Node(controlplane, node_binaries) as running:
        trust_stack_registries(running, stack)
        yield running
    assert running.cleanup_problems == []


def require_image_tools() -> None:
    """What building the webhook's image needs (buildah, debootstrap): a test without them
    is skipped, and fails under CI=true."""
    missing = missing_tools()
    if missing:
        missing_tool(f"missing {', '.join(missing)}: install with `make system-deps`")


def apply(cp: ControlPlane, namespace: str, manifest: dict[str, Any]) -> str:
    """Create the object; return what kubectl printed on stderr (admission warnings)."""
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest)).stderr
