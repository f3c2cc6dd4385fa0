"""What a pod's status says about its image pulls, as pure functions.

The kubelet reports a container whose image it cannot pull as *waiting*, with reason
``ErrImagePull`` (the last pull failed) or ``ImagePullBackOff`` (waiting for the next
try); the two alternate for as long as the pull keeps failing. The status names the
container, so the image it failed on is the one the pod's spec gives that container:
the very string the admission decision matched (the status's own ``image`` field may be
normalised, ``docker.io/library/...``).

Self-healing (``webhook.upkeep.healing``) keeps only pods that fail to pull, reduced by
``pull_failure_view`` to the few fields it reads, so that following every pod of a
cluster costs memory only for the ones that are stuck.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The waiting reasons of a container whose image cannot be pulled (kubelet
#: pkg/kubelet/images: ErrImagePull, ImagePullBackOff).
PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff"})
#: Each list of container statuses and the spec list it reports on.
_STATUS_FIELDS = (
    ("initContainerStatuses", "initContainers"),
    ("containerStatuses", "containers"),
    ("ephemeralContainerStatuses", "ephemeralContainers"),
)
#: The one pod label the admission decision reads (a pod's opt-out).
_OPT_OUT_LABEL = "pull-secret-webhook/inject"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def failing_images(pod: Mapping[str, Any]) -> dict[str, str]:
    """The images (as the spec names them) the kubelet fails to pull, with the waiting
    reason of each; empty when no container waits for a failed pull."""
    spec, status = _mapping(pod.get("spec")), _mapping(pod.get("status"))
    failing: dict[str, str] = {}
    for status_field, spec_field in _STATUS_FIELDS:
        statuses = _list(status.get(status_field))
        if not statuses:
            continue
        images = {
            c.get("name"): c.get("image")
            for c in _list(spec.get(spec_field))
            if isinstance(c, Mapping)
        }
        for s in statuses:
            waiting = _mapping(_mapping(_mapping(s).get("state")).get("waiting"))
            reason = waiting.get("reason")
            image = images.get(_mapping(s).get("name"))
            if reason in PULL_FAILURES and isinstance(image, str) and image:
                failing[image] = str(reason)
    return failing


def pull_failure_view(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """A pod that fails to pull, reduced to what self-healing reads; None for the others.

    Kept: its identity and age, whether it is going away, its controller (the owner
    reference with ``controller: true``), its opt-out label, service account, container
    names and images, pull secrets, and the waiting reasons of its containers."""
    if not failing_images(pod):
        return None
    meta, spec, status = (_mapping(pod.get(k)) for k in ("metadata", "spec", "status"))
    labels = _mapping(meta.get("labels"))
    controllers = [
        {k: ref.get(k) for k in ("apiVersion", "kind", "name", "uid", "controller")}
        for ref in _list(meta.get("ownerReferences"))
        if isinstance(ref, Mapping) and ref.get("controller") is True
    ]
    view_spec: dict[str, Any] = {
        field: [
            {"name": c.get("name"), "image": c.get("image")}
            for c in _list(spec.get(field))
            if isinstance(c, Mapping)
        ]
        for _, field in _STATUS_FIELDS
        if spec.get(field)
    }
    for key in ("serviceAccountName", "serviceAccount", "imagePullSecrets"):
        if key in spec:
            view_spec[key] = spec[key]
    view_status: dict[str, Any] = {"phase": status.get("phase")}
    for status_field, _ in _STATUS_FIELDS:
        if status.get(status_field):
            view_status[status_field] = [
                _reduced_status(s) for s in _list(status.get(status_field))
            ]
    return {
        "metadata": {
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "labels": {_OPT_OUT_LABEL: labels[_OPT_OUT_LABEL]} if _OPT_OUT_LABEL in labels else {},
            "ownerReferences": controllers,
        },
        "spec": view_spec,
        "status": view_status,
    }


def _reduced_status(status: Any) -> dict[str, Any]:
    """A container status's name and waiting reason (its message, a registry's error
    text, is left out: it can be long and self-healing does not read it)."""
    state = _mapping(_mapping(status).get("state"))
    reduced: dict[str, Any] = {"name": _mapping(status).get("name"), "state": {}}
    if "waiting" in state:
        reduced["state"] = {"waiting": {"reason": _mapping(state["waiting"]).get("reason")}}
    return reduced
