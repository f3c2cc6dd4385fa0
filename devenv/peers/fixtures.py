"""Pytest fixtures for the local protocol peers; conftest files import them.

- ``test_ca``: a ``CertificateAuthority`` in the test's tmp dir.
- ``azure_emulator``: a started ``AzureEmulator`` (Entra ID, IMDS; add registries).
- ``oci_registry_token``: an ACR login server on the emulator in front of a real
  docker-registry in token mode, with one image pushed (``TokenRegistry``).
- ``oci_registry_basic``: a docker-registry with htpasswd basic auth, user
  ``AWS``, with one image pushed (``BasicRegistry``).
- ``moto_server``: the endpoint URL of a moto server with fresh state.
- ``gcp_emulator``: a started ``GcpEmulator`` (metadata server, STS, IAM Credentials,
  OAuth 2.0) whose metadata server listens where ``GCE_METADATA_HOST`` says; add
  Artifact Registry hosts.
- ``gar_registry``: an Artifact Registry host on that emulator in front of a real
  docker-registry in token mode, with one image pushed (``GarRegistry``).

Registry fixtures need ``docker-registry`` and ``skopeo``: they skip without
them, and fail under CI=true, where a missing binary is a setup bug.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from devenv.peers.acr import ACR_ISSUER, TOKEN_USERNAME
from devenv.peers.artifactregistry import GAR_ISSUER
from devenv.peers.artifactregistry import TOKEN_USERNAME as GAR_USERNAME
from devenv.peers.aws import MotoServer
from devenv.peers.azure import AzureEmulator
from devenv.peers.gcp import GcpEmulator
from devenv.peers.gcp_iam import CLOUD_PLATFORM_SCOPE
from devenv.peers.oci import (
    build_oci_layout,
    dockerconfigjson,
    skopeo_push,
    write_authfile,
)
from devenv.peers.registry import (
    ECR_USERNAME,
    GAR_SEED_REPOSITORY,
    REGISTRY_BINARY,
    SEED_REPOSITORY,
    SEED_TAG,
    SKOPEO_BINARY,
    BasicRegistry,
    DockerRegistry,
    GarRegistry,
    TokenRegistry,
    missing_binaries,
)
from devenv.peers.tls import CertificateAuthority
from devenv.serve import free_port


def require_binaries(*names: str) -> None:
    missing = missing_binaries(*names)
    if not missing:
        return
    message = f"missing {', '.join(missing)}: install with `make system-deps`"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def test_ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca")


@pytest_asyncio.fixture
async def azure_emulator(
    tmp_path: Path, test_ca: CertificateAuthority
) -> AsyncIterator[AzureEmulator]:
    async with AzureEmulator(tmp_path / "azure", ca=test_ca) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def oci_registry_token(
    tmp_path: Path, azure_emulator: AzureEmulator
) -> AsyncIterator[TokenRegistry]:
    """Registry ``acr`` on the emulator, backed by docker-registry, holding
    ``demo/hello:v1``. Nobody has a role on it yet; the seeding traffic is
    cleared from the emulator's records."""
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    acr = await azure_emulator.add_registry("acr")
    registry = DockerRegistry.token_auth(
        tmp_path / "registry-token",
        realm=acr.realm,
        service=acr.login_server,
        issuer=ACR_ISSUER,
        rootcertbundle=azure_emulator.acr_signing_cert_path,
    )
    registry.start()
    try:
        acr.upstream = registry.url
        image = build_oci_layout(tmp_path / "seed-image", SEED_TAG)
        # Push as a throwaway principal holding AcrPush only for the push.
        pusher = "seed-pusher"
        acr.assign_role(pusher, "AcrPush")
        authfile = write_authfile(
            tmp_path / "seed-auth.json",
            dockerconfigjson(acr.login_server, TOKEN_USERNAME, acr.mint_refresh_token(pusher)),
        )
        result = await skopeo_push(
            image,
            f"{acr.login_server}/{SEED_REPOSITORY}:{SEED_TAG}",
            authfile,
            cert_dir=azure_emulator.cert_dir,
        )
        acr.remove_role(pusher)
        authfile.unlink()
        assert result.ok, f"seeding push failed: {result.stderr}\n{registry.log_tail()}"
        azure_emulator.traffic.clear()
        yield TokenRegistry(azure_emulator, acr, registry, image)
    finally:
        registry.stop()


@pytest_asyncio.fixture
async def oci_registry_basic(tmp_path: Path) -> AsyncIterator[BasicRegistry]:
    """docker-registry with htpasswd auth for user AWS and a random password,
    holding ``demo/hello:v1`` (plain HTTP: use ``tls_verify=False``)."""
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    password = secrets.token_urlsafe(24)
    registry = DockerRegistry.htpasswd_auth(tmp_path / "registry-basic", {ECR_USERNAME: password})
    registry.start()
    try:
        image = build_oci_layout(tmp_path / "seed-image-basic", SEED_TAG)
        authfile = write_authfile(
            tmp_path / "seed-basic-auth.json",
            dockerconfigjson(registry.host, ECR_USERNAME, password),
        )
        result = await skopeo_push(
            image, f"{registry.host}/{SEED_REPOSITORY}:{SEED_TAG}", authfile, tls_verify=False
        )
        authfile.unlink()
        assert result.ok, f"seeding push failed: {result.stderr}\n{registry.log_tail()}"
        yield BasicRegistry(registry, ECR_USERNAME, password, image)
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def moto_process() -> Iterator[MotoServer]:
    """One moto server per session: it takes about a second to import and start."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def moto_server(moto_process: MotoServer) -> str:
    moto_process.reset()
    return moto_process.endpoint_url


def claim_gcp_metadata_host() -> str:
    """``GCE_METADATA_HOST`` (and ``GCE_METADATA_IP``) on a free loopback port, unless they
    already name one. google-auth reads the first once, when its metadata module is
    imported: the test plugin calls this before any test module is imported."""
    host = os.environ.get("GCE_METADATA_HOST", "")
    if not host.startswith("127.0.0.1:"):
        host = f"127.0.0.1:{free_port()}"
        os.environ["GCE_METADATA_HOST"] = host
        os.environ["GCE_METADATA_IP"] = host
    return host


@pytest.fixture(scope="session")
def gcp_metadata_host() -> str:
    """Where every ``gcp_emulator`` of this session serves its metadata server."""
    host = claim_gcp_metadata_host()
    metadata = sys.modules.get("google.auth.compute_engine._metadata")
    imported = getattr(metadata, "_GCE_METADATA_HOST", host)
    assert imported == host, (
        f"google-auth was imported with GCE_METADATA_HOST={imported}, before the emulator's "
        f"{host} was set"
    )
    return host


@pytest_asyncio.fixture
async def gcp_emulator(
    tmp_path: Path, test_ca: CertificateAuthority, gcp_metadata_host: str
) -> AsyncIterator[GcpEmulator]:
    port = int(gcp_metadata_host.rsplit(":", 1)[1])
    async with GcpEmulator(tmp_path / "gcp", ca=test_ca, metadata_port=port) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def gar_registry(tmp_path: Path, gcp_emulator: GcpEmulator) -> AsyncIterator[GarRegistry]:
    """Artifact Registry host ``us`` on the emulator, backed by docker-registry, holding
    ``GAR_SEED_REPOSITORY:v1``. Nobody may read it yet; the seeding traffic and token are
    forgotten."""
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    gar = await gcp_emulator.add_registry("us")
    registry = DockerRegistry.token_auth(
        tmp_path / "registry-gar",
        realm=gar.realm,
        service=gar.host,
        issuer=GAR_ISSUER,
        rootcertbundle=gcp_emulator.signing_cert_path,
    )
    registry.start()
    try:
        gar.upstream = registry.url
        image = build_oci_layout(tmp_path / "seed-image-gar", SEED_TAG)
        # Push as a throwaway service account holding the writer role only for the push.
        pusher = gcp_emulator.iam.add_service_account(
            "seed-pusher@emulated.iam.gserviceaccount.com"
        )
        resource = "repository:" + "/".join(GAR_SEED_REPOSITORY.split("/")[:2])
        gcp_emulator.iam.grant(resource, "roles/artifactregistry.writer", pusher.member)
        token, _ = gcp_emulator.iam.issue(pusher.member, [CLOUD_PLATFORM_SCOPE], "seed")
        authfile = write_authfile(
            tmp_path / "seed-gar-auth.json", dockerconfigjson(gar.host, GAR_USERNAME, token)
        )
        result = await skopeo_push(
            image,
            f"{gar.host}/{GAR_SEED_REPOSITORY}:{SEED_TAG}",
            authfile,
            cert_dir=gcp_emulator.cert_dir,
        )
        gcp_emulator.iam.revoke(resource, "roles/artifactregistry.writer", pusher.member)
        del gcp_emulator.iam.tokens[token]
        authfile.unlink()
        assert result.ok, f"seeding push failed: {result.stderr}\n{registry.log_tail()}"
        gcp_emulator.traffic.clear()
        yield GarRegistry(gcp_emulator, gar, registry, image)
    finally:
        registry.stop()
