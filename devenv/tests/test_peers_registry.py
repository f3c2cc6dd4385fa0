"""Real pulls with skopeo through the ACR emulator and from the htpasswd registry."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
import pytest
from azure.identity.aio import ClientSecretCredential

from devenv.peers.acr import TOKEN_USERNAME, Scope
from devenv.peers.directory import CONTAINER_REGISTRY_RESOURCE
from devenv.peers.fixtures import (  # noqa: F401 - fixtures
    azure_emulator,
    oci_registry_basic,
    oci_registry_token,
    require_binaries,
    test_ca,
)
from devenv.peers.oci import (
    SkopeoResult,
    dockerconfigjson,
    skopeo_copy_to_dir,
    skopeo_inspect,
    write_authfile,
)
from devenv.peers.registry import BasicRegistry, TokenRegistry
from devenv.peers.traffic import ACR_EXCHANGE, ACR_TOKEN, ACR_V2

pytestmark = pytest.mark.registry


async def _refresh_token_for_new_identity(reg: TokenRegistry, role: str | None) -> str:
    """The webhook's ACR flow: Entra token for the registry resource, then the exchange."""
    emulator = reg.emulator
    tenant = emulator.add_tenant()
    app = emulator.register_app(tenant, secret="webhook-secret")
    if role:
        reg.acr.assign_role(app.object_id, role)
    async with ClientSecretCredential(
        tenant,
        app.client_id,
        "webhook-secret",
        authority=emulator.authority_host,
        connection_verify=str(emulator.ca_path),
    ) as cred:
        aad_token = (await cred.get_token(f"{CONTAINER_REGISTRY_RESOURCE}/.default")).token
    connector = aiohttp.TCPConnector(ssl=emulator.ca.client_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"https://{reg.login_server}/oauth2/exchange",
            data={
                "grant_type": "access_token",
                "service": reg.login_server,
                "access_token": aad_token,
                "tenant": tenant,
            },
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return str((await response.json())["refresh_token"])


def _unauthorized(result: SkopeoResult) -> bool:
    """The registry refused the pull as unauthorized (not some other failure)."""
    return not result.ok and ("unauthorized" in result.stderr.lower() or "401" in result.stderr)


async def test_a_dockerconfigjson_holding_an_acr_refresh_token_pulls_through_the_login_server(
    oci_registry_token: TokenRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_token
    refresh_token = await _refresh_token_for_new_identity(reg, "AcrPull")
    authfile = write_authfile(
        tmp_path / "config.json", dockerconfigjson(reg.login_server, TOKEN_USERNAME, refresh_token)
    )

    result = await skopeo_copy_to_dir(
        reg.image_ref, authfile, tmp_path / "pulled", cert_dir=reg.cert_dir
    )

    assert result.ok, f"{result.stderr}\n{reg.registry.log_tail()}"
    pulled_layer = tmp_path / "pulled" / reg.image.layer_digest.removeprefix("sha256:")
    layout_layer = reg.image.layout_dir / "blobs" / "sha256" / pulled_layer.name
    assert pulled_layer.read_bytes() == layout_layer.read_bytes()
    [token_request] = reg.emulator.traffic.requests(ACR_TOKEN)
    assert token_request.auth == f"Basic {TOKEN_USERNAME}"
    assert token_request.query["scope"] == "repository:demo/hello:pull"
    assert reg.emulator.traffic.count(ACR_EXCHANGE) == 1
    assert reg.emulator.traffic.count(ACR_V2) >= 3  # ping, manifest, blobs


async def test_a_wrong_password_is_refused_by_the_login_server(
    oci_registry_token: TokenRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_token
    refresh_token = await _refresh_token_for_new_identity(reg, "AcrPull")
    # Flip the signature's first character: same claims, invalid signature.
    header, payload, signature = refresh_token.split(".")
    tampered = f"{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    authfile = write_authfile(
        tmp_path / "config.json", dockerconfigjson(reg.login_server, TOKEN_USERNAME, tampered)
    )

    result = await skopeo_inspect(reg.image_ref, authfile, cert_dir=reg.cert_dir)

    assert _unauthorized(result)


async def test_a_token_scoped_to_another_repository_cannot_pull_the_image(
    oci_registry_token: TokenRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_token
    reg.acr.assign_role("scoped-user", "AcrPull")
    # An access token for another repository, used as the password.
    scoped = reg.acr.mint_access_token(
        "scoped-user",
        Scope.parse_all(["repository:demo/other:pull"]),
        lambda _name: frozenset({"pull"}),
    )
    authfile = write_authfile(
        tmp_path / "config.json", dockerconfigjson(reg.login_server, TOKEN_USERNAME, scoped)
    )

    result = await skopeo_inspect(reg.image_ref, authfile, cert_dir=reg.cert_dir)

    assert not result.ok


async def test_skopeo_inspect_reads_the_image_back_with_exactly_the_given_authfile(
    oci_registry_token: TokenRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_token
    refresh_token = await _refresh_token_for_new_identity(reg, "AcrPull")
    authfile = write_authfile(
        tmp_path / "config.json", dockerconfigjson(reg.login_server, TOKEN_USERNAME, refresh_token)
    )
    result = await skopeo_inspect(reg.image_ref, authfile, cert_dir=reg.cert_dir)
    assert result.ok, result.stderr
    assert result.json()["Digest"] == reg.image.manifest_digest


async def test_the_basic_auth_registry_accepts_the_right_password_and_refuses_a_wrong_one(
    oci_registry_basic: BasicRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_basic
    good = write_authfile(
        tmp_path / "good.json", dockerconfigjson(reg.host, reg.username, reg.password)
    )
    # bcrypt reads only the first 72 bytes: the wrong password differs at the start.
    wrong_password = "X" + reg.password[1:] if reg.password[0] != "X" else "Y" + reg.password[1:]
    bad = write_authfile(
        tmp_path / "bad.json", dockerconfigjson(reg.host, reg.username, wrong_password)
    )

    accepted = await skopeo_copy_to_dir(reg.image_ref, good, tmp_path / "pulled", tls_verify=False)
    refused = await skopeo_inspect(reg.image_ref, bad, tls_verify=False)

    assert accepted.ok, f"{accepted.stderr}\n{reg.registry.log_tail()}"
    assert json.loads((tmp_path / "pulled" / "manifest.json").read_text())["layers"]
    assert _unauthorized(refused)


async def test_a_new_password_takes_effect_without_restarting_the_registry(
    oci_registry_basic: BasicRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_basic
    old = write_authfile(tmp_path / "old.json", dockerconfigjson(reg.host, "AWS", reg.password))
    reg.set_password("rotated-" + reg.password)
    new = write_authfile(tmp_path / "new.json", dockerconfigjson(reg.host, "AWS", reg.password))

    assert (await skopeo_inspect(reg.image_ref, new, tls_verify=False)).ok
    assert not (await skopeo_inspect(reg.image_ref, old, tls_verify=False)).ok


async def test_skopeo_given_an_identitytoken_posts_the_refresh_token_grant_and_pulls(
    oci_registry_token: TokenRegistry, tmp_path: Path
) -> None:
    reg = oci_registry_token
    refresh_token = await _refresh_token_for_new_identity(reg, "AcrPull")
    # As `az acr login` writes it: containers/image skips an entry without a
    # decodable "user:" auth, identitytoken or not.
    auth = base64.b64encode(f"{TOKEN_USERNAME}:".encode()).decode()
    config = {"auths": {reg.login_server: {"auth": auth, "identitytoken": refresh_token}}}
    authfile = write_authfile(tmp_path / "config.json", config)

    result = await skopeo_inspect(reg.image_ref, authfile, cert_dir=reg.cert_dir)

    assert result.ok, result.stderr
    token_requests = reg.emulator.traffic.requests(ACR_TOKEN)
    assert token_requests
    for request in token_requests:
        assert request.method == "POST"
        assert request.form["grant_type"] == "refresh_token"
        assert request.form["refresh_token"] == "<redacted>"
        assert request.form["scope"] == "repository:demo/hello:pull"


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_binary_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"no-such-registry-binary.*make system-deps"):
        require_binaries("no-such-registry-binary")
