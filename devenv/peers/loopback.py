"""What every local cloud emulator shares (``azure.AzureEmulator``, ``gcp.GcpEmulator``): a
state directory (a temporary one of its own unless given), a CA and a server certificate
for its HTTPS listeners, a recorder of every request (``traffic``), listeners on
loopback, the key that signs its registry tokens, and one start/stop lifecycle."""

from __future__ import annotations

import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from devenv.peers.acr import TokenSigner
from devenv.peers.tls import CertificateAuthority, cert_pem, new_ec_key, self_signed_certificate
from devenv.peers.traffic import Traffic

LOOPBACK = "127.0.0.1"


def bind_loopback(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    return sock


def oauth_error_body(status: int) -> dict[str, Any]:
    """An injected failure of an OAuth endpoint, as OAuth 2.0 words its errors."""
    error = "temporarily_unavailable" if status in (429, 503) else "server_error"
    return {"error": error, "error_description": f"injected failure (HTTP {status})"}


def registry_error_body(status: int) -> dict[str, Any]:
    """An injected failure of a registry, as the distribution API words its errors."""
    code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
    return {
        "errors": [{"code": code, "message": f"injected failure (HTTP {status})", "detail": None}]
    }


class LoopbackEmulator:
    """``NAME`` names its temporary directory and its server certificate; subclasses start
    their listeners in ``_listen``."""

    NAME = "emulator"

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        ca: CertificateAuthority | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tempdir = None if state_dir else tempfile.TemporaryDirectory(prefix=f"{self.NAME}-")
        self.state_dir = state_dir or Path(self._tempdir.name)  # type: ignore[union-attr]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or CertificateAuthority(self.state_dir / "tls")
        # Unique file names: several emulators may share one CA directory.
        self._server_cert = self.ca.issue_server_cert(f"{self.NAME}-{uuid.uuid4().hex[:8]}")
        self.traffic = Traffic(clock)
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None

    def _token_signer(self, name: str) -> tuple[TokenSigner, Path]:
        """A key that signs registry tokens, and where its certificate is written:
        docker-registry's token auth trusts that bundle (``rootcertbundle``)."""
        key = new_ec_key()
        cert = cert_pem(self_signed_certificate(key, name))
        path = self.state_dir / f"{name}.crt"
        path.write_bytes(cert)
        return TokenSigner(key, cert), path

    @property
    def running(self) -> bool:
        return self._session is not None

    @property
    def ca_path(self) -> Path:
        return self.ca.ca_path

    @property
    def cert_dir(self) -> Path:
        return self.ca.cert_dir

    def _new_app(self, error_body: Callable[[int], Mapping[str, Any]]) -> web.Application:
        return web.Application(middlewares=[self.traffic.middleware(error_body)])

    async def _serve(self, app: web.Application, *, tls: bool, port: int = 0) -> int:
        """Serve ``app`` on loopback (``port`` 0: any free one); returns the port."""
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        sock = bind_loopback(port)
        bound = int(sock.getsockname()[1])
        ssl_context = self._server_cert.server_ssl_context() if tls else None
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        return bound

    async def start(self) -> None:
        if self.running:
            return
        # The proxy must pass bodies through untouched: no decompression, no cookies.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        await self._listen()

    async def _listen(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
