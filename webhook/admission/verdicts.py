"""What an admission decided, as a type: the decision returns a ``Verdict``, the server
logs and counts it by its fields and ``encode`` writes it as an AdmissionResponse
(controller-runtime's ``Handler`` returns a ``Response`` that its ``http.go`` only writes).
Nothing reads a built response back to learn what was decided.

Warnings and messages are made safe when a verdict is made (secrets scrubbed, warnings
clipped as the API server would), so what is logged is what the client is shown.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from webhook.admission import jsonio
from webhook.admission.reviews import AdmissionResponse, Status, clip_warning
from webhook.telemetry import redact
from webhook.telemetry.text import printable

Result = Literal["skipped", "refused", "unchanged", "patched", "warned", "denied", "error"]
"""The admission counter's ``result`` label (docs/metrics.md): skipped, not a pod this
webhook handles; refused, its namespace did not opt in; unchanged, nothing to add;
patched, pull secrets added; warned, admitted with warnings; denied; error, a fault of
the webhook's own. (A review that cannot be read is no verdict: ``bad_request``, answered
by the server before any decision.)"""


# Not frozen: a frozen dataclass sets each field through object.__setattr__, about a
# microsecond per verdict on the admission path; nothing changes a verdict once made.
@dataclass(slots=True)
class Allowed:
    """Admitted, patched with ``patch`` (none: as sent), showing ``warnings``."""

    uid: str
    result: Literal["skipped", "refused", "unchanged", "patched", "warned", "error"]
    patch: Sequence[dict[str, Any]] = ()
    """JSONPatch operations on the pod."""
    warnings: tuple[str, ...] = ()
    """Scrubbed and clipped (``allowed``)."""
    why: str = ""
    """Why the pod was left alone (skipped, refused): for the log, never sent."""
    encoded_patch: str = ""
    """``patch`` as the AdmissionResponse carries it (``encode_patch``), when the verdict
    comes with it already made; otherwise ``encode`` makes it."""


@dataclass(slots=True)
class Denied:
    """Refused, with a status the client is shown."""

    uid: str
    message: str
    """Scrubbed (``denied``)."""
    result: Literal["denied", "error"] = "denied"
    code: int = 403
    reason: str = "Forbidden"


Verdict = Allowed | Denied


def left_alone(uid: str, result: Literal["skipped", "refused"], why: str) -> Allowed:
    """Admitted as sent: the request is not ours to change (``why``)."""
    return Allowed(uid, result, why=why)


def encode_patch(patch: Sequence[dict[str, Any]]) -> str:
    """JSONPatch operations as an AdmissionResponse's ``patch``: base64 of their JSON."""
    return base64.b64encode(jsonio.dumps(patch)).decode()


def allowed(uid: str, patch: Sequence[dict[str, Any]], warnings: Iterable[str] = ()) -> Allowed:
    """Admitted with ``patch`` (possibly empty) and ``warnings``."""
    shown = tuple(map(clip_warning, warnings))
    result: Literal["unchanged", "patched", "warned"] = (
        "warned" if shown else "patched" if patch else "unchanged"
    )
    return Allowed(uid, result, patch, shown)


def denied(uid: str, message: str) -> Denied:
    """Refused with ``message`` (it may quote a remote answer): scrubbed, one printable line."""
    return Denied(uid, printable(redact.scrub(message)))


def failed(uid: str, *, fail_closed: bool) -> Verdict:
    """A fault of the webhook's own (a bug, not a credential): the pod is admitted
    unchanged with a warning, or denied when the config says fail closed."""
    if fail_closed:
        return Denied(uid, "pull-secret-webhook: internal error; see the webhook's logs", "error")
    warning = "pull-secret-webhook: internal error, pod admitted unchanged"
    return Allowed(uid, "error", warnings=(warning,))


def encode(verdict: Verdict) -> AdmissionResponse:
    """The verdict as the API server reads it; the patch is present only when not empty."""
    if isinstance(verdict, Denied):
        status: Status = {
            "code": verdict.code,
            "message": verdict.message,
            "reason": verdict.reason,
        }
        return {"uid": verdict.uid, "allowed": False, "status": status}
    response: AdmissionResponse = {"uid": verdict.uid, "allowed": True}
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = verdict.encoded_patch or encode_patch(verdict.patch)
    return response
