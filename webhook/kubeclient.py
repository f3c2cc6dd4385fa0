"""The webhook's own Kubernetes API client: where the API server is and how to prove who
we are (a kubeconfig, or the pod's ServiceAccount), and JSON requests over one aiohttp
session.

The webhook makes about twenty kinds of call, all on plain JSON dicts. A generated client
(thousands of model classes, imported whole) cost every replica 38 MiB of memory and a
fifth of a second of start-up for them; this module is what those calls need and no more.

What a kubeconfig may hold, as kubectl reads it: ``$KUBECONFIG`` (several files, the first
to set a value wins) or ``~/.kube/config``; the current context's cluster (``server``,
``certificate-authority[-data]``, ``insecure-skip-tls-verify``, ``tls-server-name``,
``proxy-url``) and user (``token``, ``tokenFile``, ``client-certificate[-data]`` and
``client-key[-data]``, or an ``exec`` credential plugin that prints a token). Relative
paths are read from the kubeconfig's own directory. Anything else (basic auth, the removed
``auth-provider`` plugins, an exec plugin that prints a client certificate) is refused
when the kubeconfig is loaded, saying what to use instead.

In a pod (``KUBERNETES_SERVICE_HOST`` set), the ServiceAccount's projected token is read
again every minute, as client-go does: the kubelet rotates it long before it expires.
Failures are ``ApiError``s (``webhook.kubeerrors``); no token, password or key is ever
part of one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import ssl
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
import yaml

from webhook.kubeerrors import BODY_LIMIT, ApiError, succeeded
from webhook.rfc3339 import from_rfc3339

log = logging.getLogger(__name__)

#: Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: A token file is read again after this long (client-go's cache time).
TOKEN_REREAD_SECONDS = 60.0
#: An exec plugin's token is asked for again this long before it says it expires.
EXEC_EXPIRY_MARGIN_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 60.0
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
class StaticToken:
    token: str

    async def __call__(self) -> str:
        return self.token


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
class ExecToken:
    """A client-go credential plugin (``users[].user.exec``): run the command, read the
    ExecCredential it prints, keep its token until shortly before it expires."""

    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    clock: Callable[[], float] = time.time
    _token: str = ""
    _expires_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self) -> str:
        async with self._lock:
            if self._token and self.clock() < self._expires_at - EXEC_EXPIRY_MARGIN_SECONDS:
                return self._token
            self._token, self._expires_at = await self._run()
            return self._token

    async def _run(self) -> tuple[str, float]:
        info = {"apiVersion": self.api_version, "kind": "ExecCredential"}
        env = {
            **os.environ,
            **self.env,
            "KUBERNETES_EXEC_INFO": json.dumps({**info, "spec": {"interactive": False}}),
        }
        what = f"credential plugin {self.command!r}"
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            out, err = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT_SECONDS)
        except TimeoutError as e:
            proc.kill()
            raise ApiError(0, "ExecCredentialFailed", f"{what} timed out") from e
        except OSError as e:
            raise ApiError(0, "ExecCredentialFailed", f"{what}: {e.strerror}") from e
        if proc.returncode != 0:
            # Its stderr is its own error message; stdout may hold a credential.
            detail = err.decode("utf-8", "replace")[:BODY_LIMIT]
            raise ApiError(
                0, "ExecCredentialFailed", f"{what} exited with {proc.returncode}: {detail}"
            )
        try:
            status = json.loads(out).get("status") or {}
        except (ValueError, AttributeError) as e:
            raise ApiError(0, "ExecCredentialFailed", f"{what} printed no JSON") from e
        token = status.get("token")
        if not isinstance(token, str) or not token:
            message = (
                "printed a client certificate; only token credentials are supported"
                if status.get("clientCertificateData")
                else "printed no status.token"
            )
            raise ApiError(0, "ExecCredentialFailed", f"{what} {message}")
        expires = from_rfc3339(str(status.get("expirationTimestamp") or ""))
        return token, expires if expires is not None else float("inf")


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


def _tls(
    *,
    ca_file: Path | None = None,
    ca_data: bytes | None = None,
    cert: bytes | None = None,
    key: bytes | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    if ca_data is not None:
        context.load_verify_locations(cadata=ca_data.decode("ascii", "replace"))
    if cert is not None and key is not None:
        # load_cert_chain reads files only: a private directory, gone right after.
        with tempfile.TemporaryDirectory(prefix="kubeconfig-") as tmp:
            cert_path, key_path = Path(tmp, "client.crt"), Path(tmp, "client.key")
            for path, data in ((cert_path, cert), (key_path, key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            context.load_cert_chain(str(cert_path), str(key_path))
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _env_proxy(server: str) -> str | None:
    """HTTPS_PROXY / NO_PROXY for the API server, looked up once (not on every request)."""
    host = urlsplit(server).hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get("https")


def load_in_cluster(
    env: Mapping[str, str] | None = None, directory: Path = SERVICE_ACCOUNT_DIR
) -> Connection:
    """The pod's ServiceAccount: the API server from KUBERNETES_SERVICE_HOST/_PORT, its CA
    and token from the files the kubelet mounts."""
    env = os.environ if env is None else env
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
        tls = _tls(ca_file=ca)
    except (ssl.SSLError, OSError) as e:
        raise KubeconfigError(f"in-cluster credentials: {ca}: {e}") from e
    return Connection(
        server=server,
        tls=tls,
        token=TokenFile(token),
        proxy=_env_proxy(server),
        source="in-cluster",
    )


def kubeconfig_paths(env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(p).expanduser() for p in listed]
    return [Path("~/.kube/config").expanduser()]


def _named(doc: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for item in doc.get(key) or []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            out.setdefault(item["name"], item)
    return out


def _read_kubeconfigs(paths: list[Path]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Merge kubeconfig files as kubectl does (the first to set a name wins); also where
    each named cluster and user came from, to resolve their relative paths."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": ""}
    origin: dict[str, Path] = {}
    found = False
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as e:
            raise KubeconfigError(f"kubeconfig {path}: {e}") from e
        if not isinstance(doc, Mapping):
            raise KubeconfigError(f"kubeconfig {path}: not a mapping")
        found = True
        for key in ("clusters", "users", "contexts"):
            for name, item in _named(doc, key).items():
                if name not in merged[key]:
                    merged[key][name] = item
                    origin[f"{key}/{name}"] = path.parent
        if not merged["current-context"] and isinstance(doc.get("current-context"), str):
            merged["current-context"] = doc["current-context"]
    if not found:
        raise KubeconfigError("no kubeconfig at " + os.pathsep.join(map(str, paths)))
    return merged, origin


def _data(section: Mapping[str, Any], key: str, base: Path, problems: list[str]) -> bytes | None:
    """``key-data`` (base64) or the file ``key`` names, relative to the kubeconfig."""
    inline = section.get(f"{key}-data")
    if inline:
        try:
            return base64.b64decode(str(inline), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{key}-data is not base64")
            return None
    named = section.get(key)
    if not named:
        return None
    path = base / Path(str(named)).expanduser()
    try:
        return path.read_bytes()
    except OSError as e:
        problems.append(f"{key} {path}: {e.strerror}")
        return None


def load_kubeconfig(path: str | Path | None = None, context: str | None = None) -> Connection:
    """A connection from a kubeconfig file (or $KUBECONFIG, or ~/.kube/config), every
    problem it has listed at once."""
    paths = [Path(path).expanduser()] if path else kubeconfig_paths()
    merged, origin = _read_kubeconfigs(paths)
    where = "kubeconfig " + os.pathsep.join(map(str, paths))
    name = context or merged["current-context"]
    if not name:
        raise KubeconfigError(f"{where}: no current-context")
    ctx = (merged["contexts"].get(name) or {}).get("context")
    if not isinstance(ctx, Mapping):
        raise KubeconfigError(f"{where}: no context {name!r}")
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    cluster = (merged["clusters"].get(cluster_name) or {}).get("cluster")
    user = (merged["users"].get(user_name) or {}).get("user") if user_name else {}
    problems: list[str] = []
    if not isinstance(cluster, Mapping):
        raise KubeconfigError(f"{where}: context {name!r} names no known cluster")
    if not isinstance(user, Mapping):
        problems.append(f"context {name!r} names no known user {user_name!r}")
        user = {}
    cluster_dir = origin.get(f"clusters/{cluster_name}", paths[0].parent)
    user_dir = origin.get(f"users/{user_name}", paths[0].parent)

    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith("https://"):
        problems.append(f"cluster {cluster_name!r}: server {server!r} is not an https:// URL")
    ca = _data(cluster, "certificate-authority", cluster_dir, problems)
    cert = _data(user, "client-certificate", user_dir, problems)
    key = _data(user, "client-key", user_dir, problems)
    if (cert is None) != (key is None):
        problems.append(f"user {user_name!r}: a client certificate needs both cert and key")
    token: TokenSource | None = None
    if user.get("token"):
        token = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        token = TokenFile(user_dir / Path(str(user["tokenFile"])).expanduser())
    elif isinstance(user.get("exec"), Mapping):
        plugin = user["exec"]
        if not plugin.get("command"):
            problems.append(f"user {user_name!r}: exec has no command")
        else:
            command = str(plugin["command"])
            if "/" in command and not Path(command).is_absolute():
                # As kubectl: a relative command path is the kubeconfig's, a bare name is
                # looked up on $PATH.
                command = str(user_dir / command)
            token = ExecToken(
                command=command,
                args=[str(a) for a in plugin.get("args") or []],
                env={
                    str(e.get("name")): str(e.get("value", ""))
                    for e in plugin.get("env") or []
                    if isinstance(e, Mapping)
                },
                api_version=str(plugin.get("apiVersion") or "client.authentication.k8s.io/v1"),
            )
    for unsupported, instead in (
        ("auth-provider", "an exec credential plugin (kubelogin, gke-gcloud-auth-plugin...)"),
        ("username", "a token or a client certificate"),
    ):
        if user.get(unsupported):
            problems.append(f"user {user_name!r}: {unsupported} is not supported; use {instead}")
    if problems:
        raise KubeconfigError(f"{where} (context {name!r}): " + "; ".join(problems))
    try:
        tls = _tls(
            ca_data=ca, cert=cert, key=key, insecure=bool(cluster.get("insecure-skip-tls-verify"))
        )
    except (ssl.SSLError, ValueError) as e:
        raise KubeconfigError(f"{where} (context {name!r}): TLS material unusable: {e}") from e
    return Connection(
        server=server,
        tls=tls,
        token=token,
        server_hostname=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        proxy=str(cluster["proxy-url"]) if cluster.get("proxy-url") else _env_proxy(server),
        source=f"{where} (context {name!r})",
    )


def load(kubeconfig: str | Path | None = None) -> Connection:
    """``kubeconfig`` when given; else the pod's ServiceAccount in a cluster; else
    $KUBECONFIG or ~/.kube/config."""
    if kubeconfig:
        return load_kubeconfig(kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return load_in_cluster()
    return load_kubeconfig()


# ------------------------------------------------------------------ requests

#: The core API group's prefix for ``resource_path``.
CORE_API = "/api/v1"


def resource_path(api: str, resource: str, *, namespace: str | None = None, name: str = "") -> str:
    """The path of a resource: ``api`` (``/api/v1``, ``/apis/GROUP/VERSION``), then the
    namespace when it is namespaced (None: cluster-scoped, or all namespaces), then the
    object's name when there is one; names are escaped."""
    where = f"/namespaces/{quote(namespace, safe='')}" if namespace is not None else ""
    return f"{api}{where}/{resource}" + (f"/{quote(name, safe='')}" if name else "")


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
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
        accept: str = JSON,
        seconds: float = CALL_SECONDS,
    ) -> Response:
        """Any answer of the API server; ApiError (status 0) when none came."""
        try:
            headers = await self._headers(content_type if body is not None else None)
            headers["Accept"] = accept
            async with self._open().request(
                method,
                self.connection.server + path,
                params=_query(params),
                data=orjson.dumps(body) if body is not None else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=seconds, sock_connect=CONNECT_SECONDS),
                **self._options(),
            ) as resp:
                return Response(resp.status, resp.reason or "", await resp.read())
        except TRANSPORT_ERRORS as e:
            raise transport_error(e) from e

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """A 2xx answer's JSON object; ApiError for any other answer or none."""
        response = await self.request(
            method, path, params=params, body=body, content_type=content_type
        )
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
    return ApiClient(load(kubeconfig))
