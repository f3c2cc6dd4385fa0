"""moto in server mode on loopback: ECR and STS over real HTTP for boto3.

A server (rather than moto's in-process mocks) lets the code under test build
its own boto3 clients exactly as in production, only with ``endpoint_url``
pointed here. State lives in the server process; ``reset()`` clears it.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import boto3
from aiohttp import ClientSession, web
from moto.server import ThreadedMotoServer

from devenv.lifecycle import Component
from devenv.serve import free_port

DEFAULT_REGION = "us-east-1"
# moto accepts any credentials; these only have to look like keys to botocore.
TEST_CREDENTIALS = {
    "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


class MotoServer(Component):
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._running = False

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        if not self._running:
            self._server.start()
            self._running = True
        return self.endpoint_url

    def stop(self) -> None:
        if not self._running:
            return
        self._server.stop()
        self._running = False
        # ThreadedMotoServer.stop() shuts the loop down but leaves the listening
        # socket open; close it so no ResourceWarning escapes into the tests.
        server = getattr(self._server, "_server", None)
        if server is not None:
            server.server_close()

    def reset(self) -> None:
        """Forgets every resource moto holds (its documented reset endpoint)."""
        url = f"{self.endpoint_url}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - an http:// loopback URL
        # A loopback call that answers in milliseconds; 10 s only bounds a wedged server.
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def client(self, service: str, region: str = DEFAULT_REGION) -> Any:
        return aws_client(service, self.endpoint_url, region)

    # --- lifecycle (``with`` starts and stops it: devenv.lifecycle.Component) ---


def aws_client(service: str, endpoint_url: str, region: str = DEFAULT_REGION) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, **TEST_CREDENTIALS)


def ecr_client(endpoint_url: str, region: str = DEFAULT_REGION) -> Any:
    """A boto3 ECR client that talks to the moto server at ``endpoint_url``."""
    return aws_client("ecr", endpoint_url, region)


#: ECR tokens are valid for 12 hours (GetAuthorizationToken API reference).
ECR_TOKEN_SECONDS = 12 * 3600


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


class MotoProxy:
    """Forwards every request to moto, recording the AWS operation (from
    ``X-Amz-Target`` or the query ``Action``), and lets a test make the next N
    calls of an operation fail the way AWS fails: an error body, a slow answer or
    a dropped connection. ``delay`` holds every request that long first, as a distant
    endpoint would.

    With ``ecr_expiry``, it dates ECR tokens as ECR does, 12 hours from now: moto
    answers every GetAuthorizationToken with ``expiresAt`` fixed in 2015, which any
    expiry-aware client must refuse as already expired. Only that field is rewritten.
    """

    def __init__(self, upstream: str, *, ecr_expiry: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.ecr_expiry = ecr_expiry
        self.url = ""
        self.calls: list[AwsCall] = []
        self.faults: list[AwsFault] = []
        self.delay = 0.0
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
        if self.delay:
            await asyncio.sleep(self.delay)
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
            status = upstream.status
        if self.ecr_expiry and operation == "GetAuthorizationToken" and status == 200:
            doc = json.loads(payload)
            for item in doc.get("authorizationData", []):
                item["expiresAt"] = time.time() + ECR_TOKEN_SECONDS
            payload = json.dumps(doc).encode()
        return web.Response(status=status, body=payload, headers=kept)

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


class ThreadedMotoProxy(Component):
    """A ``MotoProxy`` on its own event loop in a thread, for synchronous callers (the
    end-to-end stack): ``start()`` returns its endpoint URL."""

    def __init__(self, upstream: str, *, ecr_expiry: bool = True) -> None:
        self.proxy = MotoProxy(upstream, ecr_expiry=ecr_expiry)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return self.proxy.url

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
