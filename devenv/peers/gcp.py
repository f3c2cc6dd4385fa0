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

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devenv.peers.artifactregistry import ArtifactRegistryHost
from devenv.peers.gcp_endpoints import (
    IamCredentials,
    MetadataServer,
    OAuth2TokenEndpoint,
    SecurityTokenService,
)
from devenv.peers.gcp_iam import GoogleIam
from devenv.peers.loopback import (
    LOOPBACK,
    LoopbackEmulator,
    oauth_error_body,
    registry_error_body,
)
from devenv.peers.tls import CertificateAuthority


class GcpEmulator(LoopbackEmulator):
    NAME = "gcp-emulator"

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        ca: CertificateAuthority | None = None,
        clock: Callable[[], float] = time.time,
        metadata_port: int = 0,
    ) -> None:
        super().__init__(state_dir, ca=ca, clock=clock)
        self.iam = GoogleIam(clock)
        self.metadata = MetadataServer(self.iam)
        self.sts = SecurityTokenService(self.iam)
        self.iam_credentials = IamCredentials(self.iam)
        self.oauth2 = OAuth2TokenEndpoint(self.iam)
        self.signer, self.signing_cert_path = self._token_signer("gar-token-signer")
        self.registries: dict[str, ArtifactRegistryHost] = {}
        self._metadata_port = metadata_port
        self.metadata_host = ""
        self.apis_url = ""

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

    async def _listen(self) -> None:
        metadata = self._new_app(oauth_error_body)
        self.metadata.add_routes(metadata)
        port = await self._serve(metadata, tls=False, port=self._metadata_port)
        self.metadata_host = f"{LOOPBACK}:{port}"
        apis = self._new_app(oauth_error_body)
        self.sts.add_routes(apis)
        self.iam_credentials.add_routes(apis)
        self.oauth2.add_routes(apis)
        self.apis_url = f"https://{LOOPBACK}:{await self._serve(apis, tls=True)}"
        self.oauth2.url = self.oauth2_token_url

    async def add_registry(
        self, location: str, upstream: str | None = None
    ) -> ArtifactRegistryHost:
        """An Artifact Registry Docker host for ``location`` (what ``LOCATION-docker.pkg.dev``
        is), its ``/v2/`` proxied to ``upstream`` (or later ``host.upstream``)."""
        if not self.running:
            raise RuntimeError("start the emulator before adding registries")
        app = self._new_app(registry_error_body)
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
