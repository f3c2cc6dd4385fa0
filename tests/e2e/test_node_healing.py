"""What an outage broke heals itself, on a real node (webhook/upkeep/healing.py).

With ``failurePolicy: Ignore``, pods created while every replica is down are admitted
without their pull secret and the kubelet's pulls fail (the registries refuse anonymous
pulls). Once the webhook is back, its leader evicts the stuck pods a controller re-creates
(here, a Deployment's), and the replacements run with their secrets. A bare pod is only
reported, and a pod failing for an image the webhook does not serve is left alone. A
namespace that opts in after its pods began failing (install day) heals the same way.

PodDisruptionBudgets: the API server evicts a pod that never started (phase Pending, as
a pod stuck on its first pull is) whatever its budgets say, since that disrupts nothing;
a budget holds back the eviction of a pod that has run and now cannot pull its image
again (phase Running), and the webhook says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devenv.controlplane import ControlPlane
from devenv.node.harness import Node
from devenv.node.pods import (
    pod_state,
    running_pod,
    wait_for_log,
)
from devenv.peers.fixtures import require_binaries
from devenv.peers.registry import REGISTRY_BINARY, SKOPEO_BINARY
from devenv.processes import wait_for
from devenv.stack import Stack, running_stack
from tests.e2e.support import get_json, ns_name, pull_secret_names
from tests.support.node import apply, controlplane, node
from webhook.upkeep.election import RENEW_SECONDS
from webhook.upkeep.healing import EVENT_BLOCKED, EVENT_EVICTED, EVENT_MISSING

#: Fixtures, used by name.
__all__ = ["controlplane", "node"]

# The module's own control plane, stack and node, and a pass each takes its time.
pytestmark = pytest.mark.timeout(400)

#: healing.graceSeconds for this stack: short, so that the test measures the healing
#: rather than the wait (the product's default is 90 s).
HEAL_GRACE = 5.0
#: What a replacement takes besides the grace: a replica's start, leader election and
#: its pods list (a few seconds), one pass interval (RENEW_SECONDS), the eviction, the
#: ReplicaSet's new pod through the webhook (a credential exchange and a Secret), its
#: scheduling and a pull (under a second on this node), with room for a busy machine.
HEAL_MARGIN = RENEW_SECONDS + 25.0
#: The component the webhook's Events carry.
COMPONENT = "pull-secret-webhook"


@pytest.fixture(scope="module")
def stack(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    with running_stack(
        controlplane,
        tmp_path_factory.mktemp("stack"),
        failure_policy="Ignore",  # the install's default: pods are admitted while it is down
        heal_grace=HEAL_GRACE,
    ) as s:
        yield s


def deployment(name: str, image: str) -> dict[str, Any]:
    template = running_pod(name, {"app": image})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


def guarded(name: str) -> dict[str, Any]:
    """A PodDisruptionBudget that allows no eviction of the app's pods."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": name}}},
    }


def pods_of(cp: ControlPlane, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cp, "pods", "-n", namespace, "-l", f"app={app}")["items"]
    return items


def stuck_pod(cp: ControlPlane, namespace: str, app: str, timeout: float = 60) -> dict[str, Any]:
    """The app's one pod, once the kubelet reports its pull failing."""

    def failing() -> dict[str, Any] | None:
        pods = [p for p in pods_of(cp, namespace, app) if pod_state(p).pull_failing]
        return pods[0] if len(pods) == 1 else None

    found: dict[str, Any] = wait_for(f"{namespace}/{app} failing to pull", failing, timeout)
    return found


def replacement(cp: ControlPlane, namespace: str, app: str, old_uid: str) -> Callable[[], Any]:
    """A check: the app's pod that is not ``old_uid``, once Running, else None."""

    def running() -> dict[str, Any] | None:
        for pod in pods_of(cp, namespace, app):
            if pod["metadata"]["uid"] != old_uid and pod_state(pod).phase == "Running":
                return pod
        return None

    return running


def webhook_events(cp: ControlPlane, namespace: str, pod: str) -> list[dict[str, Any]]:
    items = get_json(
        cp, "events", "-n", namespace, "--field-selector", f"involvedObject.name={pod}"
    )["items"]
    return [e for e in items if (e.get("source") or {}).get("component") == COMPONENT]


def metric(stack: Stack, sample: str) -> float:
    """A sample summed over the replicas (only the leader heals; the others report 0)."""
    total = 0.0
    for replica in stack.replicas:
        for line in replica.metrics().splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                total += float(value)
    return total


def heal_actions(stack: Stack, action: str) -> float:
    return metric(stack, f'pull_secret_webhook_heal_actions_total{{action="{action}"}}')


def awaiting_heal(stack: Stack) -> float:
    return metric(stack, "pull_secret_webhook_pods_awaiting_heal")


def healing_calls(stack: Stack) -> float:
    """The evictions and Events the replicas have asked the API server for."""
    return sum(
        metric(stack, f'pull_secret_webhook_api_requests_total{{call="{call}"}}')
        for call in ("create_namespaced_pod_eviction", "create_namespaced_event")
    )


def test_an_outage_heals_itself_except_what_a_budget_guards_a_bare_pod_and_foreign_images(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("outage"))
    absent = node.pause_image.rsplit("/", 1)[0] + "/demo/absent:v1"  # no entry serves it
    apply(cp, ns, guarded("guarded"))
    replicas = stack.stop_replicas()
    try:
        apply(cp, ns, deployment("web", stack.acr_image))
        apply(cp, ns, deployment("guarded", stack.ecr_image))
        apply(cp, ns, running_pod("lonely", {"app": stack.acr_image}))
        apply(cp, ns, deployment("foreign", absent))
        stuck = {app: stuck_pod(cp, ns, app) for app in ("web", "guarded", "lonely", "foreign")}
        for pod in stuck.values():
            assert pull_secret_names(pod) == [], "admitted by the webhook while it was down?"
    finally:
        back = time.monotonic()
        for _ in range(replicas):
            stack.add_replica()
    ready = time.monotonic()

    # The Deployment's pod is evicted and its replacement runs with its secret.
    web = stuck["web"]
    fresh: dict[str, Any] = wait_for(
        "web's replacement to run",
        replacement(cp, ns, "web", web["metadata"]["uid"]),
        timeout=HEAL_GRACE + HEAL_MARGIN + 30,
    )
    took = time.monotonic() - back
    print(
        f"webhook back (replicas starting) -> replacement Running: {took:.1f}s "
        f"({time.monotonic() - ready:.1f}s after the replicas were ready; grace {HEAL_GRACE:g}s)"
    )
    assert took < HEAL_GRACE + HEAL_MARGIN, took
    [secret] = pull_secret_names(fresh)
    assert secret.startswith("psw-")
    assert wait_for_log(node, ns, fresh["metadata"]["name"], "app") == [
        "app: pulled 37 bytes of hello.txt"
    ]
    [evicted] = webhook_events(cp, ns, web["metadata"]["name"])
    assert evicted["reason"] == EVENT_EVICTED, evicted
    assert secret in evicted["message"] and "ReplicaSet" in evicted["message"]
    assert heal_actions(stack, "evicted") >= 1

    # Give the others two more passes past the grace than web needed.
    time.sleep(2 * RENEW_SECONDS)

    # A budget does not hold back a pod that never started: the API server evicts a
    # Pending pod whatever its budgets say (it disrupts nothing).
    guarded_fresh = wait_for(
        "guarded's replacement to run",
        replacement(cp, ns, "guarded", stuck["guarded"]["metadata"]["uid"]),
        timeout=30,
    )
    assert pull_secret_names(guarded_fresh)
    # A bare pod is never deleted: an Event, a metric.
    [missing] = webhook_events(cp, ns, "lonely")
    assert missing["reason"] == EVENT_MISSING and "no controller" in missing["message"]
    assert heal_actions(stack, "reported") >= 1
    assert awaiting_heal(stack) >= 1  # it waits for somebody to re-create it
    # Each of the two is the very pod it was; the foreign one has heard nothing from us.
    for app in ("lonely", "foreign"):
        [now] = pods_of(cp, ns, app)
        assert now["metadata"]["uid"] == stuck[app]["metadata"]["uid"], app
        assert pod_state(now).pull_failing, app
    assert webhook_events(cp, ns, stuck["foreign"]["metadata"]["name"]) == []
    # What is left stuck costs no request: the bare pod was reported once, the foreign
    # one is not the webhook's; the passes scan the watch's copy.
    before = healing_calls(stack)
    time.sleep(2 * RENEW_SECONDS)
    assert healing_calls(stack) == before


def test_pods_failing_before_their_namespace_opted_in_are_replaced_once_it_does(
    stack: Stack, node: Node
) -> None:
    """Install day: the webhook runs, but the namespace has not opted in yet."""
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("late"), inject=False)
    apply(cp, ns, deployment("web", stack.ecr_image))
    old = stuck_pod(cp, ns, "web")
    assert pull_secret_names(old) == []
    time.sleep(HEAL_GRACE + RENEW_SECONDS)  # failing longer than the grace, untouched
    [still] = pods_of(cp, ns, "web")
    assert still["metadata"]["uid"] == old["metadata"]["uid"]
    assert webhook_events(cp, ns, old["metadata"]["name"]) == []

    cp.kubectl("label", "namespace", ns, "pull-secret-webhook/inject=enabled")
    opted = time.monotonic()
    fresh: dict[str, Any] = wait_for(
        "the replacement to run",
        replacement(cp, ns, "web", old["metadata"]["uid"]),
        timeout=HEAL_GRACE + HEAL_MARGIN + 30,
    )
    took = time.monotonic() - opted
    print(f"namespace opted in -> replacement Running: {took:.1f}s")
    assert took < HEAL_GRACE + HEAL_MARGIN, took
    assert pull_secret_names(fresh)
    assert wait_for_log(node, ns, fresh["metadata"]["name"], "app") == [
        "app: pulled 37 bytes of hello.txt"
    ]


def restarting_deployment(name: str, image: str, pull_secret: str) -> dict[str, Any]:
    """A Deployment whose container exits after a few seconds and pulls its image again
    on every restart (``imagePullPolicy: Always``), with a pull secret of its own."""
    manifest = deployment(name, image)
    spec = manifest["spec"]["template"]["spec"]
    [container] = spec["containers"]
    container["command"] = ["/bin/busybox", "sh", "-c", "echo started; sleep 3; exit 1"]
    container["imagePullPolicy"] = "Always"
    spec["imagePullSecrets"] = [{"name": pull_secret}]
    return manifest


def test_a_budget_holds_back_the_eviction_of_a_pod_that_ran_and_the_webhook_says_so(
    stack: Stack, node: Node
) -> None:
    """PodDisruptionBudgets guard pods that have run (phase Running): here one that ran
    with a pull secret of its own, which was deleted, so that its restart cannot pull."""
    cp = stack.controlplane
    # The team's own credential for the registry: a copy of what the webhook gives.
    source = stack.labelled_namespace(ns_name("creds"))
    apply(cp, source, running_pod("p", {"app": stack.ecr_image}))
    [made] = pull_secret_names(get_json(cp, "pod", "p", "-n", source))
    data = get_json(cp, "secret", made, "-n", source)["data"]
    ns = stack.labelled_namespace(ns_name("budget"), inject=False)
    apply(cp, ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-creds"},
                   "type": "kubernetes.io/dockerconfigjson", "data": data})  # fmt: skip
    apply(cp, ns, guarded("app"))
    apply(cp, ns, restarting_deployment("app", stack.ecr_image, "team-creds"))

    def running_once() -> dict[str, Any] | None:
        pods = pods_of(cp, ns, "app")
        return pods[0] if pods and pod_state(pods[0]).phase == "Running" else None

    first: dict[str, Any] = wait_for("the pod to run with its own secret", running_once, 60)
    cp.kubectl("delete", "secret", "team-creds", "-n", ns)

    def failing_while_running() -> dict[str, Any] | None:
        [pod] = pods_of(cp, ns, "app")
        state = pod_state(pod)
        return pod if state.phase == "Running" and state.pull_failing else None

    # Its restart pulls again, without a credential now: 401, and the pod stays Running.
    wait_for("the restart's pull to fail", failing_while_running, 90)
    blocked_before = heal_actions(stack, "blocked")
    cp.kubectl("label", "namespace", ns, "pull-secret-webhook/inject=enabled")

    def blocked_event() -> dict[str, Any] | None:
        events = webhook_events(cp, ns, first["metadata"]["name"])
        return events[0] if events else None

    event: dict[str, Any] = wait_for(
        "the webhook to say the eviction is blocked", blocked_event, HEAL_GRACE + HEAL_MARGIN
    )
    assert event["reason"] == EVENT_BLOCKED, event
    assert "PodDisruptionBudget" in event["message"] and "team-creds" not in event["message"]
    assert heal_actions(stack, "blocked") > blocked_before
    assert awaiting_heal(stack) >= 1
    [still] = pods_of(cp, ns, "app")
    assert still["metadata"]["uid"] == first["metadata"]["uid"]

    # Once the budget allows it, the pod is healed: its replacement has the webhook's secret.
    cp.kubectl("delete", "pdb", "app", "-n", ns)
    fresh: dict[str, Any] = wait_for(
        "the replacement to run",
        replacement(cp, ns, "app", first["metadata"]["uid"]),
        timeout=120,  # the refused eviction's back-off (10 s, then 20 s...) comes first
    )
    assert any(n.startswith("psw-") for n in pull_secret_names(fresh))
