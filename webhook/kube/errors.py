"""A failed Kubernetes call, as a class chosen once from the HTTP status.

The client turns every answer that is not a 2xx (and every request that got no answer)
into one of these; callers catch the class they can handle (``except ConflictError``)
and let the rest rise. No code outside the client compares a status with a number.

As ``OSError(errno.ENOENT, ...)`` gives a ``FileNotFoundError``, ``ApiError(404, ...)``
gives a ``NotFoundError``: whoever builds an error from a status (the client, a watch's
ERROR event, an in-memory API server in tests) gets the class the status names.
"""

from __future__ import annotations

from typing import Any

#: Remote error bodies are cut before they reach a message or a log line.
BODY_LIMIT = 300
#: Statuses that mean the API server (or the path to it) is not serving: no answer, or a
#: proxy or the server saying it is unavailable or timed out. Other failures (403, 404,
#: 409, a 500 for one request) say nothing about reachability.
UNAVAILABLE = frozenset({0, 502, 503, 504})


class ApiError(Exception):
    """A Kubernetes call that failed: ``status`` is the HTTP status, 0 when the request
    never got an answer (connection refused or reset, timeout, a broken watch stream)."""

    status: int
    reason: str
    message: str

    def __new__(cls, status: int, reason: str = "", message: str = "") -> ApiError:
        chosen = for_status(status) if cls is ApiError else cls
        return super().__new__(chosen)

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = " ".join(message[:BODY_LIMIT].split())
        super().__init__(f"Kubernetes API {status} {reason}: {self.message}".rstrip(": "))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.reason, self.message))

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, throttled, or a server-side failure."""
        return False

    @property
    def unavailable(self) -> bool:
        """Says the API server (or the path to it) is not serving (``UNAVAILABLE``)."""
        return self.status in UNAVAILABLE

    @property
    def code(self) -> str:
        """The status as reported in errors and metrics (the reason when there is none)."""
        return str(self.status)


class UnreachableError(ApiError):
    """No answer came back (status 0): refused, reset, timed out, a broken stream."""

    @property
    def transient(self) -> bool:
        return True

    @property
    def code(self) -> str:
        return self.reason or "unreachable"


class BadRequestError(ApiError):
    """400: the request itself is malformed."""


class UnauthorizedError(ApiError):
    """401: the credential was not accepted (expired or revoked token, unknown cert)."""


class ForbiddenError(ApiError):
    """403: authenticated, and refused by RBAC or an admission policy."""


class NotFoundError(ApiError):
    """404: no such object, or no such resource type (a CRD not installed)."""


class ConflictError(ApiError):
    """409: the object exists already, or a precondition (resourceVersion, UID) failed."""


class GoneError(ApiError):
    """410: a watch's or a list's resourceVersion is too old; list again."""


class InvalidError(ApiError):
    """422: the object is refused as invalid (a field that may not change, or a policy
    validation whose reason is ``Invalid``)."""


class TooManyRequestsError(ApiError):
    """429: throttled (priority and fairness), or an eviction a PodDisruptionBudget
    blocks for now."""

    @property
    def transient(self) -> bool:
        return True


class ServerError(ApiError):
    """5xx: the API server (or a proxy before it) failed this request."""

    @property
    def transient(self) -> bool:
        return True


_BY_STATUS: dict[int, type[ApiError]] = {
    0: UnreachableError,
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
    429: TooManyRequestsError,
}


def for_status(status: int) -> type[ApiError]:
    """The class of a failure with this HTTP status (0: no answer)."""
    chosen = _BY_STATUS.get(status)
    if chosen is not None:
        return chosen
    if 500 <= status < 600:
        return ServerError
    return ApiError


def succeeded(status: int) -> bool:
    """A 2xx answer."""
    return 200 <= status < 300
