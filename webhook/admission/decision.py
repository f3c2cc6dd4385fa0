"""The admission decision, as pure functions: review → plan → (secrets ensured) → verdict.

``plan`` says which pull secrets a pod needs (or why it is left alone);
``respond`` turns the plan and the outcome of ensuring those secrets into a typed
verdict (``verdicts.py``) with a JSONPatch that touches only ``spec.imagePullSecrets``.
Where secrets come from is the ``SecretSource`` protocol: the server passes one in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

from webhook.admission.jsonio import is_object
from webhook.admission.memo import remember
from webhook.admission.needs import PullNeed, pod_needs
from webhook.admission.reviews import AdmissionRequest
from webhook.admission.verdicts import Allowed, Verdict, allowed, denied, encode_patch, left_alone
from webhook.config.schema import Config

OPT_OUT_LABEL = "pull-secret-webhook/inject"
OPT_OUT_VALUE = "disabled"
EPHEMERAL_SUBRESOURCE = "ephemeralcontainers"


@dataclass(frozen=True)
class Skip:
    """The request is allowed untouched; ``reason`` is for logs and metrics."""

    reason: str


# Not frozen (like the verdicts): a frozen dataclass sets each of its seven fields through
# object.__setattr__, about a microsecond per planned pod; nothing changes a plan once made.
@dataclass(slots=True)
class Plan:
    """A pod that needs pull secrets in ``namespace``."""

    uid: str
    namespace: str
    pod_name: str
    pod: Mapping[str, Any]
    needs: tuple[PullNeed, ...]
    dry_run: bool = False
    ephemeral_update: bool = False
    """An ephemeralcontainers update: the API server keeps only the ephemeral containers
    of such an update, so secrets the pod does not already list cannot be added."""


NeedState = Literal["ready", "pending", "foreign"]


@dataclass(frozen=True)
class NeedStatus:
    """What became of one needed secret within the admission budget."""

    state: NeedState
    """ready: exists and fresh; pending: not (yet) made — retried in the background;
    foreign: a Secret of that name exists that the webhook did not create."""
    message: str = ""
    """Why not ready: short, safe to show users (no credentials)."""
    api_unavailable: bool = field(default=False, compare=False)
    """Pending because the API server could not be reached (not for want of a
    credential): retried as soon as it answers again."""


@dataclass(frozen=True)
class Outcome:
    statuses: Mapping[str, NeedStatus] = field(default_factory=dict)
    """By secret name; a missing name counts as ready."""
    refused: str = ""
    """Why nothing was done for this namespace (it has not opted in, does not exist or
    is excluded), whoever sent the review: the pod is admitted unchanged."""

    def status(self, name: str) -> NeedStatus:
        return self.statuses.get(name, READY)


READY = NeedStatus("ready")
#: The outcome of an admission whose secrets are all ready (most of them): one shared
#: value rather than a new one for each.
ALL_READY = Outcome(MappingProxyType({}))


class SecretSource(Protocol):
    """Makes sure the needed secrets exist and are fresh; never raises for a credential."""

    async def ensure(
        self, namespace: str, needs: Sequence[PullNeed], *, budget: float, dry_run: bool
    ) -> Outcome: ...


_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def pod_display_name(pod: Mapping[str, Any], request: AdmissionRequest) -> str:
    meta = pod.get("metadata") or {}
    name = meta.get("name") or request.get("name")
    if name:
        return str(name)
    generate = meta.get("generateName")
    return f"{generate}<generated>" if generate else "<unnamed>"


def plan(request: AdmissionRequest, config: Config) -> Skip | Plan:
    """Decide whether a request concerns us and which pull secrets the pod needs."""
    kind = request["kind"]
    resource = request["resource"]
    if (
        kind.get("kind") != "Pod"
        or kind.get("group", "") != ""
        or resource.get("resource") != "pods"
    ):
        return Skip("not a pod")
    sub = request.get("subResource", "") or ""
    op = request["operation"]
    if not ((op == "CREATE" and not sub) or (op == "UPDATE" and sub == EPHEMERAL_SUBRESOURCE)):
        return Skip(f"operation {op}{'/' + sub if sub else ''} is not handled")
    pod = request.get("object")
    if not is_object(pod):
        return Skip("request has no pod object")
    meta = pod.get("metadata")
    if not is_object(meta):
        meta = _NO_METADATA
    labels = meta.get("labels")
    if is_object(labels) and labels.get(OPT_OUT_LABEL) == OPT_OUT_VALUE:
        return Skip("pod opted out")
    namespace = request.get("namespace") or meta.get("namespace", "")
    if not namespace:
        return Skip("request has no namespace")
    needs = pod_needs(config, pod)
    if not needs:
        return Skip("no image from a configured registry")
    return Plan(
        uid=request["uid"],
        namespace=str(namespace),
        pod_name=pod_display_name(pod, request),
        pod=pod,
        needs=needs,
        dry_run=bool(request.get("dryRun", False)),
        ephemeral_update=sub == EPHEMERAL_SUBRESOURCE,
    )


def _listed_secrets(pod: Mapping[str, Any]) -> set[str]:
    spec = pod.get("spec")
    current = spec.get("imagePullSecrets") if is_object(spec) else None
    if not isinstance(current, list):
        return set()
    return {str(e.get("name")) for e in current if is_object(e)}


PULL_SECRETS_PATH = "/spec/imagePullSecrets"


def image_pull_secrets_patch(pod: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """JSONPatch adding ``names`` to ``spec.imagePullSecrets``: created when missing,
    appended after the user's own entries, never duplicated.

    The one field has three shapes, each with one minimal patch (the same operations
    ``jsonpatch.make_patch`` finds by diffing, which the unit tests check), so it is
    written directly rather than diffed on every admission.
    """
    spec = pod.get("spec")
    if not is_object(spec):
        return []
    present = _listed_secrets(pod)
    missing = [n for n in dict.fromkeys(names) if n not in present]
    if not missing:
        return []
    if "imagePullSecrets" not in spec:
        return [{"op": "add", "path": PULL_SECRETS_PATH, "value": [{"name": n} for n in missing]}]
    current = spec["imagePullSecrets"]
    if not isinstance(current, list):  # null or malformed: the new list replaces it
        return [
            {"op": "replace", "path": PULL_SECRETS_PATH, "value": [{"name": n} for n in missing]}
        ]
    return [
        {"op": "add", "path": f"{PULL_SECRETS_PATH}/{i}", "value": {"name": n}}
        for i, n in enumerate(missing, start=len(current))
    ]


#: The patch, and its encoding, of a pod that lists no pull secret of its own, by the
#: names added: the pods of one workload need the same secrets, so most admissions
#: answered from memory reuse one (``respond``). Bounded; the oldest is forgotten first.
_ADDED_LISTS: dict[tuple[str, ...], tuple[list[dict[str, Any]], str]] = {}
ADDED_LISTS_MAX = 4096


def _added_list(names: tuple[str, ...]) -> tuple[list[dict[str, Any]], str]:
    """``image_pull_secrets_patch`` of a pod whose spec has no ``imagePullSecrets``, for
    distinct ``names``, with its encoding. Shared between verdicts: never changed."""
    found = _ADDED_LISTS.get(names)
    if found is None:
        patch = [{"op": "add", "path": PULL_SECRETS_PATH, "value": [{"name": n} for n in names]}]
        found = remember(_ADDED_LISTS, names, (patch, encode_patch(patch)), ADDED_LISTS_MAX)
    return found


def respond(plan: Plan, outcome: Outcome, *, fail_closed: bool) -> Verdict:
    """The verdict on a planned pod, given what became of each needed secret."""
    if outcome is ALL_READY and not plan.ephemeral_update:
        spec = plan.pod.get("spec")
        if type(spec) is dict and "imagePullSecrets" not in spec:
            # Most admissions: every secret ready, none listed by the pod. The same verdict
            # as below (a unit test compares them).
            patch, encoded = _added_list(tuple(dict.fromkeys([n.secret_name for n in plan.needs])))
            return Allowed(plan.uid, "patched", patch, encoded_patch=encoded)
    if outcome.refused:
        return left_alone(plan.uid, "refused", outcome.refused)
    warnings: list[str] = []
    names: list[str] = []
    failed: list[str] = []
    for need in plan.needs:
        status = outcome.status(need.secret_name)
        if status.state == "foreign":
            why = f" ({status.message})" if status.message else ""
            warnings.append(
                f"pull-secret-webhook: Secret {need.secret_name} exists but is not managed "
                f"by the webhook{why}; not used for {need.host}"
            )
            continue
        names.append(need.secret_name)
        if status.state == "pending":
            failed.append(f"{need.host} ({need.entry.name}): {status.message}")
            warnings.append(
                f"pull-secret-webhook: pull secret for {need.host} not ready "
                f"({status.message}); retrying in background"
            )
    patch = image_pull_secrets_patch(plan.pod, names)
    if plan.ephemeral_update and patch:
        listed = _listed_secrets(plan.pod)
        for need in plan.needs:
            if need.secret_name in names and need.secret_name not in listed:
                warnings.append(
                    "pull-secret-webhook: an ephemeral container update cannot add pull "
                    f"secret {need.secret_name} for {need.host}"
                )
    if failed and fail_closed:
        return denied(
            plan.uid,
            "pull-secret-webhook: cannot provide registry credentials for " + "; ".join(failed),
        )
    return allowed(plan.uid, patch, warnings)
