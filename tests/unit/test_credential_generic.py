"""Static credentials from a Secret: key layouts, errors, and noticing rotation."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import pytest

from webhook.admission.needs import PullNeed, match_images
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import CredentialCache, RegistryAuthError
from webhook.credentials.generic import NOMINAL_LIFETIME, RECHECK_SECONDS
from webhook.kube.objects import SecretData

HOST = "harbor.example.com"
NAMESPACE = "pull-secret-webhook"


class Secrets:
    """An in-memory SecretReader."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], SecretData] = {}
        self.reads = 0

    def put(self, name: str, data: Mapping[str, bytes], version: str) -> None:
        self.data[(NAMESPACE, name)] = SecretData(dict(data), version)

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        self.reads += 1
        return self.data.get((namespace, name))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def generic_config(key: str = "") -> Config:
    ref = {"name": "harbor-creds", **({"key": key} if key else {})}
    return parse_config(
        {
            "registries": [
                {"name": "harbor", "kind": "generic", "hosts": [HOST], "auth": {"secretRef": ref}}
            ]
        }
    )


def need(config: Config) -> PullNeed:
    found = match_images(config, [f"{HOST}/team/app:1"])[0].need
    assert found is not None
    return found


def docker_config(auths: Mapping[str, Mapping[str, str]]) -> bytes:
    return json.dumps({"auths": auths}).encode()


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"username": b"robot\n", "password": b"pa:ss\n"}, id="username-password"),
        pytest.param(
            {
                ".dockerconfigjson": docker_config(
                    {HOST: {"username": "robot", "password": "pa:ss"}}
                )
            },
            id="dockerconfigjson-exact-host",
        ),
        pytest.param(
            {
                ".dockerconfigjson": docker_config(
                    {f"https://{HOST}/v1/": {"auth": basic("robot", "pa:ss")}}
                )
            },
            id="dockerconfigjson-url-and-auth",
        ),
        pytest.param(
            {
                ".dockerconfigjson": docker_config(
                    {"other.example": {"auth": basic("robot", "pa:ss")}}
                )
            },
            id="dockerconfigjson-single-entry",
        ),
    ],
)
async def test_credentials_are_read_from_each_supported_layout(data: Mapping[str, bytes]) -> None:
    secrets, clock, config = Secrets(), Clock(), generic_config()
    secrets.put("harbor-creds", data, "1")
    async with CredentialCache(ConfigStore(config), secrets, clock=clock) as cache:
        credential = await cache.get(need(config), "team-a")
    assert (credential.username, credential.password) == ("robot", "pa:ss")
    assert credential.hosts == (HOST,)
    assert credential.expires_at == clock.now + NOMINAL_LIFETIME


async def test_a_named_key_holds_a_docker_config() -> None:
    secrets, config = Secrets(), generic_config(key="config.json")
    secrets.put(
        "harbor-creds", {"config.json": docker_config({HOST: {"auth": basic("a", "b")}})}, "1"
    )
    async with CredentialCache(ConfigStore(config), secrets) as cache:
        credential = await cache.get(need(config), "team-a")
    assert (credential.username, credential.password) == ("a", "b")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param({"user": b"x"}, "missing-keys", id="no-known-keys"),
        pytest.param(
            {
                ".dockerconfigjson": docker_config(
                    {
                        "a.example": {"auth": basic("a", "topsecret")},
                        "b.example": {"auth": basic("b", "topsecret")},
                    }
                )
            },
            "no-auth-for-host",
            id="host-not-among-several",
        ),
        pytest.param(
            {".dockerconfigjson": b"{not json topsecret"}, "no-auth-for-host", id="not-json"
        ),
    ],
)
async def test_an_unusable_secret_is_a_permanent_error_that_never_quotes_it(
    data: Mapping[str, bytes], code: str
) -> None:
    secrets, config = Secrets(), generic_config()
    secrets.put("harbor-creds", data, "1")
    async with CredentialCache(ConfigStore(config), secrets) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a")
    assert (caught.value.step, caught.value.code, caught.value.transient) == (
        "read-secret",
        code,
        False,
    )
    assert "topsecret" not in str(caught.value)


async def test_a_missing_secret_says_how_to_create_it() -> None:
    config = generic_config()
    async with CredentialCache(ConfigStore(config), Secrets()) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a")
    assert caught.value.code == "NotFound"
    assert "create Secret pull-secret-webhook/harbor-creds" in caught.value.hint


async def test_without_kubernetes_the_secret_cannot_be_read() -> None:
    config = generic_config()
    async with CredentialCache(ConfigStore(config)) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a")
    assert caught.value.code == "no-kubernetes"


async def test_a_rotated_password_is_picked_up_at_the_next_recheck_and_not_before() -> None:
    secrets, clock, config = Secrets(), Clock(), generic_config()
    secrets.put("harbor-creds", {"username": b"robot", "password": b"old"}, "1")
    async with CredentialCache(ConfigStore(config), secrets, clock=clock) as cache:
        first = await cache.get(need(config), "team-a")
        secrets.put("harbor-creds", {"username": b"robot", "password": b"new"}, "2")
        clock.now += RECHECK_SECONDS - 1
        assert (await cache.get(need(config), "team-a")).password == "old"
        clock.now += 2
        rotated = await cache.get(need(config), "team-a")
    assert rotated.password == "new"
    assert rotated.issued_at > first.issued_at
    assert secrets.reads == 2


async def test_an_unchanged_secret_keeps_the_same_credential_across_rechecks() -> None:
    secrets, clock, config = Secrets(), Clock(), generic_config()
    secrets.put("harbor-creds", {"username": b"robot", "password": b"same"}, "7")
    async with CredentialCache(ConfigStore(config), secrets, clock=clock) as cache:
        first = await cache.get(need(config), "team-a")
        clock.now += RECHECK_SECONDS + 1
        again = await cache.get(need(config), "team-a")
        # Past half the nominal lifetime the same password is re-issued with a new expiry.
        clock.now = first.issued_at + NOMINAL_LIFETIME / 2 + 1
        renewed = await cache.get(need(config), "team-a")
    assert again is first
    assert secrets.reads == 3
    assert renewed.password == "same" and renewed.expires_at > first.expires_at
