"""azure-identity's ManagedIdentityCredential against the emulated IMDS."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import aiohttp
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.identity.aio import ManagedIdentityCredential

from devenv.peers import jws
from devenv.peers.azure import AzureEmulator
from devenv.peers.directory import CONTAINER_REGISTRY_RESOURCE
from devenv.peers.fixtures import azure_emulator, test_ca  # noqa: F401 - fixtures
from devenv.peers.imds import TOKEN_PATH
from devenv.peers.traffic import IMDS_TOKEN

ACR_SCOPE = f"{CONTAINER_REGISTRY_RESOURCE}/.default"
# Variables that would make ManagedIdentityCredential pick another source than IMDS.
_OTHER_SOURCES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@pytest.fixture
def imds_env(azure_emulator: AzureEmulator, monkeypatch: pytest.MonkeyPatch) -> AzureEmulator:
    for name in _OTHER_SOURCES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", azure_emulator.imds_host)
    return azure_emulator


async def test_a_user_assigned_identity_selected_by_client_id_gets_a_token(
    imds_env: AzureEmulator,
) -> None:
    tenant = imds_env.add_tenant()
    imds_env.add_managed_identity(tenant)  # another identity on the same host
    wanted = imds_env.add_managed_identity(tenant)
    async with ManagedIdentityCredential(client_id=wanted.client_id) as cred:
        token = await cred.get_token(ACR_SCOPE)

    claims = jws.decode_unverified(token.token).claims
    assert (claims["appid"], claims["oid"], claims["tid"]) == (
        wanted.client_id,
        wanted.object_id,
        tenant,
    )
    assert claims["aud"] == CONTAINER_REGISTRY_RESOURCE
    [request] = imds_env.traffic.requests(IMDS_TOKEN)
    assert request.query["client_id"] == wanted.client_id
    assert request.headers["Metadata"] == "true"


async def test_an_identity_selected_by_resource_id_or_object_id_gets_its_own_token(
    imds_env: AzureEmulator,
) -> None:
    tenant = imds_env.add_tenant()
    resource_id = (
        "/subscriptions/s/resourceGroups/rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/pull"
    )
    by_resource = imds_env.add_managed_identity(tenant, resource_id=resource_id)
    by_object = imds_env.add_managed_identity(tenant)
    async with ManagedIdentityCredential(
        identity_config={"msi_res_id": resource_id.upper()}
    ) as cred:
        token = await cred.get_token(ACR_SCOPE)
    assert jws.decode_unverified(token.token).claims["xms_mirid"] == resource_id
    async with ManagedIdentityCredential(
        identity_config={"object_id": by_object.object_id}
    ) as cred:
        token = await cred.get_token(ACR_SCOPE)
    assert jws.decode_unverified(token.token).claims["oid"] == by_object.object_id
    assert by_resource.object_id != by_object.object_id


async def test_the_system_assigned_identity_answers_when_no_identity_is_named(
    imds_env: AzureEmulator,
) -> None:
    tenant = imds_env.add_tenant()
    imds_env.add_managed_identity(tenant)
    system = imds_env.add_managed_identity(tenant, system_assigned=True)
    async with ManagedIdentityCredential() as cred:
        token = await cred.get_token(ACR_SCOPE)
    assert jws.decode_unverified(token.token).claims["oid"] == system.object_id


async def test_an_identity_not_on_the_host_is_credential_unavailable(
    imds_env: AzureEmulator,
) -> None:
    tenant = imds_env.add_tenant()
    imds_env.add_managed_identity(tenant)
    async with ManagedIdentityCredential(client_id="not-assigned-here") as cred:
        with pytest.raises(CredentialUnavailableError, match="Identity not found"):
            await cred.get_token(ACR_SCOPE)


async def test_a_server_error_from_imds_is_an_authentication_error_after_retries_are_spent(
    imds_env: AzureEmulator,
) -> None:
    tenant = imds_env.add_tenant()
    identity = imds_env.add_managed_identity(tenant)
    imds_env.traffic.inject_fault(IMDS_TOKEN, status=500, count=2)
    async with ManagedIdentityCredential(client_id=identity.client_id, retry_total=1) as cred:
        with pytest.raises(ClientAuthenticationError):
            await cred.get_token(ACR_SCOPE)
    assert [r.status for r in imds_env.traffic.requests(IMDS_TOKEN)] == [500, 500]


async def test_imds_refuses_a_request_without_the_metadata_header_and_echoes_the_resource(
    azure_emulator: AzureEmulator,
) -> None:
    tenant = azure_emulator.add_tenant()
    azure_emulator.add_managed_identity(tenant, system_assigned=True)
    url = azure_emulator.imds_host + TOKEN_PATH
    # A trailing slash, as older clients send: IMDS must echo the resource as given.
    params = {"api-version": "2018-02-01", "resource": CONTAINER_REGISTRY_RESOURCE + "/"}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params=params) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "invalid_request"
        async with session.get(url, params=params, headers={"Metadata": "true"}) as response:
            assert response.status == 200
            body = await response.json()
    assert body["resource"] == CONTAINER_REGISTRY_RESOURCE + "/"
    assert body["token_type"] == "Bearer"
    for field in ("expires_in", "expires_on", "ext_expires_in", "not_before"):
        assert isinstance(body[field], str) and body[field].isdigit()


async def test_several_user_assigned_identities_and_no_selector_is_a_bad_request(
    azure_emulator: AzureEmulator,
) -> None:
    tenant = azure_emulator.add_tenant()
    azure_emulator.add_managed_identity(tenant)
    azure_emulator.add_managed_identity(tenant)
    params = {"api-version": "2018-02-01", "resource": CONTAINER_REGISTRY_RESOURCE}
    url = azure_emulator.imds_host + TOKEN_PATH
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params=params, headers={"Metadata": "true"}) as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert "Multiple user assigned identities" in body["error_description"]
