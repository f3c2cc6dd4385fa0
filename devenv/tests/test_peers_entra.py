"""azure-identity's real async credentials against the Entra ID emulator."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)

from devenv.peers import jws
from devenv.peers.azure import AzureEmulator
from devenv.peers.directory import CONTAINER_REGISTRY_RESOURCE, WORKLOAD_IDENTITY_AUDIENCE
from devenv.peers.fixtures import azure_emulator, test_ca  # noqa: F401 - fixtures
from devenv.peers.tls import ClientCertificate, new_rsa_key
from devenv.peers.traffic import ENTRA_TOKEN, REDACTED

ACR_SCOPE = f"{CONTAINER_REGISTRY_RESOURCE}/.default"
KUBE_ISSUER = "https://kubernetes.default.svc.cluster.local"
SA_SUBJECT = "system:serviceaccount:team-a:builder"


def _secret_credential(
    emulator: AzureEmulator, tenant: str, client: str, secret: str
) -> ClientSecretCredential:
    return ClientSecretCredential(
        tenant,
        client,
        secret,
        authority=emulator.authority_host,
        connection_verify=str(emulator.ca_path),
    )


def _service_account_token(
    path: Path, key: jws.PrivateKey, *, subject: str = SA_SUBJECT, lifetime: int = 3600
) -> Path:
    now = int(time.time())
    claims = {
        "iss": KUBE_ISSUER,
        "sub": subject,
        "aud": [WORKLOAD_IDENTITY_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
    }
    path.write_text(jws.sign({"alg": "RS256", "kid": "sa-key"}, claims, key))
    return path


async def test_a_client_secret_credential_gets_a_registry_token_signed_by_the_emulator(
    azure_emulator: AzureEmulator,
) -> None:
    tenant = azure_emulator.add_tenant()
    app = azure_emulator.register_app(tenant, secret="correct-horse-battery")
    async with _secret_credential(
        azure_emulator, tenant, app.client_id, "correct-horse-battery"
    ) as cred:
        token = await cred.get_token(ACR_SCOPE)

    decoded = jws.decode_unverified(token.token)
    assert jws.verify_signature(decoded, azure_emulator.directory.signing_key.public_key())
    claims = decoded.claims
    assert claims["aud"] == CONTAINER_REGISTRY_RESOURCE
    assert claims["iss"] == f"https://sts.windows.net/{tenant}/"
    assert (claims["tid"], claims["oid"], claims["appid"]) == (tenant, app.object_id, app.client_id)
    assert claims["exp"] - claims["iat"] == azure_emulator.directory.token_lifetime
    assert token.expires_on == pytest.approx(claims["exp"], abs=5)
    [request] = azure_emulator.traffic.requests(ENTRA_TOKEN)
    assert request.path == f"/{tenant}/oauth2/v2.0/token"
    assert request.form["client_secret"] == REDACTED
    assert request.form["scope"] == ACR_SCOPE


async def test_a_wrong_client_secret_fails_with_aadsts7000215(
    azure_emulator: AzureEmulator,
) -> None:
    tenant = azure_emulator.add_tenant()
    app = azure_emulator.register_app(tenant, secret="right")
    async with _secret_credential(azure_emulator, tenant, app.client_id, "wrong") as cred:
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000215") as raised:
            await cred.get_token(ACR_SCOPE)
    assert raised.value.response is not None
    assert raised.value.response.status_code == 401


async def test_an_unknown_app_fails_with_aadsts700016(azure_emulator: AzureEmulator) -> None:
    tenant = azure_emulator.add_tenant()
    async with _secret_credential(azure_emulator, tenant, "no-such-app", "x") as cred:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700016"):
            await cred.get_token(ACR_SCOPE)


async def test_an_unknown_tenant_fails_with_aadsts90002(azure_emulator: AzureEmulator) -> None:
    async with _secret_credential(azure_emulator, "no-such-tenant", "app", "x") as cred:
        with pytest.raises(ClientAuthenticationError, match="AADSTS90002"):
            await cred.get_token(ACR_SCOPE)


async def test_a_certificate_credential_signs_an_assertion_the_emulator_verifies(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant = azure_emulator.add_tenant()
    client_cert = ClientCertificate.create(tmp_path, "sp-cert")
    app = azure_emulator.register_app(tenant, certificate=client_cert.certificate)
    async with CertificateCredential(
        tenant,
        app.client_id,
        certificate_path=str(client_cert.pem_path),
        authority=azure_emulator.authority_host,
        connection_verify=str(azure_emulator.ca_path),
    ) as cred:
        token = await cred.get_token(ACR_SCOPE)

    claims = jws.decode_unverified(token.token).claims
    assert claims["appid"] == app.client_id
    assert claims["appidacr"] == "2"
    [request] = azure_emulator.traffic.requests(ENTRA_TOKEN)
    assert request.form["client_assertion"] == REDACTED
    assert request.token_claims["client_assertion"]["sub"] == app.client_id


async def test_a_certificate_not_registered_on_the_app_fails_with_aadsts700027(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant = azure_emulator.add_tenant()
    registered = ClientCertificate.create(tmp_path, "registered")
    presented = ClientCertificate.create(tmp_path, "presented")
    app = azure_emulator.register_app(tenant, certificate=registered.certificate)
    async with CertificateCredential(
        tenant,
        app.client_id,
        certificate_path=str(presented.pem_path),
        authority=azure_emulator.authority_host,
        connection_verify=str(azure_emulator.ca_path),
    ) as cred:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
            await cred.get_token(ACR_SCOPE)


def _workload_credential(
    emulator: AzureEmulator, tenant: str, client_id: str, token_file: Path
) -> WorkloadIdentityCredential:
    return WorkloadIdentityCredential(
        tenant_id=tenant,
        client_id=client_id,
        token_file_path=str(token_file),
        authority=emulator.authority_host,
        connection_verify=str(emulator.ca_path),
    )


def _federated_app(emulator: AzureEmulator, subject: str = SA_SUBJECT) -> tuple[str, str]:
    """A tenant and the client id of an app in it that trusts ``subject`` of KUBE_ISSUER."""
    tenant = emulator.add_tenant()
    app = emulator.register_app(tenant)
    emulator.add_federated_credential(tenant, app.client_id, issuer=KUBE_ISSUER, subject=subject)
    return tenant, app.client_id


async def _workload_refused(
    emulator: AzureEmulator, tenant: str, client_id: str, token_file: Path, code: str
) -> ClientAuthenticationError:
    """The workload identity exchange with ``token_file``, refused with Entra ID's ``code``."""
    async with _workload_credential(emulator, tenant, client_id, token_file) as cred:
        with pytest.raises(ClientAuthenticationError, match=code) as raised:
            await cred.get_token(ACR_SCOPE)
    return raised.value


async def test_a_workload_identity_token_is_exchanged_when_a_federated_credential_matches(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant = azure_emulator.add_tenant()
    identity = azure_emulator.add_managed_identity(tenant, attach=False)
    azure_emulator.add_federated_credential(
        tenant, identity.client_id, issuer=KUBE_ISSUER, subject=SA_SUBJECT
    )
    sa_key = new_rsa_key()
    azure_emulator.register_issuer_keys(KUBE_ISSUER, [sa_key.public_key()])
    token_file = _service_account_token(tmp_path / "token", sa_key)
    async with _workload_credential(azure_emulator, tenant, identity.client_id, token_file) as cred:
        token = await cred.get_token(ACR_SCOPE)

    assert jws.decode_unverified(token.token).claims["oid"] == identity.object_id
    [request] = azure_emulator.traffic.requests(ENTRA_TOKEN)
    assert request.token_claims["client_assertion"]["sub"] == SA_SUBJECT


async def test_a_service_account_without_a_federated_credential_fails_with_aadsts700213(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant, client_id = _federated_app(azure_emulator, "system:serviceaccount:team-b:builder")
    token_file = _service_account_token(tmp_path / "token", new_rsa_key())
    refused = await _workload_refused(azure_emulator, tenant, client_id, token_file, "AADSTS700213")
    assert SA_SUBJECT in str(refused)


async def test_an_app_with_no_federated_credentials_fails_with_aadsts70021(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant = azure_emulator.add_tenant()
    app = azure_emulator.register_app(tenant, secret="unused")
    token_file = _service_account_token(tmp_path / "token", new_rsa_key())
    await _workload_refused(azure_emulator, tenant, app.client_id, token_file, "AADSTS70021")


async def test_an_expired_service_account_token_fails_with_aadsts700024(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant, client_id = _federated_app(azure_emulator)
    # Expired by more than the tolerated clock skew.
    token_file = _service_account_token(tmp_path / "token", new_rsa_key(), lifetime=-3600)
    await _workload_refused(azure_emulator, tenant, client_id, token_file, "AADSTS700024")


async def test_a_service_account_token_signed_by_an_unregistered_key_fails_with_aadsts700027(
    azure_emulator: AzureEmulator, tmp_path: Path
) -> None:
    tenant, client_id = _federated_app(azure_emulator)
    azure_emulator.register_issuer_keys(KUBE_ISSUER, [new_rsa_key().public_key()])
    token_file = _service_account_token(tmp_path / "token", new_rsa_key())
    await _workload_refused(azure_emulator, tenant, client_id, token_file, "AADSTS700027")


async def test_an_injected_entra_outage_reaches_the_client_as_an_authentication_error(
    azure_emulator: AzureEmulator,
) -> None:
    tenant = azure_emulator.add_tenant()
    app = azure_emulator.register_app(tenant, secret="s")
    azure_emulator.traffic.inject_fault(ENTRA_TOKEN, status=400, count=1)
    async with _secret_credential(azure_emulator, tenant, app.client_id, "s") as cred:
        with pytest.raises(ClientAuthenticationError):
            await cred.get_token(ACR_SCOPE)
        token = await cred.get_token(ACR_SCOPE)
    assert token.token
    assert [r.status for r in azure_emulator.traffic.requests(ENTRA_TOKEN)] == [400, 200]


async def test_tokens_verify_with_the_keys_published_at_the_discovery_endpoint(
    azure_emulator: AzureEmulator,
) -> None:
    tenant = azure_emulator.add_tenant()
    app = azure_emulator.register_app(tenant, secret="s")
    async with _secret_credential(azure_emulator, tenant, app.client_id, "s") as cred:
        token = await cred.get_token(ACR_SCOPE)
    connector = aiohttp.TCPConnector(ssl=azure_emulator.ca.client_ssl_context())
    url = f"{azure_emulator.authority_host}/{tenant}/discovery/v2.0/keys"
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url) as response,
    ):
        keys = dict(jws.jwks_keys(await response.json()))
    decoded = jws.decode_unverified(token.token)
    assert jws.verify_signature(decoded, keys[decoded.header["kid"]])
