"""Artifact Registry credentials from google-auth's own credential classes against the
Google Cloud emulator (metadata server, STS, IAM Credentials, OAuth 2.0), and a real
client pulling from the emulated Artifact Registry host with what they made."""

# ruff: noqa: F811 - tests take the imported fixtures as parameters
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from devenv.peers.fixtures import gar_registry, gcp_emulator, gcp_metadata_host  # noqa: F401
from devenv.peers.gcp import GcpEmulator
from devenv.peers.oci import dockerconfigjson, skopeo_inspect, write_authfile
from devenv.peers.registry import GarRegistry
from devenv.peers.traffic import GCP_IAM_CREDENTIALS, GCP_OAUTH2_TOKEN, GCP_STS_TOKEN
from tests.integration.conftest import CLUSTER_ISSUER, MemoryKube
from webhook.admission.needs import PullNeed
from webhook.cli import doctor
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import Credential, CredentialCache, RegistryAuthError
from webhook.credentials.base import Attempt, ProviderContext
from webhook.credentials.gar import GAR_USERNAME, GarProvider

PROJECT_NUMBER = "123456789012"
READER = "reader@emulated-project.iam.gserviceaccount.com"
WEBHOOK_SUBJECT = "system:serviceaccount:pull-secret-webhook:pull-secret-webhook"


def _config(gcp: GcpEmulator, host: str, **auth: Any) -> Config:
    """A ``gar`` entry for ``host`` as a config file would say it, with Google's endpoints
    pointed at the emulator (what ``stsUrl`` and friends are for: Private Service Connect)."""
    entry = {
        "name": "gar",
        "kind": "gar",
        "hosts": [host],
        "stsUrl": gcp.sts_url,
        "iamCredentialsUrl": gcp.iam_credentials_url,
        "oauth2TokenUrl": gcp.oauth2_token_url,
        "auth": auth,
    }
    return parse_config({"registries": [entry], "caFile": str(gcp.ca_path)})


async def _get(config: Config, kube: MemoryKube, host: str, account: str = "default") -> Credential:
    entry = config.registries[0]
    need = PullNeed.make(entry, host, prefix="psw", service_account=account)
    async with CredentialCache(ConfigStore(config), kube, kube) as cache:
        return await cache.get(need, "team-a")


async def _pulls(registry: GarRegistry, credential: Credential, tmp_path: Path) -> bool:
    authfile = write_authfile(
        tmp_path / "auth.json",
        dockerconfigjson(registry.host, credential.username, credential.password),
    )
    result = await skopeo_inspect(registry.image_ref, authfile, cert_dir=registry.emulator.cert_dir)
    return result.ok


def _provider(gcp: GcpEmulator, kube: MemoryKube) -> str:
    return gcp.iam.add_provider(
        PROJECT_NUMBER,
        "clusters",
        "this-cluster",
        issuer=CLUSTER_ISSUER,
        jwks=[kube.key.public_key()],
    ).name


async def test_the_metadata_servers_service_account_token_pulls_until_its_real_expiry(
    gar_registry: GarRegistry, kube: MemoryKube, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    gcp.iam.token_lifetime = 1234  # not an hour: the lifetime must be read, not assumed
    account = gcp.iam.add_service_account(READER)
    gcp.metadata.attach_service_account(READER)
    gar_registry.allow_pull(account.member)
    config = _config(gcp, gar_registry.host)
    credential = await _get(config, kube, gar_registry.host)
    issued = gcp.iam.resolve(credential.password)
    assert issued is not None and issued.member == account.member and issued.via == "metadata"
    assert credential.username == GAR_USERNAME == "oauth2accesstoken"
    assert credential.expires_at == pytest.approx(issued.expires_at, abs=1)
    assert 1234 - 5 < credential.lifetime <= 1234
    assert await _pulls(gar_registry, credential, tmp_path)


async def test_a_metadata_server_without_the_account_fails_with_a_workload_identity_hint(
    gcp_emulator: GcpEmulator, kube: MemoryKube
) -> None:
    config = _config(gcp_emulator, "us-docker.pkg.dev", mode="metadataServer")
    with pytest.raises(RegistryAuthError) as caught:
        await _get(config, kube, "us-docker.pkg.dev")
    error = caught.value
    assert (error.step, error.code, error.transient) == ("gcp-metadata", "404", False)
    assert "iam.gke.io/gcp-service-account" in error.hint


async def test_federation_from_the_webhooks_token_pulls_as_the_federated_principal(
    gar_registry: GarRegistry, kube: MemoryKube, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    audience = _provider(gcp, kube)
    namespace, _, name = WEBHOOK_SUBJECT.removeprefix("system:serviceaccount:").partition(":")
    kube.put_service_account(namespace, name)
    token_file = tmp_path / "token"
    token_file.write_text(await kube.token(namespace, name, "https:" + audience, 3600))
    principal = gcp.iam.providers[audience].principal(WEBHOOK_SUBJECT)
    gar_registry.allow_pull(principal)
    config = _config(
        gcp, gar_registry.host, mode="federation", audience=audience, tokenFile=str(token_file)
    )
    credential = await _get(config, kube, gar_registry.host)
    issued = gcp.iam.resolve(credential.password)
    assert issued is not None and issued.member == principal and issued.via == "sts"
    (exchange,) = gcp.traffic.requests(GCP_STS_TOKEN)
    assert exchange.form["audience"] == audience
    assert exchange.token_claims["subject_token"]["sub"] == WEBHOOK_SUBJECT
    assert await _pulls(gar_registry, credential, tmp_path)


async def test_federation_impersonates_only_with_workload_identity_user_and_says_which_role(
    gar_registry: GarRegistry, kube: MemoryKube, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    audience = _provider(gcp, kube)
    kube.put_service_account("pull-secret-webhook", "pull-secret-webhook")
    token_file = tmp_path / "token"
    token_file.write_text(
        await kube.token("pull-secret-webhook", "pull-secret-webhook", "https:" + audience, 3600)
    )
    account = gcp.iam.add_service_account(READER)
    gar_registry.allow_pull(account.member)
    config = _config(
        gcp,
        gar_registry.host,
        mode="federation",
        audience=audience,
        tokenFile=str(token_file),
        serviceAccount=READER,
    )
    principal = gcp.iam.providers[audience].principal(WEBHOOK_SUBJECT)
    with pytest.raises(RegistryAuthError) as caught:
        await _get(config, kube, gar_registry.host)
    error = caught.value
    assert (error.step, error.code) == ("gcp-iam-credentials", "PERMISSION_DENIED")
    assert "roles/iam.workloadIdentityUser" in error.hint
    assert principal in error.hint and READER in error.hint
    gcp.iam.grant(account.member, "roles/iam.workloadIdentityUser", principal)
    credential = await _get(config, kube, gar_registry.host)
    issued = gcp.iam.resolve(credential.password)
    assert issued is not None and issued.member == account.member
    assert issued.via == "iamcredentials"
    assert credential.expires_at == pytest.approx(issued.expires_at, abs=1)
    assert gcp.traffic.count(GCP_IAM_CREDENTIALS) == 2
    assert await _pulls(gar_registry, credential, tmp_path)


async def test_a_token_the_provider_does_not_accept_names_the_sts_step_and_the_audience(
    gcp_emulator: GcpEmulator, kube: MemoryKube, tmp_path: Path
) -> None:
    audience = _provider(gcp_emulator, kube)
    kube.put_service_account("pull-secret-webhook", "pull-secret-webhook")
    token_file = tmp_path / "token"
    token_file.write_text(
        await kube.token("pull-secret-webhook", "pull-secret-webhook", "sts.amazonaws.com", 3600)
    )
    config = _config(
        gcp_emulator,
        "us-docker.pkg.dev",
        mode="federation",
        audience=audience,
        tokenFile=str(token_file),
    )
    with pytest.raises(RegistryAuthError) as caught:
        await _get(config, kube, "us-docker.pkg.dev")
    error = caught.value
    assert (error.step, error.code) == ("gcp-sts", "invalid_grant")
    assert "allowed audiences" in error.hint


async def test_each_pods_service_account_pulls_as_its_own_google_identity(
    gar_registry: GarRegistry, kube: MemoryKube, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    audience = _provider(gcp, kube)
    account = gcp.iam.add_service_account(READER)
    gar_registry.allow_pull(account.member)
    kube.put_service_account("team-a", "builder", **{"iam.gke.io/gcp-service-account": READER})
    kube.put_service_account("team-a", "intruder", **{"iam.gke.io/gcp-service-account": READER})
    builder = gcp.iam.providers[audience].principal("system:serviceaccount:team-a:builder")
    gcp.iam.grant(account.member, "roles/iam.workloadIdentityUser", builder)
    config = _config(gcp, gar_registry.host, mode="podServiceAccount", audience=audience)
    credential = await _get(config, kube, gar_registry.host, "builder")
    issued = gcp.iam.resolve(credential.password)
    assert issued is not None and issued.member == account.member
    assert kube.token_requests == [("team-a", "builder", "https:" + audience, 600)]
    assert await _pulls(gar_registry, credential, tmp_path)
    # Another ServiceAccount naming the same Google account gets nothing from it.
    with pytest.raises(RegistryAuthError) as caught:
        await _get(config, kube, gar_registry.host, "intruder")
    assert caught.value.step == "gcp-iam-credentials"
    assert "system:serviceaccount:team-a:intruder" in caught.value.hint
    import asyncio

    await asyncio.sleep(0.5)


async def test_a_pods_principal_without_the_reader_role_is_refused_by_the_registry_with_the_role(
    gar_registry: GarRegistry, kube: MemoryKube, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    audience = _provider(gcp, kube)
    kube.put_service_account("team-a", "builder")
    config = _config(gcp, gar_registry.host, mode="podServiceAccount", audience=audience)
    # No annotation: the federated principal itself is the identity (direct access).
    credential = await _get(config, kube, gar_registry.host, "builder")
    principal = gcp.iam.providers[audience].principal("system:serviceaccount:team-a:builder")
    assert gcp.iam.resolve(credential.password).member == principal  # type: ignore[union-attr]
    assert not await _pulls(gar_registry, credential, tmp_path)
    provider = GarProvider(ProviderContext(str(gcp.ca_path)))
    attempt = Attempt("gar", principal, time.monotonic() + 10)
    repository = gar_registry.image_ref.split("/", 1)[1].rsplit(":", 1)[0]
    try:
        with pytest.raises(RegistryAuthError) as caught:
            await provider.check_pull(credential, gar_registry.host, repository, attempt, principal)
        error = caught.value
        assert (error.step, error.code) == ("gar-pull", "DENIED")
        assert "roles/artifactregistry.reader" in error.hint and principal in error.hint
        assert "artifactregistry.repositories.downloadArtifacts" in error.message
        gar_registry.allow_pull(principal)
        await provider.check_pull(credential, gar_registry.host, repository, attempt, principal)
        assert await _pulls(gar_registry, credential, tmp_path)
    finally:
        await provider.aclose()


async def test_a_service_account_key_from_a_secret_is_exchanged_only_at_the_entrys_token_url(
    gar_registry: GarRegistry, kube: MemoryKube, tmp_path: Path
) -> None:
    gcp = gar_registry.emulator
    account = gcp.iam.add_service_account(READER)
    gar_registry.allow_pull(account.member)
    # A key whose token_uri points elsewhere: its signed JWT must not go there.
    key = gcp.iam.create_key(READER, "https://attacker.invalid/token")
    kube.put_secret("pull-secret-webhook", "gar-key", {"key.json": json.dumps(key).encode()})
    config = _config(gcp, gar_registry.host, mode="serviceAccountKey", keyRef={"name": "gar-key"})
    credential = await _get(config, kube, gar_registry.host)
    issued = gcp.iam.resolve(credential.password)
    assert issued is not None and issued.member == account.member and issued.via == "oauth2"
    assert gcp.traffic.count(GCP_OAUTH2_TOKEN) == 1
    assert await _pulls(gar_registry, credential, tmp_path)


async def test_a_deleted_key_or_a_secret_without_a_key_fails_without_quoting_the_secret(
    gcp_emulator: GcpEmulator, kube: MemoryKube
) -> None:
    gcp_emulator.iam.add_service_account(READER)
    key = gcp_emulator.iam.create_key(READER, gcp_emulator.oauth2_token_url)
    gcp_emulator.iam.service_accounts[READER].keys.clear()
    kube.put_secret("pull-secret-webhook", "gar-key", {"key.json": json.dumps(key).encode()})
    kube.put_secret("pull-secret-webhook", "not-a-key", {"key.json": b'{"private": "x"}'})
    for name, step, code in (
        ("gar-key", "gcp-oauth2-token", "invalid_grant"),
        ("not-a-key", "read-secret", "bad-key"),
    ):
        config = _config(gcp_emulator, "gcr.io", mode="serviceAccountKey", keyRef={"name": name})
        with pytest.raises(RegistryAuthError) as caught:
            await _get(config, kube, "gcr.io")
        assert (caught.value.step, caught.value.code) == (step, code)
        assert "PRIVATE KEY" not in str(caught.value) and '"x"' not in str(caught.value)


async def test_doctor_checks_each_step_and_names_the_role_the_registry_wants(
    gar_registry: GarRegistry, kube: MemoryKube
) -> None:
    gcp = gar_registry.emulator
    account = gcp.iam.add_service_account(READER)
    gcp.metadata.attach_service_account(READER)
    config = _config(gcp, gar_registry.host)
    repository = gar_registry.image_ref.split("/", 1)[1].rsplit(":", 1)[0]
    hosts = {"gar": [gar_registry.host]}
    repositories = {("gar", gar_registry.host): [repository]}

    async def doctor_says() -> tuple[int, str]:
        out = io.StringIO()
        code = await doctor.run(config, out=out, hosts=hosts, repositories=repositories, kube=kube)
        return code, out.getvalue()

    code, text = await doctor_says()
    assert code == 1, text
    assert text.startswith("FAIL gar ") and "gar-pull: DENIED" in text, text
    assert f"grant serviceAccount:{READER} roles/artifactregistry.reader" in text, text
    gar_registry.allow_pull(account.member)
    code, text = await doctor_says()
    assert code == 0, text
    assert text.startswith("ok   gar ") and f"reads {repository}" in text, text
    assert "(gar metadataServer" in text and "ya29." not in text
    gcp.metadata.detach()
    code, text = await doctor_says()
    assert code == 1 and "gcp-metadata: 404" in text and "iam.gke.io" in text, text
