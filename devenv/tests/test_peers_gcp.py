"""The Google Cloud emulator speaks the protocols google-auth speaks: its own credential
classes (no patching) get tokens from the metadata server, STS, IAM Credentials and the
OAuth 2.0 endpoint, and the Artifact Registry host in front of a real registry lets a
real client pull only with a token issued to an identity allowed to read."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.peers import jws
from devenv.peers.fixtures import (  # noqa: F401 - fixtures
    gar_registry,
    gcp_emulator,
    gcp_metadata_host,
    test_ca,
)
from devenv.peers.gcp import GcpEmulator
from devenv.peers.gcp_iam import CLOUD_PLATFORM_SCOPE
from devenv.peers.oci import dockerconfigjson, skopeo_inspect, write_authfile
from devenv.peers.registry import GarRegistry
from devenv.peers.tls import new_rsa_key
from devenv.peers.traffic import GCP_IAM_CREDENTIALS, GCP_STS_TOKEN

ISSUER = "https://oidc.cluster.example"
PROJECT_NUMBER = "123456789012"
READER = "reader@emulated-project.iam.gserviceaccount.com"


@pytest.fixture
def google_request(gcp_emulator: GcpEmulator) -> Iterator[Any]:
    """google-auth's requests transport, trusting the emulator's CA; closed before the
    emulator stops (an open keep-alive connection would outlive its listener)."""
    import google.auth.transport.requests
    import requests

    with requests.Session() as session:
        # REQUESTS_CA_BUNDLE (set on some machines) would replace ``verify`` otherwise.
        session.trust_env = False
        session.verify = str(gcp_emulator.ca_path)
        yield google.auth.transport.requests.Request(session)


def _utc(naive: datetime.datetime) -> float:
    """google-auth's expiry is a naive UTC datetime."""
    return naive.replace(tzinfo=datetime.UTC).timestamp()


class Issuer:
    """A cluster's service account token issuer (RS256, as the API server signs)."""

    def __init__(self) -> None:
        self.key = new_rsa_key()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jws.public_key_to_jwk(self.key.public_key(), "k1")]}

    def token(self, subject: str, audience: str, issuer: str = ISSUER) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "sub": subject, "aud": [audience], "iat": now, "exp": now + 600}
        return jws.sign({"alg": "RS256", "kid": "k1", "typ": "JWT"}, claims, self.key)


def _federation(gcp: GcpEmulator, issuer: Issuer) -> str:
    provider = gcp.iam.add_provider(
        PROJECT_NUMBER, "pool", "cluster", issuer=ISSUER, jwks=issuer.jwks()
    )
    return provider.name


def _identity_pool(gcp: GcpEmulator, audience: str, token: str, impersonate: str = "") -> Any:
    from google.auth import identity_pool

    class Supplier(identity_pool.SubjectTokenSupplier):  # type: ignore[misc] # Any base
        def get_subject_token(self, context: Any, request: Any) -> str:
            return token

    info: dict[str, Any] = {
        "audience": audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": gcp.sts_url,
        "subject_token_supplier": Supplier(),
    }
    if impersonate:
        info["service_account_impersonation_url"] = gcp.impersonation_url(impersonate)
    return identity_pool.Credentials(**info).with_scopes([CLOUD_PLATFORM_SCOPE])


async def test_metadata_server_serves_the_attached_service_accounts_token(
    gcp_emulator: GcpEmulator, google_request: Any
) -> None:
    from google.auth import compute_engine

    gcp_emulator.iam.add_service_account(READER)
    gcp_emulator.metadata.attach_service_account(READER)
    credentials = compute_engine.Credentials()
    await asyncio.to_thread(credentials.refresh, google_request)
    issued = gcp_emulator.iam.resolve(credentials.token)
    assert issued is not None and issued.member == f"serviceAccount:{READER}"
    assert credentials.service_account_email == READER
    assert abs(_utc(credentials.expiry) - issued.expires_at) < 5  # naive UTC


async def test_metadata_server_without_an_identity_answers_404(
    gcp_emulator: GcpEmulator, google_request: Any
) -> None:
    from google.auth import compute_engine, exceptions

    credentials = compute_engine.Credentials()
    with pytest.raises(exceptions.RefreshError, match="404"):
        await asyncio.to_thread(credentials.refresh, google_request)


async def test_a_cluster_token_is_exchanged_at_sts_for_the_workloads_principal(
    gcp_emulator: GcpEmulator, google_request: Any
) -> None:
    issuer = Issuer()
    audience = _federation(gcp_emulator, issuer)
    subject = "system:serviceaccount:team-a:builder"
    token = issuer.token(subject, "https:" + audience)
    credentials = _identity_pool(gcp_emulator, audience, token)
    await asyncio.to_thread(credentials.refresh, google_request)
    issued = gcp_emulator.iam.resolve(credentials.token)
    assert issued is not None and issued.via == "sts"
    assert issued.member.endswith(f"/workloadIdentityPools/pool/subject/{subject}")
    (exchange,) = gcp_emulator.traffic.requests(GCP_STS_TOKEN)
    assert exchange.form["audience"] == audience
    assert exchange.form["subject_token"] == "<redacted>"
    assert exchange.token_claims["subject_token"]["sub"] == subject


async def test_sts_refuses_a_token_for_another_audience_and_google_auth_says_invalid_grant(
    gcp_emulator: GcpEmulator, google_request: Any
) -> None:
    from google.auth import exceptions

    issuer = Issuer()
    audience = _federation(gcp_emulator, issuer)
    token = issuer.token("system:serviceaccount:team-a:builder", "sts.amazonaws.com")
    credentials = _identity_pool(gcp_emulator, audience, token)
    with pytest.raises(exceptions.OAuthError, match=r"invalid_grant.*audience"):
        await asyncio.to_thread(credentials.refresh, google_request)


async def test_impersonation_needs_workload_identity_user_on_the_service_account(
    gcp_emulator: GcpEmulator, google_request: Any
) -> None:
    from google.auth import exceptions

    issuer = Issuer()
    audience = _federation(gcp_emulator, issuer)
    subject = "system:serviceaccount:team-a:builder"
    account = gcp_emulator.iam.add_service_account(READER)
    credentials = _identity_pool(
        gcp_emulator, audience, issuer.token(subject, "https:" + audience), READER
    )
    with pytest.raises(exceptions.RefreshError, match=r"iam\.serviceAccounts\.getAccessToken"):
        await asyncio.to_thread(credentials.refresh, google_request)
    principal = gcp_emulator.iam.providers[audience].principal(subject)
    gcp_emulator.iam.grant(account.member, "roles/iam.workloadIdentityUser", principal)
    credentials = _identity_pool(
        gcp_emulator, audience, issuer.token(subject, "https:" + audience), READER
    )
    await asyncio.to_thread(credentials.refresh, google_request)
    issued = gcp_emulator.iam.resolve(credentials.token)
    assert issued is not None and issued.member == account.member
    assert issued.via == "iamcredentials"
    # google-auth parsed expireTime into the same second the emulator recorded.
    assert _utc(credentials.expiry) == pytest.approx(issued.expires_at, abs=1)
    assert gcp_emulator.traffic.count(GCP_IAM_CREDENTIALS) == 2


async def test_a_service_account_key_signs_a_jwt_the_oauth2_endpoint_exchanges(
    gcp_emulator: GcpEmulator, google_request: Any
) -> None:
    from google.oauth2 import service_account

    gcp_emulator.iam.add_service_account(READER)
    key = gcp_emulator.iam.create_key(READER, gcp_emulator.oauth2_token_url)
    credentials = service_account.Credentials.from_service_account_info(
        key, scopes=[CLOUD_PLATFORM_SCOPE]
    )
    await asyncio.to_thread(credentials.refresh, google_request)
    issued = gcp_emulator.iam.resolve(credentials.token)
    assert issued is not None and issued.member == f"serviceAccount:{READER}"
    # A key the account no longer has is refused.
    gcp_emulator.iam.service_accounts[READER].keys.clear()
    credentials = service_account.Credentials.from_service_account_info(
        key, scopes=[CLOUD_PLATFORM_SCOPE]
    )
    from google.auth import exceptions

    with pytest.raises(exceptions.RefreshError, match="invalid_grant"):
        await asyncio.to_thread(credentials.refresh, google_request)


async def test_the_registry_lets_a_reader_pull_and_refuses_everyone_else(
    gar_registry: GarRegistry, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    reader = gcp.iam.add_service_account(READER)
    stranger = gcp.iam.add_service_account("stranger@emulated-project.iam.gserviceaccount.com")
    gar_registry.allow_pull(reader.member)

    async def inspect(password: str, username: str = "oauth2accesstoken") -> Any:
        authfile = write_authfile(
            tmp_path / "auth.json", dockerconfigjson(gar_registry.host, username, password)
        )
        return await skopeo_inspect(
            f"{gar_registry.host}/emulated-project/images/hello:v1",
            authfile,
            cert_dir=gcp.cert_dir,
        )

    token, _ = gcp.iam.issue(reader.member, [CLOUD_PLATFORM_SCOPE], "test")
    assert (await inspect(token)).ok
    denied = await inspect(gcp.iam.issue(stranger.member, [CLOUD_PLATFORM_SCOPE], "test")[0])
    assert not denied.ok
    assert "artifactregistry.repositories.downloadArtifacts" in denied.stderr
    assert not (await inspect("ya29.not-issued-here")).ok
    assert not (await inspect(token, username="_json_key")).ok
    # An expired token no longer works.
    gcp.iam.clock = lambda: time.time() + 7200
    assert not (await inspect(token)).ok
