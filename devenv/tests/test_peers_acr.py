"""The ACR token service of the emulator: exchange, scoped tokens, errors, faults."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from azure.identity.aio import ClientSecretCredential

from devenv.peers import jws
from devenv.peers.acr import TOKEN_USERNAME, AcrRegistry
from devenv.peers.azure import AzureEmulator
from devenv.peers.directory import CONTAINER_REGISTRY_RESOURCE, Principal
from devenv.peers.fixtures import azure_emulator, test_ca  # noqa: F401 - fixtures
from devenv.peers.tls import new_ec_key
from devenv.peers.traffic import ACR_EXCHANGE, ACR_TOKEN, REDACTED, basic_auth_header

ACR_SCOPE = f"{CONTAINER_REGISTRY_RESOURCE}/.default"


@dataclass
class Setup:
    emulator: AzureEmulator
    acr: AcrRegistry
    tenant: str
    app: Principal
    session: aiohttp.ClientSession

    async def aad_token(self) -> str:
        async with ClientSecretCredential(
            self.tenant,
            self.app.client_id,
            "app-secret",
            authority=self.emulator.authority_host,
            connection_verify=str(self.emulator.ca_path),
        ) as cred:
            return (await cred.get_token(ACR_SCOPE)).token

    async def post(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any], str]:
        url = f"https://{self.acr.login_server}{path}"
        async with self.session.post(url, data=form) as response:
            challenge = response.headers.get("Www-Authenticate", "")
            return response.status, await response.json(), challenge

    async def exchange(self, aad_token: str) -> tuple[int, dict[str, Any], str]:
        return await self.post(
            "/oauth2/exchange",
            {
                "grant_type": "access_token",
                "service": self.acr.login_server,
                "access_token": aad_token,
                "tenant": self.tenant,
            },
        )


@pytest_asyncio.fixture
async def setup(azure_emulator: AzureEmulator) -> AsyncIterator[Setup]:
    tenant = azure_emulator.add_tenant()
    app = azure_emulator.register_app(tenant, secret="app-secret")
    acr = await azure_emulator.add_registry("contoso")
    connector = aiohttp.TCPConnector(ssl=azure_emulator.ca.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Setup(azure_emulator, acr, tenant, app, session)


async def test_an_identity_with_acrpull_exchanges_its_aad_token_for_a_three_hour_refresh_token(
    setup: Setup,
) -> None:
    setup.acr.assign_role(setup.app.object_id, "AcrPull")
    status, body, _ = await setup.exchange(await setup.aad_token())

    assert status == 200
    decoded = jws.decode_unverified(body["refresh_token"])
    assert decoded.header["alg"] == "ES256"
    assert decoded.header["kid"] == jws.libtrust_kid(setup.emulator.acr_signer.key.public_key())
    assert jws.verify_signature(decoded, setup.emulator.acr_signer.key.public_key())
    claims = decoded.claims
    assert claims["aud"] == setup.acr.login_server
    assert claims["sub"] == setup.app.object_id
    assert claims["exp"] - claims["iat"] == 3 * 3600
    [request] = setup.emulator.traffic.requests(ACR_EXCHANGE)
    assert request.form["access_token"] == REDACTED
    assert request.token_claims["access_token"]["appid"] == setup.app.client_id


async def test_an_identity_without_a_role_on_the_registry_gets_401_with_a_challenge(
    setup: Setup,
) -> None:
    status, body, challenge = await setup.exchange(await setup.aad_token())
    assert status == 401
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    assert challenge.startswith(f'Bearer realm="https://{setup.acr.login_server}/oauth2/token"')


async def test_an_exchange_for_another_registry_service_is_a_bad_request(setup: Setup) -> None:
    setup.acr.assign_role(setup.app.object_id)
    status, _, _ = await setup.post(
        "/oauth2/exchange",
        {
            "grant_type": "access_token",
            "service": "other.azurecr.io",
            "access_token": await setup.aad_token(),
        },
    )
    assert status == 400


async def test_tokens_for_another_audience_or_already_expired_are_refused(setup: Setup) -> None:
    setup.acr.assign_role(setup.app.object_id)
    directory = setup.emulator.directory
    vault_token, _, _ = directory.issue_access_token(
        setup.app, "https://vault.azure.net", lifetime=600, appidacr="1"
    )
    expired_token, _, _ = directory.issue_access_token(
        setup.app, CONTAINER_REGISTRY_RESOURCE, lifetime=-1, appidacr="1"
    )
    management_token, _, _ = directory.issue_access_token(
        setup.app, "https://management.azure.com/", lifetime=600, appidacr="1"
    )
    assert (await setup.exchange(vault_token))[0] == 401
    assert (await setup.exchange(expired_token))[0] == 401
    assert (await setup.exchange(management_token))[0] == 200


async def test_a_refresh_token_buys_an_access_token_limited_to_pull(setup: Setup) -> None:
    setup.acr.assign_role(setup.app.object_id, "AcrPull")
    _, exchanged, _ = await setup.exchange(await setup.aad_token())
    status, body, _ = await setup.post(
        "/oauth2/token",
        {
            "grant_type": "refresh_token",
            "service": setup.acr.login_server,
            "scope": "repository:team-a/app:pull,push repository:team-a/tools:pull",
            "refresh_token": exchanged["refresh_token"],
        },
    )
    assert status == 200
    claims = jws.decode_unverified(body["access_token"]).claims
    assert claims["access"] == [
        {"type": "repository", "name": "team-a/app", "actions": ["pull"]},
        {"type": "repository", "name": "team-a/tools", "actions": ["pull"]},
    ]
    assert claims["aud"] == setup.acr.login_server
    assert claims["exp"] - claims["iat"] == 75 * 60
    assert {"iss", "sub", "nbf", "jti"} <= claims.keys()


async def test_basic_auth_with_the_token_username_returns_the_docker_token_response(
    setup: Setup,
) -> None:
    setup.acr.assign_role(setup.app.object_id, "AcrPull")
    _, exchanged, _ = await setup.exchange(await setup.aad_token())
    url = f"https://{setup.acr.login_server}/oauth2/token"
    params = {"service": setup.acr.login_server, "scope": "repository:app:pull"}
    auth = {"Authorization": basic_auth_header(TOKEN_USERNAME, exchanged["refresh_token"])}
    async with setup.session.get(url, params=params, headers=auth) as response:
        assert response.status == 200
        body = await response.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == setup.acr.access_token_lifetime
    assert body["issued_at"].endswith("Z")
    access = jws.decode_unverified(body["token"]).claims["access"]
    assert access == [{"type": "repository", "name": "app", "actions": ["pull"]}]

    wrong_user = {"Authorization": basic_auth_header("someone", exchanged["refresh_token"])}
    async with setup.session.get(url, params=params, headers=wrong_user) as response:
        assert response.status == 401
    [_, refused] = setup.emulator.traffic.requests(ACR_TOKEN)
    assert refused.auth == "Basic someone"


async def test_an_access_token_used_as_password_grants_no_more_than_it_carries(
    setup: Setup,
) -> None:
    setup.acr.assign_role(setup.app.object_id, "AcrPush")
    _, exchanged, _ = await setup.exchange(await setup.aad_token())
    _, scoped, _ = await setup.post(
        "/oauth2/token",
        {
            "grant_type": "refresh_token",
            "service": setup.acr.login_server,
            "scope": "repository:only-this:pull",
            "refresh_token": exchanged["refresh_token"],
        },
    )
    url = f"https://{setup.acr.login_server}/oauth2/token"
    params = {
        "service": setup.acr.login_server,
        "scope": ["repository:only-this:pull,push", "repository:other:pull"],
    }
    auth = {"Authorization": basic_auth_header(TOKEN_USERNAME, scoped["access_token"])}
    async with setup.session.get(url, params=params, headers=auth) as response:
        body = await response.json()
    assert jws.decode_unverified(body["token"]).claims["access"] == [
        {"type": "repository", "name": "only-this", "actions": ["pull"]},
        {"type": "repository", "name": "other", "actions": []},
    ]


async def test_injected_throttling_fails_the_next_exchanges_then_recovers(
    setup: Setup,
) -> None:
    setup.acr.assign_role(setup.app.object_id)
    aad_token = await setup.aad_token()
    setup.emulator.traffic.inject_fault(
        ACR_EXCHANGE, status=429, count=2, retry_after=1, listener=setup.acr.login_server
    )
    url = f"https://{setup.acr.login_server}/oauth2/exchange"
    form = {"grant_type": "access_token", "service": setup.acr.login_server}
    form["access_token"] = aad_token
    statuses = []
    for _ in range(3):
        async with setup.session.post(url, data=form) as response:
            statuses.append(response.status)
            if response.status == 429:
                assert response.headers["Retry-After"] == "1"
                assert (await response.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert statuses == [429, 429, 200]
    assert setup.emulator.traffic.count(ACR_EXCHANGE) == 3


async def test_an_injected_delay_holds_the_response_for_that_long(setup: Setup) -> None:
    setup.acr.assign_role(setup.app.object_id)
    aad_token = await setup.aad_token()
    delay = 0.3  # long enough to measure, short enough to keep the suite quick
    setup.emulator.traffic.inject_fault(ACR_EXCHANGE, status=None, delay=delay)
    started = time.monotonic()
    status, _, _ = await setup.exchange(aad_token)
    assert status == 200
    assert time.monotonic() - started >= delay


async def test_a_revoked_role_stops_new_access_tokens_but_not_the_refresh_token_format(
    setup: Setup,
) -> None:
    setup.acr.assign_role(setup.app.object_id, "AcrPull")
    _, exchanged, _ = await setup.exchange(await setup.aad_token())
    setup.acr.remove_role(setup.app.object_id)
    _, body, _ = await setup.post(
        "/oauth2/token",
        {
            "grant_type": "refresh_token",
            "service": setup.acr.login_server,
            "scope": "repository:app:pull",
            "refresh_token": exchanged["refresh_token"],
        },
    )
    assert jws.decode_unverified(body["access_token"]).claims["access"] == [
        {"type": "repository", "name": "app", "actions": []}
    ]


@pytest.mark.parametrize("grant_type", ["refresh_token", "password"])
async def test_the_token_endpoint_refuses_credentials_it_did_not_issue(
    setup: Setup, grant_type: str
) -> None:
    forged = jws.sign(
        {"alg": "ES256", "kid": setup.emulator.acr_signer.kid},
        {"iss": "Azure Container Registry", "aud": setup.acr.login_server, "exp": 2**31},
        new_ec_key(),  # right kid, wrong key
    )
    form = {
        "grant_type": grant_type,
        "service": setup.acr.login_server,
        "scope": "repository:a:pull",
    }
    if grant_type == "refresh_token":
        form["refresh_token"] = forged
    else:
        form |= {"username": TOKEN_USERNAME, "password": forged}
    status, body, challenge = await setup.post("/oauth2/token", form)
    assert status == 401
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    assert challenge


async def test_the_login_server_answers_502_when_its_backing_registry_is_down(
    setup: Setup,
) -> None:
    # Port 1 (tcpmux) is never served on these machines: the connection is refused.
    setup.acr.upstream = "http://127.0.0.1:1"
    async with setup.session.get(f"https://{setup.acr.login_server}/v2/") as response:
        assert response.status == 502
        assert (await response.json())["errors"][0]["code"] == "UNAVAILABLE"
