"""ACR credentials from azure-identity's real async credentials against the Azure
emulator (Entra ID over TLS, IMDS, an ACR login server's token service)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from devenv.peers import jws
from devenv.peers.tls import ClientCertificate
from devenv.peers.traffic import ACR_EXCHANGE, ACR_TOKEN, ENTRA_TOKEN, IMDS_TOKEN
from tests.integration.conftest import CLUSTER_ISSUER, Clock
from tests.support.azure import (
    APP_SECRET,
    SECRET_NAMESPACE,
    Azure,
    azure,
    azure_env,
)
from webhook.config.load import parse_config
from webhook.credentials import ACR_USERNAME, RegistryAuthError

#: Fixtures, used by name.
__all__ = ["azure", "azure_env"]


async def test_a_service_principal_secret_is_exchanged_for_an_acr_refresh_token(
    azure: Azure,
) -> None:
    app = azure.app_with_pull()
    config = azure.config(azure.sp_auth(app))
    async with azure.cache(config) as cache:
        credential = await cache.get(azure.need(config), "team-a")
    claims = jws.decode_unverified(credential.password).claims
    assert credential.username == ACR_USERNAME
    assert credential.hosts == (azure.host,)
    assert claims["aud"] == azure.host
    assert credential.expires_at == claims["exp"]  # read from the token, not assumed
    assert 3 * 3600 - 60 < credential.lifetime <= 3 * 3600
    (exchange,) = azure.emulator.traffic.requests(ACR_EXCHANGE)
    assert exchange.form["grant_type"] == "access_token"
    assert exchange.form["service"] == azure.host
    assert exchange.form["tenant"] == azure.tenant
    assert exchange.token_claims["access_token"]["aud"] == "https://containerregistry.azure.net"


@pytest.mark.parametrize("kubernetes_tls", [False, True], ids=["tls-pem", "kubernetes-tls"])
async def test_a_service_principal_certificate_from_a_secret_signs_the_assertion(
    azure: Azure, tmp_path: Path, kubernetes_tls: bool
) -> None:
    cert = ClientCertificate.create(tmp_path / "sp", "psw-sp")
    app = azure.app_with_pull(certificate=cert.certificate)
    pem = cert.pem_path.read_bytes()
    if kubernetes_tls:
        key_end = pem.index(b"-----END PRIVATE KEY-----") + len(b"-----END PRIVATE KEY-----")
        data = {"tls.key": pem[:key_end], "tls.crt": pem[key_end:].strip()}
    else:
        data = {"tls.pem": pem}
    azure.kube.put_secret(SECRET_NAMESPACE, "sp-cert", data)
    auth = {
        "mode": "servicePrincipal",
        "tenantId": azure.tenant,
        "clientId": app.client_id,
        "certificateRef": {"name": "sp-cert"},
    }
    config = azure.config(auth)
    async with azure.cache(config) as cache:
        await cache.get(azure.need(config), "team-a")
    (token_request,) = azure.emulator.traffic.requests(ENTRA_TOKEN)
    assert token_request.token_claims["client_assertion"]["sub"] == app.client_id


async def test_a_service_principal_secret_file_is_read(azure: Azure, tmp_path: Path) -> None:
    app = azure.app_with_pull()
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(APP_SECRET + "\n")
    auth = {
        "mode": "servicePrincipal",
        "tenantId": azure.tenant,
        "clientId": app.client_id,
        "clientSecretFile": str(secret_file),
    }
    config = azure.config(auth)
    async with azure.cache(config) as cache:
        credential = await cache.get(azure.need(config), "team-a")
    assert credential.username == ACR_USERNAME


async def test_a_managed_identity_is_selected_by_client_id_at_imds(azure: Azure) -> None:
    azure.emulator.add_managed_identity(azure.tenant)  # another identity on the node
    identity = azure.emulator.add_managed_identity(azure.tenant)
    azure.registry.assign_role(identity.object_id)
    config = azure.config({"mode": "managedIdentity", "clientId": identity.client_id})
    async with azure.cache(config) as cache:
        await cache.get(azure.need(config), "team-a")
    (imds,) = azure.emulator.traffic.requests(IMDS_TOKEN)
    assert imds.query["client_id"] == identity.client_id
    assert imds.query["resource"] == "https://containerregistry.azure.net"
    assert imds.headers["Metadata"] == "true"
    (exchange,) = azure.emulator.traffic.requests(ACR_EXCHANGE)
    assert exchange.token_claims["access_token"]["oid"] == identity.object_id
    assert azure.count(ENTRA_TOKEN) == 0


async def test_a_managed_identity_is_selected_by_resource_id_at_imds(azure: Azure) -> None:
    base = f"/subscriptions/{azure.tenant}/resourceGroups/rg/providers/"
    resource_id = base + "Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    azure.emulator.add_managed_identity(azure.tenant, resource_id=base + "other")
    identity = azure.emulator.add_managed_identity(azure.tenant, resource_id=resource_id)
    azure.registry.assign_role(identity.object_id)
    config = azure.config({"mode": "managedIdentity", "resourceId": resource_id})
    async with azure.cache(config) as cache:
        await cache.get(azure.need(config), "team-a")
    (exchange,) = azure.emulator.traffic.requests(ACR_EXCHANGE)
    assert exchange.token_claims["access_token"]["oid"] == identity.object_id


async def test_workload_identity_presents_the_webhook_token_file(
    azure: Azure, tmp_path: Path
) -> None:
    app = azure.app_with_pull()
    subject = "system:serviceaccount:pull-secret-webhook:pull-secret-webhook"
    azure.emulator.add_federated_credential(
        azure.tenant, app.client_id, issuer=CLUSTER_ISSUER, subject=subject
    )
    azure.kube.put_service_account("pull-secret-webhook", "pull-secret-webhook")
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(
        await azure.kube.token(
            "pull-secret-webhook", "pull-secret-webhook", "api://AzureADTokenExchange", 3600
        )
    )
    auth = {
        "mode": "workloadIdentity",
        "tenantId": azure.tenant,
        "clientId": app.client_id,
        "tokenFile": str(token_file),
    }
    config = azure.config(auth)
    async with azure.cache(config) as cache:
        await cache.get(azure.need(config), "team-a")
    (token_request,) = azure.emulator.traffic.requests(ENTRA_TOKEN)
    assert token_request.token_claims["client_assertion"]["sub"] == subject


async def test_workload_identity_falls_back_to_the_azure_environment(
    azure: Azure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = azure.app_with_pull()
    subject = "system:serviceaccount:pull-secret-webhook:default"
    azure.emulator.add_federated_credential(
        azure.tenant, app.client_id, issuer=CLUSTER_ISSUER, subject=subject
    )
    azure.kube.put_service_account("pull-secret-webhook", "default")
    token_file = tmp_path / "token"
    token_file.write_text(
        await azure.kube.token("pull-secret-webhook", "default", "api://AzureADTokenExchange", 3600)
    )
    monkeypatch.setenv("AZURE_TENANT_ID", azure.tenant)
    monkeypatch.setenv("AZURE_CLIENT_ID", app.client_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", azure.emulator.authority_host)
    config = parse_config(
        {
            "caFile": str(azure.emulator.ca_path),
            "registries": [{"name": "contoso", "kind": "acr", "hosts": [azure.host]}],
        }
    )
    async with azure.cache(config) as cache:
        credential = await cache.get(azure.need(config), "team-a")
    assert credential.username == ACR_USERNAME


async def test_a_pod_service_account_is_exchanged_under_its_annotated_identity(
    azure: Azure,
) -> None:
    app = azure.app_with_pull()
    subject = "system:serviceaccount:team-a:builder"
    azure.emulator.add_federated_credential(
        azure.tenant, app.client_id, issuer=CLUSTER_ISSUER, subject=subject
    )
    azure.kube.put_service_account(
        "team-a",
        "builder",
        **{
            "azure.workload.identity/client-id": app.client_id,
            "azure.workload.identity/tenant-id": azure.tenant,
        },
    )
    config = azure.config({"mode": "podServiceAccount"})
    async with azure.cache(config) as cache:
        credential = await cache.get(azure.need(config, "builder"), "team-a")
    assert credential.username == ACR_USERNAME
    assert azure.kube.token_requests == [("team-a", "builder", "api://AzureADTokenExchange", 600)]
    (token_request,) = azure.emulator.traffic.requests(ENTRA_TOKEN)
    assert token_request.form["client_id"] == app.client_id
    assert token_request.token_claims["client_assertion"]["sub"] == subject


async def test_a_scope_narrows_the_token_to_the_listed_repositories(azure: Azure) -> None:
    app = azure.app_with_pull()
    config = azure.config(azure.sp_auth(app), scope="repository:demo/hello:pull repository:x:pull")
    async with azure.cache(config) as cache:
        credential = await cache.get(azure.need(config), "team-a")
    claims = jws.decode_unverified(credential.password).claims
    assert {a["name"] for a in claims["access"]} == {"demo/hello", "x"}
    assert credential.expires_at == claims["exp"]
    assert 75 * 60 - 60 < credential.lifetime <= 75 * 60
    (token,) = azure.emulator.traffic.requests(ACR_TOKEN)
    assert token.form["grant_type"] == "refresh_token"


async def test_two_hundred_concurrent_gets_make_exactly_one_exchange(azure: Azure) -> None:
    app = azure.app_with_pull()
    config = azure.config(azure.sp_auth(app))
    async with azure.cache(config) as cache:
        results = await asyncio.gather(
            *(cache.get(azure.need(config), f"ns-{i % 7}") for i in range(200))
        )
    assert len({r.password for r in results}) == 1
    assert (azure.count(ENTRA_TOKEN), azure.count(ACR_EXCHANGE)) == (1, 1)


async def test_a_token_past_the_refresh_fraction_is_exchanged_again_and_not_before(
    azure: Azure,
) -> None:
    app = azure.app_with_pull()
    config = azure.config(azure.sp_auth(app))
    clock = Clock()
    async with azure.cache(config, clock=clock, fraction=0.5) as cache:
        first = await cache.get(azure.need(config), "team-a")
        clock.now = first.refresh_at(0.5) - 1
        await cache.get(azure.need(config), "team-a")
        assert azure.count(ACR_EXCHANGE) == 1
        clock.now = first.refresh_at(0.5) + 1
        await cache.get(azure.need(config), "team-a")
        assert azure.count(ACR_EXCHANGE) == 2
    # The Entra token is still valid: the SDK's own cache answers.
    assert azure.count(ENTRA_TOKEN) == 1


async def test_without_the_extra_ca_the_emulator_certificate_is_refused_with_a_hint(
    azure: Azure,
) -> None:
    app = azure.app_with_pull()
    config = azure.config(azure.sp_auth(app), ca=False)
    async with azure.cache(config) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(azure.need(config), "team-a")
    error = caught.value
    assert (error.step, error.code, error.transient) == ("entra-token", "tls", False)
    assert "caFile" in error.hint


async def test_tokens_and_secrets_never_reach_errors_or_logs(
    azure: Azure, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = azure.app_with_pull()
    config = azure.config(azure.sp_auth(app))
    clock = Clock()
    async with azure.cache(config, clock=clock) as cache:
        first = await cache.get(azure.need(config), "team-a")
        azure.registry.remove_role(app.object_id)
        clock.now = first.expires_at  # expired: the next get exchanges again
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(azure.need(config), "team-a")
    for text in (caplog.text, str(caught.value)):
        assert "eyJ" not in text  # no JWT of any kind
        assert APP_SECRET not in text
