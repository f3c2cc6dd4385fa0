"""AdmissionReview ``admission.k8s.io/v1`` wire format: TypedDicts, decoding, responses.

Two error channels: a review that cannot be understood raises ``BadReview`` (the
server answers HTTP 400 with an AdmissionReview carrying the message); a policy
or credential outcome is an allowed/denied ``AdmissionResponse``.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, NotRequired, TypedDict

from webhook import jsonio

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: The API server sends v1 (and v1beta1 when a webhook still lists it); the
#: response must carry the request's own apiVersion.
SUPPORTED_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
#: Kubernetes truncates each admission warning to 120 characters and refuses newlines
#: (staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/mutating/dispatcher.go).
WARNING_MAX = 120


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    subResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: Literal["AdmissionReview"]
    request: NotRequired[AdmissionRequest]
    response: NotRequired[AdmissionResponse]


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer; becomes an HTTP 400."""

    def __init__(self, message: str, uid: str = "", api_version: str = API_VERSION) -> None:
        super().__init__(message)
        self.uid = uid
        self.api_version = api_version


def decode_review(body: bytes) -> tuple[str, AdmissionRequest]:
    """Decode and check a request body; return (apiVersion, request) or raise BadReview."""
    if not body.strip():
        raise BadReview("empty request body; expected an AdmissionReview")
    try:
        doc = jsonio.loads(body)
    except (UnicodeDecodeError, jsonio.JSONDecodeError) as e:
        raise BadReview(f"request body is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise BadReview("request body must be a JSON object (an AdmissionReview)")
    api_version = doc.get("apiVersion")
    echo = api_version if api_version in SUPPORTED_API_VERSIONS else API_VERSION
    request = doc.get("request")
    uid = request.get("uid", "") if isinstance(request, dict) else ""
    uid = uid if isinstance(uid, str) else ""
    if doc.get("kind") != KIND:
        raise BadReview(f"kind is {doc.get('kind')!r}, expected {KIND!r}", uid, echo)
    if api_version not in SUPPORTED_API_VERSIONS:
        raise BadReview(
            f"apiVersion {api_version!r} is not supported; expected {API_VERSION}", uid, echo
        )
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request", uid, echo)
    if not uid:
        raise BadReview("request.uid is missing or empty", "", echo)
    problems = []
    for key, typ in (("kind", dict), ("resource", dict), ("operation", str)):
        if not isinstance(request.get(key), typ):
            problems.append(f"request.{key} is missing or not a {typ.__name__}")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        problems.append("request.object is not an object")
    if problems:
        raise BadReview("; ".join(problems), uid, echo)
    return echo, request  # type: ignore[return-value]


def review(api_version: str, response: AdmissionResponse) -> AdmissionReview:
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def allow(uid: str, warnings: list[str] | None = None) -> AdmissionResponse:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = [clip_warning(w) for w in warnings]
    return response


def allow_with_patch(
    uid: str, patch: list[dict[str, Any]], warnings: list[str] | None = None
) -> AdmissionResponse:
    response = allow(uid, warnings)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(jsonio.dumps(patch)).decode()
    return response


def deny(uid: str, message: str, code: int = 403, reason: str = "Forbidden") -> AdmissionResponse:
    return {
        "uid": uid,
        "allowed": False,
        "status": {"code": code, "message": message, "reason": reason},
    }


def bad_request(error: BadReview) -> AdmissionReview:
    """The 400 body: still an AdmissionReview, denying with the reason."""
    return review(error.api_version, deny(error.uid, str(error), code=400, reason="BadRequest"))


def clip_warning(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= WARNING_MAX else text[: WARNING_MAX - 1] + "…"
