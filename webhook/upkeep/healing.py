"""Self-healing: pods admitted without their pull secret, and stuck pulling, are replaced.

With ``failurePolicy: Ignore`` a pod created while the webhook is down (or before its
namespace opted in) starts without the secret the webhook would have added, and the
kubelet retries its pull forever. The leader finds such pods in the pods watch it keeps
anyway (``kube.pods.ListedPods`` keeps those that fail to pull; no extra request), and for each
pod that

- is in an opted-in namespace, and the admission decision (``admission.plan``, the same
  pure function admissions run) says it needs a pull secret for an image,
- lacks that secret in ``spec.imagePullSecrets``, and
- has failed to pull that very image (``ErrImagePull``/``ImagePullBackOff``) for longer
  than ``healing.graceSeconds``,

it asks for an eviction (``policy/v1``, PodDisruptionBudgets apply) when a controller
re-creates the pod (ReplicaSet, StatefulSet, DaemonSet, Job): the replacement goes
through the webhook and gets its secret. A bare pod is never deleted; it, and every pod
when ``healing.evict`` is false, gets an Event saying what is wrong and a metric.

Evictions are rate-limited per namespace and cluster-wide, refused ones are retried with
a back-off, and a controller whose replacement pod comes back without its secret too
(the API server is not calling the webhook) is not evicted again for a while.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from webhook.admission.decision import Plan, plan
from webhook.admission.reviews import AdmissionRequest
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.kube.errors import ApiError, ConflictError, NotFoundError, TooManyRequestsError
from webhook.kube.pods import ListedPods
from webhook.kube.podstatus import failing_images, pull_failure_view
from webhook.kube.rfc3339 import from_rfc3339
from webhook.pullsecrets.notices import post_event
from webhook.pullsecrets.protocols import EventApi
from webhook.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: The owners that re-create an evicted pod (the workload controllers of apps/v1 and
#: batch/v1; a Deployment's pods are owned by its ReplicaSet, a CronJob's by its Job).
CONTROLLER_KINDS = frozenset({"ReplicaSet", "StatefulSet", "DaemonSet", "Job"})
#: At most this many evictions per namespace, and cluster-wide, in any RATE_WINDOW: the
#: pods evicted serve nothing (they cannot start), so the limits are there for the API
#: server, the scheduler and a loop gone wrong, not for the workloads. 10 a minute
#: replaces a namespace's 30 stuck replicas in 3 minutes; 60 a minute cluster-wide, an
#: outage's 1,000 stuck pods in under 20.
NAMESPACE_EVICTIONS = 10
CLUSTER_EVICTIONS = 60
RATE_WINDOW = 60.0
#: After a PodDisruptionBudget refused an eviction (429), the pod is tried again after
#: this long, doubling up to BLOCKED_RETRY_MAX (the budget changes when other pods of the
#: workload become ready, or somebody edits it).
BLOCKED_RETRY = 10.0
BLOCKED_RETRY_MAX = 300.0
#: A controller whose pod was evicted, and whose replacement also fails without its
#: secret (so the webhook did not see it being created), is not evicted again for this
#: long: one eviction per controller per 10 minutes while admissions do not reach the
#: webhook, instead of one per grace period.
OWNER_COOLDOWN = 600.0

#: The Events it records on pods (the shipped ValidatingAdmissionPolicy allows these).
EVENT_EVICTED = "EvictedForPullSecret"
EVENT_BLOCKED = "EvictionBlocked"
EVENT_MISSING = "PullSecretMissing"

Action = Literal["evict", "report"]


@dataclass(frozen=True)
class Owner:
    kind: str
    name: str
    uid: str


@dataclass(frozen=True)
class StuckPod:
    """A pod the kubelet fails to pull an image for, as the pods watch last showed it."""

    namespace: str
    name: str
    uid: str
    created: float
    """creationTimestamp (Unix time; 0 if unknown)."""
    terminating: bool
    owner: Owner | None
    """Its controller (the owner reference with ``controller: true``), if any."""
    pod: Mapping[str, Any]
    """The pod reduced to what the admission decision reads (``pull_failure_view``)."""
    failing: Mapping[str, float]
    """Image (as the spec names it) → since when it has been seen failing."""
    reasons: Mapping[str, str]
    """Image → the waiting reason (ErrImagePull or ImagePullBackOff)."""


class StuckPods:
    """The informer's handler: pods failing to pull, and since when, by UID.

    "Since" is when this replica first saw the failure (the status carries no time for
    it): after a restart or a change of leader the grace starts again."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._pods: dict[str, StuckPod] = {}

    def pods(self) -> Iterable[StuckPod]:
        return self._pods.values()

    def __len__(self) -> int:
        return len(self._pods)

    def replace_all(self, listed: ListedPods) -> None:
        old, self._pods = self._pods, {}
        for obj in listed.failing:
            self._add(obj, old)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        uid = _meta(obj).get("uid")
        if not isinstance(uid, str):
            return
        if event == "DELETED":
            self._pods.pop(uid, None)
            return
        self._add(obj, self._pods)

    def _add(self, obj: Mapping[str, Any], previous: Mapping[str, StuckPod]) -> None:
        meta = _meta(obj)
        uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
        if not (isinstance(uid, str) and isinstance(namespace, str) and isinstance(name, str)):
            return
        reasons = failing_images(obj)
        if not reasons:
            self._pods.pop(uid, None)
            return
        now = self.clock()
        before = previous.get(uid)
        seen = before.failing if before is not None else {}
        self._pods[uid] = StuckPod(
            namespace=namespace,
            name=name,
            uid=uid,
            created=from_rfc3339(str(meta.get("creationTimestamp") or "")) or 0.0,
            terminating=bool(meta.get("deletionTimestamp")),
            owner=_controller(meta),
            pod=pull_failure_view(obj) or obj,  # what a watch event carries is far more
            failing={image: seen.get(image, now) for image in reasons},
            reasons=reasons,
        )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _controller(meta: Mapping[str, Any]) -> Owner | None:
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return Owner(
                str(ref.get("kind") or ""), str(ref.get("name") or ""), str(ref.get("uid") or "")
            )
    return None


@dataclass(frozen=True)
class Candidate:
    """A stuck pod past the grace, and what to do about it."""

    pod: StuckPod
    secret: str
    """The pull secret the admission decision gives it and it lacks."""
    image: str
    reason: str
    failing_for: float
    action: Action
    why: str = ""
    """For a report: why it is not evicted."""

    def describe(self) -> str:
        return (
            f"pod lacks pull secret {self.secret} for image {self.image} "
            f"({self.reason} for {self.failing_for:.0f}s)"
        )


def _review(pod: StuckPod) -> AdmissionRequest:
    """The pod as an admission of its creation: what the webhook would have decided."""
    obj = dict(pod.pod)
    return {
        "uid": pod.uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE",
        "namespace": pod.namespace,
        "object": obj,
    }


def _listed(pod: Mapping[str, Any]) -> set[str]:
    spec = pod.get("spec")
    refs = spec.get("imagePullSecrets") if isinstance(spec, Mapping) else None
    return {
        str(r.get("name"))
        for r in (refs if isinstance(refs, list) else [])
        if isinstance(r, Mapping)
    }


def select(
    config: Config, pods: Iterable[StuckPod], opted_in: Callable[[str], bool], now: float
) -> list[Candidate]:
    """The stuck pods to heal now, and how (pure: decided from the watch and the config)."""
    grace = config.healing.grace_seconds
    found: list[Candidate] = []
    for pod in pods:
        if pod.terminating or pod.namespace in config.never_injected or not opted_in(pod.namespace):
            continue
        decision = plan(_review(pod), config)
        if not isinstance(decision, Plan):
            continue  # opted out, or no image the webhook serves
        listed = _listed(pod.pod)
        hit = next(
            (
                (need.secret_name, image, now - pod.failing[image])
                for need in decision.needs
                if need.secret_name not in listed
                for image in need.images
                if image in pod.failing and now - pod.failing[image] >= grace
            ),
            None,
        )
        if hit is None:
            continue
        secret, image, failing_for = hit
        action: Action = "evict"
        why = ""
        if pod.owner is None:
            action, why = (
                "report",
                "no controller re-creates it: delete it to re-create it with its secret",
            )
        elif pod.owner.kind not in CONTROLLER_KINDS:
            action, why = (
                "report",
                f"its owner {pod.owner.kind} {pod.owner.name} is not a controller that "
                "re-creates evicted pods",
            )
        elif not config.healing.evict:
            action, why = "report", "eviction is switched off (healing.evict: false)"
        found.append(Candidate(pod, secret, image, pod.reasons[image], failing_for, action, why))
    return found


class RateLimit:
    """At most ``limit`` events in any ``window`` seconds."""

    def __init__(self, limit: int, window: float = RATE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def available(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()
        return len(self._times) < self.limit

    def take(self, now: float) -> None:
        self._times.append(now)

    def unused(self, now: float) -> bool:
        """Nothing taken within the window (the limiter can be dropped)."""
        self.available(now)
        return not self._times


class HealingApi(EventApi, Protocol):
    """The calls healing makes (``webhook.kube.calls.Kube`` has them)."""

    async def evict_pod(self, namespace: str, name: str, uid: str) -> None: ...


Outcome = Literal["evicted", "blocked", "reported", "waiting", "gone", "failed"]


@dataclass
class HealReport:
    """What one pass did, by pod (``namespace/name``)."""

    evicted: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    """Past the grace but held back: rate limit, back-off after a refusal, or a controller
    whose replacement came back without its secret too."""
    failed: list[str] = field(default_factory=list)

    @property
    def awaiting(self) -> int:
        return len(self.blocked) + len(self.reported) + len(self.waiting) + len(self.failed)


class Healer:
    """Runs ``select`` on the leader's pods watch and acts on what it returns."""

    def __init__(
        self,
        store: ConfigStore,
        opted_in: Callable[[str], bool],
        kube: HealingApi,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.opted_in = opted_in
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self.pods = StuckPods(clock)
        self.cluster_limit = RateLimit(CLUSTER_EVICTIONS)
        self._namespace_limits: dict[str, RateLimit] = {}
        self._reported: set[str] = set()
        self._held: set[str] = set()
        self._blocked: dict[str, tuple[float, float]] = {}  # uid → (retry at, delay)
        self._evicted_for: dict[tuple[str, str], float] = {}  # (namespace, owner uid) → when
        self._evicted: set[str] = set()  # until the watch shows them going

    def idle(self) -> None:
        """No longer the leader: what this replica knew goes with the pods watch."""
        self.metrics.pods_awaiting_heal.set(0)
        self._reported.clear()
        self._held.clear()
        self._blocked.clear()
        self._evicted_for.clear()
        self._evicted.clear()
        self.pods = StuckPods(self.clock)

    async def run_once(self) -> HealReport:
        report = HealReport()
        now = self.clock()
        candidates = select(self.store.current, self.pods.pods(), self.opted_in, now)
        self._forget_gone({c.pod.uid for c in candidates}, now)
        for candidate in candidates:
            outcome = await self._heal(candidate, now)
            where = f"{candidate.pod.namespace}/{candidate.pod.name}"
            if outcome != "gone":
                getattr(report, outcome).append(where)
        self.metrics.pods_awaiting_heal.set(report.awaiting)
        return report

    def _forget_gone(self, current: set[str], now: float) -> None:
        """Only what concerns pods still stuck past the grace is kept."""
        self._reported &= current
        self._held &= current
        self._evicted &= current
        for uid in [u for u in self._blocked if u not in current]:
            del self._blocked[uid]
        for key in [k for k, t in self._evicted_for.items() if now - t >= OWNER_COOLDOWN]:
            del self._evicted_for[key]
        for namespace in [n for n, lim in self._namespace_limits.items() if lim.unused(now)]:
            del self._namespace_limits[namespace]

    async def _heal(self, c: Candidate, now: float) -> Outcome:
        pod = c.pod
        if c.action == "report":
            if pod.uid not in self._reported:
                self._reported.add(pod.uid)
                self.metrics.heal_actions.labels("reported").inc()
                log.warning("%s/%s: %s; %s", pod.namespace, pod.name, c.describe(), c.why)
                await self._event(pod, EVENT_MISSING, f"{c.describe()}; {c.why}")
            return "reported"
        if pod.uid in self._evicted:
            return "gone"  # evicted; its deletion is on its way to the watch
        retry_at, delay = self._blocked.get(pod.uid, (0.0, 0.0))
        if now < retry_at:
            return "waiting"  # refused a moment ago: tried again after its back-off
        assert pod.owner is not None  # an "evict" candidate has its controller
        owner_key = (pod.namespace, pod.owner.uid)
        last = self._evicted_for.get(owner_key)
        # creationTimestamp has whole seconds: a pod made in the second of the eviction
        # counts as its replacement (held back rather than evicted once too often).
        if last is not None and pod.created >= math.floor(last) and now - last < OWNER_COOLDOWN:
            if pod.uid not in self._held:
                self._held.add(pod.uid)
                why = (
                    f"{c.describe()}; it was created after another pod of {pod.owner.kind} "
                    f"{pod.owner.name} was evicted for the same reason, so its admission did "
                    f"not reach the webhook either (is the webhook registered and reachable?): "
                    f"not evicted again before {OWNER_COOLDOWN:.0f}s have passed"
                )
                log.warning("%s/%s: %s", pod.namespace, pod.name, why)
                await self._event(pod, EVENT_MISSING, why)
            return "waiting"
        namespace_limit = self._namespace_limits.setdefault(
            pod.namespace, RateLimit(NAMESPACE_EVICTIONS)
        )
        if not (namespace_limit.available(now) and self.cluster_limit.available(now)):
            return "waiting"
        namespace_limit.take(now)
        self.cluster_limit.take(now)
        try:
            await self.kube.evict_pod(pod.namespace, pod.name, pod.uid)
        except (NotFoundError, ConflictError):
            return "gone"  # deleted, or the name holds another pod now
        except ApiError as e:
            delay = min(max(delay * 2, BLOCKED_RETRY), BLOCKED_RETRY_MAX)
            self._blocked[pod.uid] = (now + delay, delay)
            if not isinstance(e, TooManyRequestsError):
                log.warning("%s/%s: eviction failed: %s", pod.namespace, pod.name, e)
                return "failed"
            self.metrics.heal_actions.labels("blocked").inc()
            log.warning(
                "%s/%s: %s; eviction refused (%s), retrying in %.0fs",
                pod.namespace, pod.name, c.describe(), e.message, delay,
            )  # fmt: skip
            if delay == BLOCKED_RETRY:  # the first refusal; later ones only count
                await self._event(
                    pod,
                    EVENT_BLOCKED,
                    f"{c.describe()}; eviction refused by a PodDisruptionBudget "
                    f"({e.message}); retrying with back-off",
                )
            return "blocked"
        self._blocked.pop(pod.uid, None)
        self._evicted.add(pod.uid)
        self._evicted_for[owner_key] = now
        self.metrics.heal_actions.labels("evicted").inc()
        log.info(
            "%s/%s evicted: %s; its %s %s re-creates it through the webhook",
            pod.namespace, pod.name, c.describe(), pod.owner.kind, pod.owner.name,
        )  # fmt: skip
        await self._event(
            pod,
            EVENT_EVICTED,
            f"evicted: {c.describe()}; its {pod.owner.kind} {pod.owner.name} re-creates it "
            f"through the webhook, with the secret",
            event_type="Normal",
        )
        return "evicted"

    async def _event(
        self, pod: StuckPod, reason: str, message: str, *, event_type: str = "Warning"
    ) -> None:
        involved = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        }
        await post_event(self.kube, pod.namespace, involved, reason, message, event_type=event_type)
