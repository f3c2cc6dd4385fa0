"""Self-healing's choices, on pods as the pods watch shows them: which stuck pods are
evicted, which are only reported, and the limits on evictions (webhook/upkeep/healing.py).
tests/e2e/test_node_healing.py replays an outage on a real node."""

from __future__ import annotations

from typing import Any

import pytest

from devenv.support.configs import sample_document
from devenv.support.memkube import MemKube
from webhook.admission.needs import match_image
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.kube.pods import ListedPods, PodRef
from webhook.kube.podstatus import failing_images, pull_failure_view
from webhook.kube.rfc3339 import to_rfc3339
from webhook.telemetry.metrics import Metrics
from webhook.upkeep.healing import (
    BLOCKED_RETRY,
    CLUSTER_EVICTIONS,
    CONTROLLER_KINDS,
    EVENT_BLOCKED,
    EVENT_EVICTED,
    EVENT_MISSING,
    NAMESPACE_EVICTIONS,
    OWNER_COOLDOWN,
    RATE_WINDOW,
    Healer,
    StuckPods,
    select,
)

MANAGED = "contoso.azurecr.io/app:v1"  # the sample config's "contoso" entry
OTHER = "quay.io/someone/else:v1"  # no entry matches
GRACE = 90.0
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_config(**healing: Any) -> Config:
    return parse_config({**sample_document(), "healing": {"graceSeconds": GRACE, **healing}})


def pod(
    name: str,
    *,
    namespace: str = "team-a",
    images: dict[str, str] | None = None,
    waiting: dict[str, str] | None = None,
    owner: str | None = "ReplicaSet",
    owner_uid: str = "rs-1",
    secrets: tuple[str, ...] = (),
    labels: dict[str, str] | None = None,
    created: float = T0 - 300,
    terminating: bool = False,
    init: bool = False,
) -> dict[str, Any]:
    """A pod as the API server sends it: ``waiting`` maps container names to reasons."""
    images = images if images is not None else {"app": MANAGED}
    waiting = waiting if waiting is not None else {"app": "ImagePullBackOff"}
    containers = [{"name": n, "image": i} for n, i in images.items()]
    statuses = [
        {
            "name": n,
            "image": f"docker.io/normalised/{n}",
            "state": {"waiting": {"reason": waiting[n], "message": "401 Unauthorized " * 50}}
            if n in waiting
            else {"running": {"startedAt": "2027-01-01T00:00:00Z"}},
        }
        for n in images
    ]
    meta: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "uid": f"uid-{namespace}-{name}",
        "creationTimestamp": to_rfc3339(created),
        "labels": {"app": "web", **(labels or {})},
        "annotations": {"big": "x" * 1000},
    }
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner, "name": f"{owner.lower()}-web",
             "uid": owner_uid, "controller": True}
        ]  # fmt: skip
    if terminating:
        meta["deletionTimestamp"] = to_rfc3339(T0)
    spec: dict[str, Any] = {"initContainers" if init else "containers": containers}
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    status_field = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": meta, "spec": spec, "status": {"phase": "Pending", status_field: statuses}}


def stuck(*pods: dict[str, Any], clock: Clock | None = None) -> StuckPods:
    index = StuckPods(clock or Clock())
    index.replace_all(ListedPods.of(pods))
    return index


def opted_in(namespace: str) -> bool:
    return namespace.startswith("team-")


def secret_for(config: Config, image: str = MANAGED) -> str:
    need = match_image(config, image).need
    assert need is not None
    return need.secret_name


# -- what the kubelet says -----------------------------------------------------------


def test_failing_images_are_named_as_the_spec_names_them_for_every_kind_of_container() -> None:
    assert failing_images(pod("p")) == {MANAGED: "ImagePullBackOff"}
    assert failing_images(pod("p", init=True, waiting={"app": "ErrImagePull"})) == {
        MANAGED: "ErrImagePull"
    }
    two = pod("p", images={"a": MANAGED, "b": OTHER}, waiting={"b": "ErrImagePull"})
    assert failing_images(two) == {OTHER: "ErrImagePull"}


@pytest.mark.parametrize("reason", ["ContainerCreating", "CrashLoopBackOff", "InvalidImageName"])
def test_other_waiting_reasons_are_not_pull_failures(reason: str) -> None:
    assert failing_images(pod("p", waiting={"app": reason})) == {}
    assert pull_failure_view(pod("p", waiting={"app": reason})) is None


def test_the_kept_view_of_a_failing_pod_is_small_and_decides_the_same() -> None:
    full = pod("p", labels={"pull-secret-webhook/inject": "disabled"})
    view = pull_failure_view(full)
    assert view is not None
    assert failing_images(view) == failing_images(full)
    assert "annotations" not in view["metadata"]
    assert view["metadata"]["labels"] == {"pull-secret-webhook/inject": "disabled"}
    assert len(repr(view)) < 1000 < len(repr(full))  # the registry's error text is left out
    config = make_config()
    clock = Clock()
    clock.now = T0 + GRACE
    assert select(config, stuck(view).pods(), opted_in, clock.now) == []  # opted out, both


def test_a_pod_list_keeps_failing_pods_for_healing_and_the_others_as_refs() -> None:
    listed = ListedPods()
    listed.add(pod("ok", waiting={}, secrets=("psw-x",)))
    listed.add(pod("plain", waiting={}))  # no pull secret, not failing: not kept at all
    listed.add(pod("stuck"))
    assert len(listed) == 2
    assert listed.refs == [PodRef("team-a", "ok", ("psw-x",))]
    [failing] = listed.failing
    assert failing["metadata"]["uid"] == "uid-team-a-stuck"
    assert [r.name for r in listed.all_refs()] == ["ok", "stuck"]


# -- since when ----------------------------------------------------------------------


def test_the_failure_is_timed_from_when_it_was_first_seen_through_updates_and_relists() -> None:
    clock = Clock()
    index = StuckPods(clock)
    index.apply("ADDED", pod("p", waiting={"app": "ErrImagePull"}))
    clock.now += 40
    index.apply("MODIFIED", pod("p", waiting={"app": "ImagePullBackOff"}))
    clock.now += 40
    index.replace_all(ListedPods.of([pod("p")]))  # the watch was re-listed
    [seen] = index.pods()
    assert seen.failing == {MANAGED: T0}
    index.apply("MODIFIED", pod("p", waiting={}))  # it pulled after all
    assert len(index) == 0
    index.apply("ADDED", pod("p"))
    assert [p.failing for p in index.pods()] == [{MANAGED: clock.now}]
    index.apply("DELETED", pod("p"))
    assert len(index) == 0


# -- which pods, and what is done ----------------------------------------------------


def test_a_pod_is_healed_only_once_it_has_failed_for_the_grace_period() -> None:
    config = make_config()
    index = stuck(pod("p"))
    assert select(config, index.pods(), opted_in, T0 + GRACE - 1) == []
    [candidate] = select(config, index.pods(), opted_in, T0 + GRACE)
    assert candidate.action == "evict"
    assert candidate.secret == secret_for(config)
    assert candidate.image == MANAGED
    assert candidate.reason == "ImagePullBackOff"


@pytest.mark.parametrize("kind", sorted(CONTROLLER_KINDS))
def test_pods_of_every_workload_controller_are_evicted(kind: str) -> None:
    [candidate] = select(make_config(), stuck(pod("p", owner=kind)).pods(), opted_in, T0 + GRACE)
    assert candidate.action == "evict"


@pytest.mark.parametrize(
    ("owner", "evict", "why"),
    [
        (None, True, "no controller"),
        ("Node", True, "not a controller that re-creates"),
        ("MyOperatorThing", True, "not a controller that re-creates"),
        ("ReplicaSet", False, "switched off"),
    ],
    ids=["bare-pod", "mirror-pod", "unknown-owner", "eviction-off"],
)
def test_bare_pods_other_owners_and_eviction_switched_off_are_only_reported(
    owner: str | None, evict: bool, why: str
) -> None:
    config = make_config(evict=evict)
    [candidate] = select(config, stuck(pod("p", owner=owner)).pods(), opted_in, T0 + GRACE)
    assert candidate.action == "report"
    assert why in candidate.why


@pytest.mark.parametrize(
    "case",
    [
        {"secrets": ("psw-contoso-azurecr-io-SECRET",)},
        {"images": {"app": OTHER}},
        {"images": {"a": MANAGED, "b": OTHER}, "waiting": {"b": "ImagePullBackOff"}},
        {"namespace": "elsewhere"},
        {"namespace": "kube-system"},
        {"labels": {"pull-secret-webhook/inject": "disabled"}},
        {"terminating": True},
        {"waiting": {"app": "CrashLoopBackOff"}},
    ],
    ids=[
        "has-its-secret",
        "unmanaged-image",
        "fails-only-for-the-unmanaged-image",
        "namespace-not-opted-in",
        "system-namespace",
        "pod-opted-out",
        "already-going",
        "not-a-pull-failure",
    ],
)
def test_pods_the_webhook_would_not_have_given_a_secret_are_never_touched(
    case: dict[str, Any],
) -> None:
    config = make_config()
    if "secrets" in case:
        case = {"secrets": (secret_for(config),)}

    def everywhere(namespace: str) -> bool:
        return namespace != "elsewhere"

    assert select(config, stuck(pod("p", **case)).pods(), everywhere, T0 + 10 * GRACE) == []


def test_the_grace_counts_for_the_image_that_lacks_its_secret() -> None:
    """Failing for an unmanaged image for long, then for the managed one only briefly."""
    clock = Clock()
    index = StuckPods(clock)
    images = {"a": OTHER, "b": MANAGED}
    index.apply("ADDED", pod("p", images=images, waiting={"a": "ErrImagePull"}))
    clock.now += GRACE
    waiting_both = {"a": "ImagePullBackOff", "b": "ErrImagePull"}
    index.apply("MODIFIED", pod("p", images=images, waiting=waiting_both))
    config = make_config()
    assert select(config, index.pods(), opted_in, clock.now + GRACE - 1) == []
    [candidate] = select(config, index.pods(), opted_in, clock.now + GRACE)
    assert candidate.image == MANAGED


# -- the healer: evictions, refusals, reports, limits --------------------------------


def healer(*pods: dict[str, Any], **healing: Any) -> tuple[Healer, MemKube, Metrics, Clock]:
    kube, metrics, clock = MemKube(), Metrics(), Clock()
    h = Healer(ConfigStore(make_config(**healing)), opted_in, kube, metrics, clock=clock)
    h.pods.replace_all(ListedPods.of(pods))
    clock.now += GRACE
    return h, kube, metrics, clock


def actions(metrics: Metrics) -> dict[str, float]:
    return {
        a: metrics.registry.get_sample_value(
            "pull_secret_webhook_heal_actions_total", {"action": a}
        )
        or 0.0
        for a in ("evicted", "blocked", "reported")
    }


def awaiting(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("pull_secret_webhook_pods_awaiting_heal") or 0.0


async def test_a_stuck_pod_of_a_replica_set_is_evicted_once_with_an_event() -> None:
    h, kube, metrics, _ = healer(pod("p"))
    report = await h.run_once()
    assert report.evicted == ["team-a/p"]
    assert kube.evictions == [("team-a", "p", "uid-team-a-p")]
    [event] = kube.events
    assert event["reason"] == EVENT_EVICTED and event["event_type"] == "Normal"
    assert event["involved"]["kind"] == "Pod" and event["involved"]["uid"] == "uid-team-a-p"
    assert "ReplicaSet replicaset-web re-creates it" in event["message"]
    assert actions(metrics) == {"evicted": 1, "blocked": 0, "reported": 0}
    assert awaiting(metrics) == 0


async def test_an_eviction_a_disruption_budget_refuses_is_retried_with_back_off() -> None:
    h, kube, metrics, clock = healer(pod("p"))
    kube.eviction_refusals[("team-a", "p")] = 429
    assert (await h.run_once()).blocked == ["team-a/p"]
    assert awaiting(metrics) == 1
    clock.now += BLOCKED_RETRY - 1
    assert (await h.run_once()).waiting == ["team-a/p"]  # not asked again yet
    clock.now += 1
    await h.run_once()
    clock.now += 2 * BLOCKED_RETRY - 1
    await h.run_once()  # the back-off doubled
    assert kube.calls["evict_pod"] == 2
    assert actions(metrics)["blocked"] == 2
    assert [e["reason"] for e in kube.events] == [EVENT_BLOCKED]  # once, not per refusal
    assert "PodDisruptionBudget" in kube.events[0]["message"]
    del kube.eviction_refusals[("team-a", "p")]
    clock.now += 1
    assert (await h.run_once()).evicted == ["team-a/p"]
    assert awaiting(metrics) == 0


async def test_a_bare_pod_is_never_evicted_and_reported_once() -> None:
    h, kube, metrics, clock = healer(pod("p", owner=None))
    for _ in range(5):
        assert (await h.run_once()).reported == ["team-a/p"]
        clock.now += 30
    assert kube.evictions == [] and kube.calls["evict_pod"] == 0
    [event] = kube.events
    assert event["reason"] == EVENT_MISSING and "no controller" in event["message"]
    assert actions(metrics) == {"evicted": 0, "blocked": 0, "reported": 1}
    assert awaiting(metrics) == 1


async def test_with_eviction_switched_off_pods_of_controllers_are_only_reported() -> None:
    h, kube, metrics, _ = healer(pod("p"), evict=False)
    await h.run_once()
    assert kube.calls["evict_pod"] == 0
    assert "healing.evict: false" in kube.events[0]["message"]
    assert actions(metrics)["reported"] == 1


async def test_evictions_are_limited_per_namespace() -> None:
    many = [pod(f"p{i}") for i in range(NAMESPACE_EVICTIONS + 5)]
    h, kube, metrics, clock = healer(*many, pod("q", namespace="team-b"))
    report = await h.run_once()
    # Another namespace is not held back by this one's limit.
    assert len(report.evicted) == NAMESPACE_EVICTIONS + 1 and "team-b/q" in report.evicted
    assert len(report.waiting) == 5 and awaiting(metrics) == 5
    clock.now += RATE_WINDOW - 1
    assert (await h.run_once()).evicted == []
    clock.now += 1
    assert len((await h.run_once()).evicted) == 5
    assert len(kube.evictions) == NAMESPACE_EVICTIONS + 6


async def test_evictions_are_limited_cluster_wide() -> None:
    namespaces = CLUSTER_EVICTIONS // NAMESPACE_EVICTIONS + 2
    many = [pod(f"p{i}", namespace=f"team-{n}") for n in range(namespaces) for i in range(10)]
    h, kube, _, clock = healer(*many)
    assert len((await h.run_once()).evicted) == CLUSTER_EVICTIONS == len(kube.evictions)
    clock.now += RATE_WINDOW
    assert len((await h.run_once()).evicted) == len(many) - CLUSTER_EVICTIONS


async def test_a_replacement_that_comes_back_without_its_secret_is_not_evicted_again_soon() -> None:
    """The API server did not call the webhook for the replacement either: evicting it
    every grace period would only churn. Once per OWNER_COOLDOWN it is tried again."""
    h, kube, metrics, clock = healer(pod("old"))
    await h.run_once()
    h.pods.apply("DELETED", pod("old"))
    h.pods.apply("ADDED", pod("new", created=clock.now + 1))
    clock.now += GRACE + 1
    report = await h.run_once()
    assert report.waiting == ["team-a/new"] and awaiting(metrics) == 1
    assert [e["reason"] for e in kube.events] == [EVENT_EVICTED, EVENT_MISSING]
    assert "did not reach the webhook" in kube.events[1]["message"]
    clock.now += OWNER_COOLDOWN
    assert (await h.run_once()).evicted == ["team-a/new"]


async def test_stuck_pods_of_one_controller_made_before_an_eviction_are_all_evicted() -> None:
    h, kube, _, _ = healer(pod("a"), pod("b"), pod("c"))
    assert len((await h.run_once()).evicted) == 3 == len(kube.evictions)


async def test_a_pod_gone_before_its_eviction_is_neither_counted_nor_retried() -> None:
    h, kube, metrics, _ = healer(pod("p"))
    kube.eviction_refusals[("team-a", "p")] = 404
    report = await h.run_once()
    assert report.evicted == report.blocked == report.waiting == []
    assert actions(metrics) == {"evicted": 0, "blocked": 0, "reported": 0}
    assert kube.events == []


async def test_a_pass_with_nothing_stuck_past_the_grace_makes_no_request() -> None:
    h, kube, metrics, clock = healer(pod("healthy", waiting={}), pod("young"))
    clock.now = T0 + GRACE - 1  # "young" has not failed for the grace yet
    await h.run_once()
    h.pods.apply("MODIFIED", pod("elsewhere", namespace="other"))
    clock.now += 10 * GRACE
    h.pods.apply("DELETED", pod("young"))
    await h.run_once()
    assert sum(kube.calls.values()) == 0
    assert awaiting(metrics) == 0


async def test_a_config_reload_that_switches_eviction_off_applies_to_the_next_pass() -> None:
    h, kube, _, _ = healer(pod("p", owner_uid="a"), pod("q", namespace="team-b"))
    h.store.replace(make_config(evict=False))
    await h.run_once()
    assert kube.calls["evict_pod"] == 0
    assert {e["reason"] for e in kube.events} == {EVENT_MISSING}


async def test_a_config_reload_that_lengthens_the_grace_applies_to_the_next_pass() -> None:
    h, kube, metrics, _ = healer(pod("p"))
    h.store.replace(make_config(graceSeconds=GRACE + 1))
    await h.run_once()
    assert kube.calls["evict_pod"] == 0 and awaiting(metrics) == 0
    h.store.replace(make_config(graceSeconds=GRACE))
    assert (await h.run_once()).evicted == ["team-a/p"]
