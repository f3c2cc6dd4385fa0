"""A rolling restart on the real control plane: the replica holding the refresher Lease is
sent SIGTERM while pods are created steadily through the API server, then a replacement
joins. Every admission succeeds and is patched, and the Lease passes to the survivor
within its lease duration.

The balancer in front of the replicas follows their readiness as a Service's endpoints
do (devenv/stack.py): after SIGTERM a replica answers /readyz 503 and gets no new
connections, while the API server's kept-alive connections to it go on until closed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from devenv.controlplane import ControlPlane
from devenv.processes import wait_for
from devenv.stack import NAMESPACE, Replica, Stack
from tests.e2e.support import admission_results, get_json, ns_name, pod_manifest, pull_secret_names
from webhook.upkeep.election import LEASE_SECONDS

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

#: Pod creations in flight at once: several, so the API server keeps several connections
#: to the webhook and both replicas carry admissions when one is stopped.
CREATORS = 4
LEASE_NAME = "pull-secret-webhook"
LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE_NAME}"


@dataclass
class PodStream:
    """Creates pods in ``namespace`` through the API server until stopped, from
    ``CREATORS`` threads; remembers every answer."""

    cp: ControlPlane
    namespace: str
    image: str
    created: list[str] = field(default_factory=list)
    failures: list[tuple[str, int, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, creator: int) -> None:
        n = 0
        while not self._stop.is_set():
            name = f"p{creator}-{n}"
            n += 1
            try:
                answer = self.cp.api(
                    "POST",
                    f"/api/v1/namespaces/{self.namespace}/pods",
                    pod_manifest(name, self.image),
                    timeout=30,
                )
                status, body = answer.status, answer.body
            except OSError as e:
                status, body = 0, repr(e)
            with self._lock:
                if status == 201:
                    self.created.append(name)
                else:
                    message = body.get("message") if isinstance(body, dict) else body
                    self.failures.append((name, status, message))
            time.sleep(0.02)

    def count(self) -> int:
        with self._lock:
            return len(self.created) + len(self.failures)

    @contextmanager
    def running(self) -> Iterator[PodStream]:
        threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CREATORS)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in threads:
                t.join(60)

    def wait_for_more(self, count: int, timeout: float = 30.0) -> None:
        target = self.count() + count
        wait_for(f"{count} more pod creations", lambda: self.count() >= target, timeout)


def lease(cp: ControlPlane) -> dict[str, Any]:
    answer = cp.api(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE_NAME}"
    )
    assert answer.status == 200, answer.body
    spec: dict[str, Any] = answer.body["spec"]
    return spec


def served(replica: Replica) -> float:
    """Admissions this replica has patched (it alone serves them: a per-replica count)."""
    return admission_results(replica.metrics()).get("patched", 0.0)


def test_rolling_restart_loses_no_admission_and_the_lease_passes_to_the_survivor(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    assert stack.balancer is not None and len(stack.replicas) == 2
    ns = stack.labelled_namespace(ns_name("rolling"))
    cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("first", stack.acr_image))
    )
    [secret] = pull_secret_names(get_json(cp, "pod", "first", "-n", ns))
    names = {r.name for r in stack.replicas}
    holder = wait_for(
        "a serving replica to hold the refresher Lease",
        lambda: lease(cp).get("holderIdentity") in names and lease(cp)["holderIdentity"],
        timeout=LEASE_SECONDS + 10,
    )
    [leaving] = [r for r in stack.replicas if r.name == holder]
    [survivor] = [r for r in stack.replicas if r is not leaving]
    transitions = int(lease(cp).get("leaseTransitions") or 0)
    before = {r.name: served(r) for r in stack.replicas}

    stream = PodStream(cp, ns, stack.acr_image)
    with stream.running():
        # Both replicas carry admissions when one of them is stopped.
        wait_for(
            "admissions on both replicas",
            lambda: all(served(r) > before[r.name] for r in (leaving, survivor)),
        )
        sigterm = time.monotonic()
        leaving.process.terminate()
        wait_for(
            "the Lease to pass to the survivor",
            lambda: lease(cp).get("holderIdentity") == survivor.name,
            timeout=LEASE_SECONDS + 10,
        )
        handover = time.monotonic() - sigterm
        assert stack.retire(leaving) == 0
        stream.wait_for_more(20)
        replacement = stack.add_replica()  # the rolling update's new pod joins
        stream.wait_for_more(20)

    assert stream.failures == [], f"{len(stream.failures)} admissions failed: {stream.failures[:5]}"
    assert len(stream.created) >= 60
    pods = {p["metadata"]["name"]: p for p in get_json(cp, "pods", "-n", ns)["items"]}
    unpatched = [n for n in stream.created if pull_secret_names(pods[n]) != [secret]]
    assert unpatched == [], f"{len(unpatched)} pods admitted without their pull secret"
    spec = lease(cp)
    assert spec["holderIdentity"] == survivor.name
    assert int(spec["leaseTransitions"]) == transitions + 1
    assert handover <= LEASE_SECONDS, f"the Lease passed {handover:.1f}s after SIGTERM"
    assert "released the refresher lease" in leaving.log.read_text()
    assert replacement.ready()
    print(
        f"rolling restart: {len(stream.created)} pods admitted and patched, 0 failed; "
        f"Lease to {survivor.name} {handover:.1f}s after SIGTERM"
    )
