"""The webhook's own Kubernetes API client: where the API server is and how to prove who
we are, and JSON requests over one aiohttp session.

The webhook makes about twenty kinds of call, all on plain JSON dicts. A generated client
(thousands of model classes, imported whole) cost every replica 38 MiB of memory and a
fifth of a second of start-up for them; this module is what those calls need and no more.

In a pod (``KUBERNETES_SERVICE_HOST`` set), the ServiceAccount's projected token is read
again every minute, as client-go does: the kubelet rotates it long before it expires.
Elsewhere, or given one, a kubeconfig is read by kubernetes-asyncio's loader
(``webhook.kube.kubeconfig``, imported only then). Failures are ``ApiError``s
(``webhook.kube.errors``); no token, password or key is ever part of one.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from typing_extensions import Unpack

from webhook.kube.errors import BODY_LIMIT, ApiError, succeeded

log = logging.getLogger(__name__)

#: Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: A token file is read again after this long (client-go's cache time).
TOKEN_REREAD_SECONDS = 60.0
#: Ordinary calls: connecting and the whole answer. A watch gets its own deadline.
CONNECT_SECONDS = 10.0
CALL_SECONDS = 30.0
#: Connections to the API server at once (watches included).
POOL_SIZE = 100

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

USER_AGENT = "pull-secret-webhook"


class KubeconfigError(Exception):
    """No usable connection could be made from the kubeconfig or the pod's ServiceAccount."""


class TokenSource(Protocol):
    async def __call__(self) -> str: ...


@dataclass
class TokenFile:
    """A token read from a file, again once it is TOKEN_REREAD_SECONDS old. A failed
    re-read keeps the last token (the kubelet replaces the file atomically, but a read can
    still race a remount); a failed first read is an error."""

    path: Path
    clock: Callable[[], float] = time.monotonic
    _token: str = ""
    _read_at: float = field(default=float("-inf"))

    async def __call__(self) -> str:
        now = self.clock()
        if now - self._read_at >= TOKEN_REREAD_SECONDS:
            try:
                self._token = self.path.read_text().strip()
                self._read_at = now
            except OSError as e:
                if not self._token:
                    raise ApiError(0, "TokenFileUnreadable", f"{self.path}: {e.strerror}") from e
        return self._token


@dataclass
class Connection:
    """Where the API server is and how to talk to it."""

    server: str
    tls: ssl.SSLContext
    token: TokenSource | None = None
    #: tls-server-name: the name the API server's certificate is checked against.
    server_hostname: str | None = None
    proxy: str | None = None
    #: Where it came from, for messages: "kubeconfig <path> (context <name>)" or "in-cluster".
    source: str = ""


# ------------------------------------------------------------------ loading


def _tls(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(ca_file))
    return context


def env_proxy(server: str) -> str | None:
    """HTTPS_PROXY / NO_PROXY for the API server, looked up once (not on every request)."""
    host = urlsplit(server).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get("https")


def in_cluster(env: Mapping[str, str] | None = None) -> bool:
    """Running in a pod (the kubelet sets KUBERNETES_SERVICE_HOST)?"""
    return bool((os.environ if env is None else env).get("KUBERNETES_SERVICE_HOST"))


def load_in_cluster(
    env: Mapping[str, str] | None = None, directory: Path | None = None
) -> Connection:
    """The pod's ServiceAccount: the API server from KUBERNETES_SERVICE_HOST/_PORT, its CA
    and token from the files the kubelet mounts (SERVICE_ACCOUNT_DIR)."""
    env = os.environ if env is None else env
    directory = SERVICE_ACCOUNT_DIR if directory is None else directory
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeconfigError(
            "not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"
        )
    token, ca = directory / "token", directory / "ca.crt"
    problems = [f"{p} is missing" for p in (token, ca) if not p.is_file()]
    if problems:
        raise KubeconfigError(
            "in-cluster credentials: "
            + "; ".join(problems)
            + " (is automountServiceAccountToken off, or no projected token mounted?)"
        )
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    try:
        tls = _tls(ca)
    except (ssl.SSLError, OSError) as e:
        raise KubeconfigError(f"in-cluster credentials: {ca}: {e}") from e
    return Connection(
        server=server,
        tls=tls,
        token=TokenFile(token),
        proxy=env_proxy(server),
        source="in-cluster",
    )


async def load(kubeconfig: str | Path | None = None) -> Connection:
    """``kubeconfig`` when given; else the pod's ServiceAccount in a cluster; else
    $KUBECONFIG or ~/.kube/config."""
    if not kubeconfig and in_cluster():
        return load_in_cluster()
    # Only now: kubernetes-asyncio's loader imports its generated client whole.
    from webhook.kube.kubeconfig import load_kubeconfig

    return await load_kubeconfig(kubeconfig)


# ------------------------------------------------------------------ requests

#: The core API group's prefix for ``resource_path``.
CORE_API = "/api/v1"


def resource_path(api: str, resource: str, *, namespace: str | None = None, name: str = "") -> str:
    """The path of a resource: ``api`` (``/api/v1``, ``/apis/GROUP/VERSION``), then the
    namespace when it is namespaced (None: cluster-scoped, or all namespaces), then the
    object's name when there is one; names are escaped."""
    where = f"/namespaces/{quote(namespace, safe='')}" if namespace is not None else ""
    return f"{api}{where}/{resource}" + (f"/{quote(name, safe='')}" if name else "")


class Payload(TypedDict, total=False):
    """What a call sends besides its method and path."""

    params: Mapping[str, Any] | None
    """The query (None values left out)."""
    body: Any
    """Sent as JSON when not None."""
    content_type: str
    """Of the body: JSON by default, or a patch type."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    body: bytes


def _query(params: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None or value == "":
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def raise_for_status(response: Response) -> None:
    if succeeded(response.status):
        return
    try:
        message = str(json.loads(response.body).get("message", ""))
    except (ValueError, AttributeError):
        message = response.body[:BODY_LIMIT].decode("utf-8", "replace")
    raise ApiError(response.status, response.reason, message)


def transport_error(e: BaseException) -> ApiError:
    """No answer: status 0 and what went wrong (never a header: they hold the token)."""
    if isinstance(e, ApiError):
        return e
    return ApiError(0, type(e).__name__, str(e))


TRANSPORT_ERRORS = (TimeoutError, OSError, aiohttp.ClientError)


class ApiClient:
    """JSON over HTTPS to one API server, on one connection pool."""

    def __init__(self, connection: Connection, *, pool_size: int = POOL_SIZE) -> None:
        self.connection = connection
        # Where and as whom (a path or "in-cluster"), never what proves it.
        log.info(
            "Kubernetes API server %s, credentials from %s", connection.server, connection.source
        )
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs it.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=self.connection.tls),
                headers={"User-Agent": USER_AGENT, "Accept": JSON},
                # HTTPS_PROXY / NO_PROXY were looked up once, for this server (Connection).
                trust_env=False,
            )
        return self._session

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        if self.connection.token is not None:
            headers["Authorization"] = f"Bearer {await self.connection.token()}"
        return headers

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.connection.proxy:
            options["proxy"] = self.connection.proxy
        if self.connection.server_hostname:
            options["server_hostname"] = self.connection.server_hostname
        return options

    async def request(
        self,
        method: str,
        path: str,
        *,
        accept: str = JSON,
        seconds: float = CALL_SECONDS,
        **payload: Unpack[Payload],
    ) -> Response:
        """Any answer of the API server; ApiError (status 0) when none came."""
        body = payload.get("body")
        try:
            content_type = payload.get("content_type", JSON)
            headers = await self._headers(content_type if body is not None else None)
            headers["Accept"] = accept
            async with self._open().request(
                method,
                self.connection.server + path,
                params=_query(payload.get("params")),
                data=orjson.dumps(body) if body is not None else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=CONNECT_SECONDS),
                **self._options(),
            ) as resp:
                return Response(resp.status, resp.reason or "", await resp.read())
        except TRANSPORT_ERRORS as e:
            raise transport_error(e) from e

    async def call(self, method: str, path: str, **payload: Unpack[Payload]) -> dict[str, Any]:
        """A 2xx answer's JSON object; ApiError for any other answer or none."""
        response = await self.request(method, path, **payload)
        raise_for_status(response)
        doc: dict[str, Any] = orjson.loads(response.body) if response.body else {}
        return doc

    @asynccontextmanager
    async def stream(
        self, path: str, *, params: Mapping[str, Any], seconds: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose answer is read as it comes (a watch); a non-2xx answer or none is a
        ApiError before anything is yielded."""
        try:
            headers = await self._headers(None)
            resp = await self._open().get(
                self.connection.server + path,
                params=_query(params),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=CONNECT_SECONDS),
                **self._options(),
            )
        except TRANSPORT_ERRORS as e:
            raise transport_error(e) from e
        try:
            if not succeeded(resp.status):
                try:
                    body = await resp.read()
                except TRANSPORT_ERRORS as e:
                    raise transport_error(e) from e
                raise_for_status(Response(resp.status, resp.reason or "", body))
            yield resp
        finally:
            resp.release()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(kubeconfig: str | Path | None = None) -> ApiClient:
    """A client for the API server ``load`` finds; KubeconfigError when there is none."""
    return ApiClient(await load(kubeconfig))
