"""Integration fixtures: the protocol peers from devenv/peers, an in-memory
implementation of the credentials' Kubernetes interfaces, and a counting,
fault-injecting reverse proxy in front of moto."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import pytest
import pytest_asyncio
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives.asymmetric import rsa

from devenv.peers import jws
from devenv.peers.fixtures import azure_emulator, moto_process, moto_server, test_ca
from devenv.peers.tls import new_rsa_key
from webhook.config import Config
from webhook.kubeapi import KubeAPIError, SecretData
from webhook.needs import PullNeed

__all__ = ["azure_emulator", "moto_process", "moto_server", "test_ca"]

#: The issuer a cluster's service account tokens carry (what federated
#: credentials and IAM OIDC providers are configured with).
CLUSTER_ISSUER = "https://oidc.cluster.example"


class Clock:
    """A settable wall clock for the credential cache."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def pull_need(config: Config, host: str, service_account: str = "default") -> PullNeed:
    """What the admission path would ask the cache for, for an image on ``host``."""
    entry = config.entry_for(host)
    assert entry is not None, f"no entry for {host}"
    return PullNeed.make(entry, host, prefix=config.secret_prefix, service_account=service_account)


@dataclass
class MemoryKube:
    """Secrets, ServiceAccounts and TokenRequest in memory, implementing
    SecretReader and ServiceAccountTokens. Tokens are RS256 JWTs shaped like the
    API server's (iss, sub ``system:serviceaccount:NS:NAME``, aud, exp)."""

    key: rsa.RSAPrivateKey = field(default_factory=new_rsa_key)
    secrets: dict[tuple[str, str], SecretData] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    token_requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    failures: dict[str, list[int]] = field(default_factory=dict)
    """Operation (``read_secret``, ``token``, ``service_account``) → statuses to fail with."""

    def put_secret(self, namespace: str, name: str, data: Mapping[str, bytes]) -> None:
        old = self.secrets.get((namespace, name))
        version = str(int(old.resource_version) + 1) if old else "1"
        self.secrets[(namespace, name)] = SecretData(dict(data), version)

    def put_service_account(self, namespace: str, name: str, **annotations: str) -> None:
        self.service_accounts[(namespace, name)] = dict(annotations)

    def fail(self, operation: str, *statuses: int) -> None:
        self.failures.setdefault(operation, []).extend(statuses)

    def _maybe_fail(self, operation: str) -> None:
        pending = self.failures.get(operation)
        if pending:
            raise KubeAPIError(pending.pop(0), "injected fault")

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        self._maybe_fail("read_secret")
        return self.secrets.get((namespace, name))

    async def service_account_annotations(
        self, namespace: str, name: str
    ) -> Mapping[str, str] | None:
        self._maybe_fail("service_account")
        return self.service_accounts.get((namespace, name))

    async def token(
        self, namespace: str, service_account: str, audience: str, expiration_seconds: int
    ) -> str:
        self._maybe_fail("token")
        if (namespace, service_account) not in self.service_accounts:
            raise KubeAPIError(404, "NotFound")
        self.token_requests.append((namespace, service_account, audience, expiration_seconds))
        now = int(time.time())
        claims = {
            "iss": CLUSTER_ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + expiration_seconds,
        }
        return jws.sign({"alg": "RS256", "kid": "cluster", "typ": "JWT"}, claims, self.key)


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


# --------------------------------------------------------------------------- AWS proxy

_TARGET_RE = re.compile(r"\.(\w+)$")
_ACTION_RE = re.compile(r"(?:^|&)Action=(\w+)")
# SigV4: "Credential=AKID/20150101/us-east-1/ecr/aws4_request"
_SCOPE_RE = re.compile(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/")


@dataclass(frozen=True)
class AwsCall:
    operation: str
    target: str
    """``X-Amz-Target`` of JSON-protocol calls (names the service API)."""
    access_key: str
    """Access key id the request was signed with; empty when unsigned."""
    region: str
    service: str
    form: dict[str, str]
    """Parameters of query-protocol calls (STS)."""
    json: dict[str, object]
    """Body of JSON-protocol calls (ECR)."""


@dataclass
class AwsFault:
    operation: str
    count: int
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


class AwsProxy:
    """Forwards every request to moto, recording the AWS operation (from
    ``X-Amz-Target`` or the query ``Action``), and lets a test make the next N
    calls of an operation fail the way AWS fails: an error body, a slow answer or
    a dropped connection."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.calls: list[AwsCall] = []
        self.faults: list[AwsFault] = []
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    def count(self, operation: str) -> int:
        return sum(1 for call in self.calls if call.operation == operation)

    def operations(self) -> list[str]:
        return [call.operation for call in self.calls]

    def answer(self, operation: str, document: Mapping[str, object]) -> None:
        """Answers the next call of ``operation`` itself (for APIs moto lacks)."""
        body = json.dumps(document).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        self.faults.append(AwsFault(operation, 1, 200, body, headers))

    def json_error(self, operation: str, code: str, message: str, status: int = 400) -> None:
        """An error of a JSON-protocol service (ECR), as AWS sends it."""
        body = f'{{"__type":"{code}","message":"{message}"}}'.encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
        self.faults.append(AwsFault(operation, 1, status, body, headers))

    def query_error(self, operation: str, code: str, message: str, status: int = 400) -> None:
        """An error of a query-protocol service (STS), as AWS sends it."""
        body = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
            f"<Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        ).encode()
        self.faults.append(AwsFault(operation, 1, status, body, {"Content-Type": "text/xml"}))

    def slow(self, operation: str, delay: float) -> None:
        self.faults.append(AwsFault(operation, 1, delay=delay))

    def drop(self, operation: str) -> None:
        self.faults.append(AwsFault(operation, 1, drop=True))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        text = body.decode("latin-1")
        match = _TARGET_RE.search(target) or _ACTION_RE.search(text)
        scope = _SCOPE_RE.search(request.headers.get("Authorization", ""))
        form = {} if target else {k: v[0] for k, v in parse_qs(text).items()}
        self.calls.append(
            AwsCall(
                operation=match.group(1) if match else "unknown",
                target=target,
                access_key=scope.group(1) if scope else "",
                region=scope.group(2) if scope else "",
                service=scope.group(3) if scope else "",
                form=form,
                json=json.loads(body) if target and body else {},
            )
        )
        operation = self.calls[-1].operation
        fault = next((f for f in self.faults if f.operation == operation), None)
        if fault is not None:
            fault.count -= 1
            if fault.count <= 0:
                self.faults.remove(fault)
            if fault.drop:
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            if fault.status:
                return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
            await asyncio.sleep(fault.delay)
        assert self._session is not None
        # The Host header is kept: it is part of the SigV4 signature moto checks when
        # IAM enforcement is on.
        headers = dict(request.headers)
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            kept = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=upstream.status, body=payload, headers=kept)

    async def start(self) -> str:
        self._session = ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest_asyncio.fixture
async def aws(moto_server: str) -> AsyncIterator[AwsProxy]:
    proxy = AwsProxy(moto_server)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
