"""moto in server mode on loopback: ECR and STS over real HTTP for boto3.

A server (rather than moto's in-process mocks) lets the code under test build
its own boto3 clients exactly as in production, only with ``endpoint_url``
pointed here. State lives in the server process; ``reset()`` clears it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import aiohttp
import boto3
from aiohttp import web
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


def _operation(request: web.Request, body: bytes) -> str:
    """The AWS operation of a request: JSON protocols (ECR) name it in ``X-Amz-Target``,
    query protocols (STS) in the form's ``Action``."""
    target = request.headers.get("X-Amz-Target", "")
    if target:
        return target.rpartition(".")[2]
    for pair in body.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"Action":
            return value.decode("ascii", "replace")
    return "unknown"


class EcrExpiryProxy:
    """Forwards to moto and dates ECR tokens as ECR does: 12 hours from now.

    moto answers every GetAuthorizationToken with ``expiresAt`` fixed in 2015, which
    any expiry-aware client must refuse as already expired. Only that field is
    rewritten; everything else is moto's own answer. Runs on its own loop in a thread
    so that synchronous callers (the end-to-end stack) can use it.

    ``calls`` counts the requests it forwarded by operation (``GetAuthorizationToken``,
    ``AssumeRoleWithWebIdentity``...): what the webhook really asked AWS for. ``delay``
    holds every request that long before forwarding it, as a distant endpoint would.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.calls: Counter[str] = Counter()
        self.delay = 0.0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        self.calls[_operation(request, body)] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            status = upstream.status
        if request.headers.get("X-Amz-Target", "").endswith(".GetAuthorizationToken") and (
            status == 200
        ):
            doc = json.loads(payload)
            for item in doc.get("authorizationData", []):
                item["expiresAt"] = time.time() + ECR_TOKEN_SECONDS
            payload = json.dumps(doc).encode()
        return web.Response(status=status, body=payload, headers=out_headers)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> str:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.endpoint_url

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
