"""A local Google Cloud for tests: the metadata server, STS, IAM Credentials, the OAuth
2.0 token endpoint, and Artifact Registry Docker hosts, on loopback.

``GcpEmulator`` serves
- the metadata server over plain HTTP at ``metadata_host`` (``GCE_METADATA_HOST`` and
  ``GCE_METADATA_IP``; google-auth reads the first when it is imported, so it must be
  set before, and a caller may pin the port with ``metadata_port``),
- Google's token APIs over HTTPS at ``apis_url``: ``sts_url`` (STS ``/v1/token``),
  ``iam_credentials_url`` (``/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken``)
  and ``oauth2_token_url`` (``/token``),
- one HTTPS listener per Artifact Registry location (``add_registry``), with ``/v2/``
  proxied to a real registry.
Clients trust ``ca_path`` (or ``cert_dir`` for skopeo). Every request is recorded (see
``traffic``), and every token issued is in ``iam.tokens`` with its identity and expiry.
"""

from __future__ import annotations

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
from devenv.peers.artifactregistry import ArtifactRegistryHost
from devenv.peers.azure import LOOPBACK, bind_loopback
from devenv.peers.gcp_endpoints import (
    IamCredentials,
    MetadataServer,
    OAuth2TokenEndpoint,
    SecurityTokenService,
)
from devenv.peers.gcp_iam import GoogleIam
from devenv.peers.tls import CertificateAuthority, cert_pem, new_ec_key, self_signed_certificate
from devenv.peers.traffic import Traffic


def _oauth_error_body(status: int) -> dict[str, Any]:
    error = "temporarily_unavailable" if status in (429, 503) else "server_error"
    return {"error": error, "error_description": f"injected failure (HTTP {status})"}


def _registry_error_body(status: int) -> dict[str, Any]:
    code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
    return {
        "errors": [{"code": code, "message": f"injected failure (HTTP {status})", "detail": None}]
    }


class GcpEmulator:
    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        ca: CertificateAuthority | None = None,
        clock: Callable[[], float] = time.time,
        metadata_port: int = 0,
    ) -> None:
        self._tempdir = None if state_dir else tempfile.TemporaryDirectory(prefix="gcp-emulator-")
        self.state_dir = state_dir or Path(self._tempdir.name)  # type: ignore[union-attr]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or CertificateAuthority(self.state_dir / "tls")
        self._server_cert = self.ca.issue_server_cert(f"gcp-emulator-{uuid.uuid4().hex[:8]}")
        self.iam = GoogleIam(clock)
        self.metadata = MetadataServer(self.iam)
        self.sts = SecurityTokenService(self.iam)
        self.iam_credentials = IamCredentials(self.iam)
        self.oauth2 = OAuth2TokenEndpoint(self.iam)
        self.traffic = Traffic(clock)
        signing_key = new_ec_key()
        signing_cert = cert_pem(self_signed_certificate(signing_key, "gar-token-signer"))
        self.signer = TokenSigner(signing_key, signing_cert)
        # docker-registry's token auth trusts this bundle (``rootcertbundle``).
        self.signing_cert_path = self.state_dir / "gar-token-signer.crt"
        self.signing_cert_path.write_bytes(signing_cert)
        self.registries: dict[str, ArtifactRegistryHost] = {}
        self._metadata_port = metadata_port
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self.metadata_host = ""
        self.apis_url = ""

    @property
    def running(self) -> bool:
        return self._session is not None

    @property
    def ca_path(self) -> Path:
        return self.ca.ca_path

    @property
    def cert_dir(self) -> Path:
        return self.ca.cert_dir

    @property
    def sts_url(self) -> str:
        return f"{self.apis_url}/v1/token"

    @property
    def iam_credentials_url(self) -> str:
        """The base URL of IAM Credentials (``…/v1/projects/-/serviceAccounts/…``)."""
        return self.apis_url

    @property
    def oauth2_token_url(self) -> str:
        return f"{self.apis_url}/token"

    def impersonation_url(self, email: str) -> str:
        return f"{self.apis_url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"

    async def _serve(self, app: web.Application, *, tls: bool, port: int = 0) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        sock = bind_loopback(port)
        bound = int(sock.getsockname()[1])
        ssl_context = self._server_cert.server_ssl_context() if tls else None
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        return bound

    def _new_app(self, error_body: Callable[[int], Mapping[str, Any]]) -> web.Application:
        return web.Application(middlewares=[self.traffic.middleware(error_body)])

    async def start(self) -> None:
        if self.running:
            return
        # The proxy must pass bodies through untouched: no decompression, no cookies.
        self._session = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        metadata = self._new_app(_oauth_error_body)
        self.metadata.add_routes(metadata)
        port = await self._serve(metadata, tls=False, port=self._metadata_port)
        self.metadata_host = f"{LOOPBACK}:{port}"
        apis = self._new_app(_oauth_error_body)
        self.sts.add_routes(apis)
        self.iam_credentials.add_routes(apis)
        self.oauth2.add_routes(apis)
        self.apis_url = f"https://{LOOPBACK}:{await self._serve(apis, tls=True)}"
        self.oauth2.url = self.oauth2_token_url

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

    async def add_registry(
        self, location: str, upstream: str | None = None
    ) -> ArtifactRegistryHost:
        """An Artifact Registry Docker host for ``location`` (what ``LOCATION-docker.pkg.dev``
        is), its ``/v2/`` proxied to ``upstream`` (or later ``host.upstream``)."""
        if not self.running:
            raise RuntimeError("start the emulator before adding registries")
        app = self._new_app(_registry_error_body)
        registry = ArtifactRegistryHost(location, self.iam, self.signer)
        registry.add_routes(app)
        registry.host = f"{LOOPBACK}:{await self._serve(app, tls=True)}"
        registry.upstream = upstream
        registry.proxy_session = self._session
        self.registries[location] = registry
        return registry

    def environment(self) -> dict[str, str]:
        """Variables that point google-auth's metadata server client here."""
        return {"GCE_METADATA_HOST": self.metadata_host, "GCE_METADATA_IP": self.metadata_host}

    def describe(self) -> dict[str, Any]:
        return {
            "metadata_host": self.metadata_host,
            "sts_url": self.sts_url,
            "iam_credentials_url": self.iam_credentials_url,
            "oauth2_token_url": self.oauth2_token_url,
            "ca_path": str(self.ca_path),
            "registries": {n: r.host for n, r in self.registries.items()},
        }
