"""Request recording and fault injection shared by the emulator's listeners.

Tests assert on what a client actually sent (how many exchanges, which scope,
which identity) and drive retry paths by making the next N requests to an
endpoint fail or stall. Secrets never land in a record: form fields that carry
credentials are replaced by a marker, and of JWT-valued fields only the
unverified claims are kept (they say who and what, not how to prove it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devenv.peers.jws import JwtError, decode_unverified

ENTRA_TOKEN = "entra.token"
ENTRA_KEYS = "entra.keys"
IMDS_TOKEN = "imds.token"
ACR_EXCHANGE = "acr.exchange"
ACR_TOKEN = "acr.token"
ACR_V2 = "acr.v2"
GCP_METADATA = "gcp.metadata"
GCP_STS_TOKEN = "gcp.sts"
GCP_IAM_CREDENTIALS = "gcp.iamcredentials"
GCP_OAUTH2_TOKEN = "gcp.oauth2"
GAR_TOKEN = "gar.token"
GAR_V2 = "gar.v2"
UNROUTED = "unrouted"

REDACTED = "<redacted>"
_SECRET_FIELDS = frozenset(
    {
        "client_secret",
        "client_assertion",
        "access_token",
        "refresh_token",
        "password",
        "subject_token",
        "assertion",
    }
)
_JWT_FIELDS = frozenset(
    {"client_assertion", "access_token", "refresh_token", "subject_token", "assertion"}
)
# Headers worth asserting on; none of them carries a credential.
_KEPT_HEADERS = (
    "Metadata",
    "Metadata-Flavor",
    "client-request-id",
    "User-Agent",
    "Content-Type",
)

ErrorBody = Callable[[int], Mapping[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    endpoint: str
    listener: str
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    token_claims: dict[str, dict[str, Any]]
    auth: str | None
    headers: dict[str, str]
    status: int
    time: float


@dataclass
class Fault:
    endpoint: str
    remaining: int
    status: int | None
    retry_after: str | None
    delay: float
    listener: str | None
    body: Mapping[str, Any] | None = field(default=None)


def basic_auth_header(username: str, password: str) -> str:
    """An ``Authorization`` value for HTTP Basic (aiohttp 3.14 deprecates its BasicAuth)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """(username, password) of an HTTP Basic ``Authorization`` value, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def _describe_auth(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme = header.split(" ", 1)[0]
    if scheme.lower() == "basic":
        parsed = parse_basic_auth(header)
        return f"Basic {parsed[0]}" if parsed else "Basic <malformed>"
    return scheme


def _token_claims(form: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    claims: dict[str, dict[str, Any]] = {}
    for name in _JWT_FIELDS & form.keys():
        try:
            claims[name] = decode_unverified(form[name]).claims
        except JwtError:
            continue
    return claims


class Traffic:
    """Records every request of the listeners it is installed on, and injects faults."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: list[RecordedRequest] = []
        self._faults: list[Fault] = []

    def inject_fault(
        self,
        endpoint: str,
        *,
        status: int | None = 503,
        count: int = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
        listener: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Fault:
        """Makes the next ``count`` requests to ``endpoint`` wait ``delay`` seconds and then,
        when ``status`` is set, fail with it (and ``Retry-After`` when given) instead of
        being served. ``listener`` ("127.0.0.1:PORT") limits it to one registry."""
        fault = Fault(
            endpoint=endpoint,
            remaining=count,
            status=status,
            retry_after=None if retry_after is None else f"{retry_after:g}",
            delay=delay,
            listener=listener,
            body=body,
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def requests(
        self, endpoint: str | None = None, listener: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self._records
            if (endpoint is None or r.endpoint == endpoint)
            and (listener is None or r.listener == listener)
        ]

    def count(self, endpoint: str, listener: str | None = None) -> int:
        return len(self.requests(endpoint, listener))

    def clear(self) -> None:
        self._records.clear()

    def _take_fault(self, endpoint: str, listener: str) -> Fault | None:
        for fault in self._faults:
            if fault.endpoint == endpoint and fault.listener in (None, listener):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def middleware(self, error_body: ErrorBody) -> Any:
        """An aiohttp middleware; ``error_body(status)`` shapes injected failures per protocol."""

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            route_name = request.match_info.route.name
            endpoint = route_name or UNROUTED
            form: dict[str, str] = {}
            if (
                request.method == "POST"
                and request.content_type == "application/x-www-form-urlencoded"
            ):
                form = {k: str(v) for k, v in (await request.post()).items()}
            status = 500
            try:
                fault = self._take_fault(endpoint, request.host)
                if fault is not None:
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    if fault.status is not None:
                        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                        body = fault.body if fault.body is not None else error_body(fault.status)
                        status = fault.status
                        return web.json_response(dict(body), status=fault.status, headers=headers)
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self._records.append(
                    RecordedRequest(
                        endpoint=endpoint,
                        listener=request.host,
                        method=request.method,
                        path=request.path,
                        query=dict(request.query),
                        form={k: REDACTED if k in _SECRET_FIELDS else v for k, v in form.items()},
                        token_claims=_token_claims(form),
                        auth=_describe_auth(request),
                        headers={
                            h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers
                        },
                        status=status,
                        time=self._clock(),
                    )
                )

        return record
