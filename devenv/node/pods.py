"""Pods on the local node: manifests that run the seed image, and what the kubelet reports.

Shared by the kubelet-based end-to-end tests and the playground.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devenv.controlplane import ControlPlane
from devenv.node.harness import Node
from devenv.stack import Stack

# What the kubelet puts in a waiting container's status when a pull fails
# (pkg/kubelet/images: ErrImagePull on the failure, ImagePullBackOff while it waits).
PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff"})


def trust_stack_registries(node: Node, stack: Stack) -> None:
    """Let the node's containerd reach every registry of the stack (the ACR login servers and
    the Artifact Registry host over the emulators' TLS, the ECR-style registry over plain
    HTTP)."""
    assert stack.emulator is not None and stack.ecr_registry is not None
    for registry in (
        stack.acr,
        stack.acr_slow,
        stack.acr_denied,
        stack.acr_short,
        stack.acr_tenant,
    ):
        if registry is not None:
            node.trust_registry(registry.login_server, ca=stack.emulator.ca_path)
    for gar in (stack.gar, stack.gar_tenant):
        if gar is not None:
            node.trust_registry(gar.host, ca=stack.emulator.ca_path)
    node.trust_registry(stack.ecr_registry.host, ca=None)


def echo_containers(images: Mapping[str, str]) -> list[dict[str, Any]]:
    """Containers (name -> image of the seed) that print one line from the image and wait."""
    return [
        {
            "name": container,
            "image": image,
            "command": [
                "/bin/busybox",
                "sh",
                "-c",
                f"echo {container}: pulled $(cat /hello.txt | wc -c) bytes of hello.txt; "
                "exec /bin/busybox sleep 3600",
            ],
        }
        for container, image in images.items()
    ]


def running_pod(
    name: str,
    images: Mapping[str, str],
    *,
    service_account: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A pod of ``echo_containers``; it stops within a second when deleted."""
    spec: dict[str, Any] = {
        "containers": echo_containers(images),
        "terminationGracePeriodSeconds": 1,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {"app": name})},
        "spec": spec,
    }


@dataclass(frozen=True)
class PodState:
    phase: str
    # container name -> (waiting reason, message), for containers that wait
    waiting: dict[str, tuple[str, str]]

    @property
    def pull_failing(self) -> bool:
        return any(reason in PULL_FAILURES for reason, _ in self.waiting.values())


def pod_state(pod: Mapping[str, Any]) -> PodState:
    status = pod.get("status") or {}
    waiting = {}
    for container in status.get("containerStatuses") or []:
        state = (container.get("state") or {}).get("waiting")
        if state:
            waiting[container["name"]] = (state.get("reason", ""), state.get("message", ""))
    return PodState(status.get("phase", ""), waiting)


def get_pod(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        cp.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
    )
    return pod


def wait_for_pod(
    cp: ControlPlane,
    namespace: str,
    name: str,
    *,
    running: bool = True,
    timeout: float = 60.0,
) -> tuple[dict[str, Any], float]:
    """Wait until the pod runs (or, with ``running=False``, until a pull fails); returns
    the pod and the seconds waited. Raises AssertionError with the pod's state on timeout."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        pod = get_pod(cp, namespace, name)
        state = pod_state(pod)
        if running and state.phase == "Running":
            return pod, time.monotonic() - started
        if not running and state.pull_failing:
            return pod, time.monotonic() - started
        if time.monotonic() > deadline:
            events = pull_events(cp, namespace, name)
            raise AssertionError(
                f"pod {namespace}/{name} not {'Running' if running else 'failing to pull'} "
                f"after {timeout:g}s: {state}; events: {events}"
            )
        time.sleep(0.2)


def pull_events(cp: ControlPlane, namespace: str, pod: str) -> list[str]:
    """``REASON: message`` of the kubelet's events about the pod, oldest first."""
    items = json.loads(
        cp.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={pod}",
            "-o",
            "json",
        ).stdout
    )["items"]
    items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [f"{e['reason']}: {e.get('message', '')}" for e in items]


def wait_for_log(
    node: Node, namespace: str, pod: str, container: str, *, timeout: float = 10.0
) -> list[str]:
    """The container's output lines, once it has written any (Running comes first)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = node.container_log(namespace, pod, container)
        if lines:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"{namespace}/{pod}/{container} wrote nothing in {timeout:g}s")
        time.sleep(0.1)


def event_counts(cp: ControlPlane, namespace: str, pod: str) -> dict[str, int]:
    """How many times each event reason was reported for the pod (``Pulling`` counts the
    kubelet's pull attempts: the first and each retry)."""
    items = json.loads(
        cp.kubectl(
            "get", "events", "-n", namespace,
            "--field-selector", f"involvedObject.name={pod}", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    counts: dict[str, int] = {}
    for event in items:
        counts[event["reason"]] = counts.get(event["reason"], 0) + int(event.get("count") or 1)
    return counts
