"""ECR credentials from real boto3 against moto (through a counting proxy)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path

import pytest

from devenv.peers import jws
from devenv.peers.aws import TEST_CREDENTIALS, MotoProxy
from tests.integration.conftest import Clock, MemoryKube
from tests.support.aws import (
    HOST,
    MOTO_EXPIRES_AT,
    OTHER_ACCOUNT_HOST,
    OTHER_REGION_HOST,
    ROLE_ARN,
    aws_env,
    clock,
    ecr_config,
    new_cache,
    pull_need,
)
from tests.support.refresh import assert_refreshes_at
from webhook.config.ecr import EcrEntry
from webhook.credentials import RegistryAuthError
from webhook.credentials.ecr import ENDPOINT_PREFIXES, EcrProvider, PlainJsonFiles

#: Fixtures, used by name.
__all__ = ["aws_env", "clock"]


async def test_default_chain_keys_give_the_decoded_ecr_password_and_its_expiry(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    async with new_cache(config, kube, clock) as cache:
        credential = await cache.get(pull_need(config), "team-a")
    assert credential.username == "AWS"
    assert credential.password == "123456789012-auth-token"  # moto's token for the account
    assert credential.hosts == (HOST,)
    assert credential.expires_at == MOTO_EXPIRES_AT
    assert credential.issued_at == clock.now
    (call,) = aws.calls
    assert (call.operation, call.service, call.region) == (
        "GetAuthorizationToken",
        "ecr",
        "eu-west-1",
    )
    assert call.access_key == TEST_CREDENTIALS["aws_access_key_id"]


async def test_registry_ids_are_never_sent(aws: MotoProxy, kube: MemoryKube, clock: Clock) -> None:
    config = ecr_config(aws, {"mode": "default"})
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config, OTHER_ACCOUNT_HOST), "team-a")
    assert aws.calls[0].json == {}


async def test_one_token_serves_every_ecr_host_of_a_principal_in_one_region(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    async with new_cache(config, kube, clock) as cache:
        first = await cache.get(pull_need(config, HOST), "team-a")
        second = await cache.get(pull_need(config, OTHER_ACCOUNT_HOST), "team-b")
        assert aws.count("GetAuthorizationToken") == 1
        other_region = await cache.get(pull_need(config, OTHER_REGION_HOST), "team-a")
    assert second.password == first.password
    assert (first.hosts, second.hosts) == ((HOST,), (OTHER_ACCOUNT_HOST,))
    assert other_region.hosts == (OTHER_REGION_HOST,)
    assert [c.region for c in aws.calls] == ["eu-west-1", "us-west-2"]


async def test_two_hundred_concurrent_gets_make_exactly_one_exchange(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    hosts = [HOST, OTHER_ACCOUNT_HOST]
    async with new_cache(config, kube, clock) as cache:
        results = await asyncio.gather(
            *(cache.get(pull_need(config, hosts[i % 2]), f"ns-{i}") for i in range(200))
        )
    assert aws.count("GetAuthorizationToken") == 1
    assert {r.password for r in results} == {"123456789012-auth-token"}


async def test_the_refresh_fraction_decides_when_a_new_token_is_fetched(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    need = pull_need(config)
    async with new_cache(config, kube, clock, fraction=0.5) as cache:
        await cache.get(need, "team-a")
        clock.now += 6 * 3600 - 1  # just before half of the 12 h lifetime
        await cache.get(need, "team-a")
        assert aws.count("GetAuthorizationToken") == 1
        clock.now += 2  # just past it
        await cache.get(need, "team-a")
        assert aws.count("GetAuthorizationToken") == 2
        # moto's expiry never moves, so the new token has less life left.
        await assert_refreshes_at(
            cache,
            need,
            "team-a",
            clock,
            lambda: aws.count("GetAuthorizationToken"),
            clock.now + 0.5 * (MOTO_EXPIRES_AT - clock.now),
        )


async def test_static_keys_come_from_the_secret(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    kube.put_secret(
        "pull-secret-webhook",
        "aws-keys",
        {"accessKeyId": b"AKIASTATICKEYEXAMPLE", "secretAccessKey": b"s" * 40},
    )
    config = ecr_config(aws, {"mode": "staticKeys", "accessKeysRef": {"name": "aws-keys"}})
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config), "team-a")
    assert aws.calls[0].access_key == "AKIASTATICKEYEXAMPLE"


async def test_rotated_static_keys_are_used_after_the_next_refresh(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    kube.put_secret(
        "pull-secret-webhook",
        "aws-keys",
        {"AWS_ACCESS_KEY_ID": b"AKIAOLDKEYEXAMPLE000", "AWS_SECRET_ACCESS_KEY": b"o" * 40},
    )
    config = ecr_config(aws, {"mode": "staticKeys", "accessKeysRef": {"name": "aws-keys"}})
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config), "team-a")
        kube.put_secret(
            "pull-secret-webhook",
            "aws-keys",
            {"AWS_ACCESS_KEY_ID": b"AKIANEWKEYEXAMPLE000", "AWS_SECRET_ACCESS_KEY": b"n" * 40},
        )
        clock.now += 7 * 3600
        await cache.get(pull_need(config), "team-a")
    assert [c.access_key for c in aws.calls] == ["AKIAOLDKEYEXAMPLE000", "AKIANEWKEYEXAMPLE000"]


async def test_assume_role_sends_the_session_name_and_external_id_and_uses_the_role(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(
        aws,
        {
            "mode": "assumeRole",
            "roleArn": ROLE_ARN,
            "externalId": "ext-1234",
            "sessionName": "psw-cross-account",
        },
    )
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config), "team-a")
    assume, get_token = aws.calls
    assert assume.operation == "AssumeRole"
    assert assume.access_key == TEST_CREDENTIALS["aws_access_key_id"]
    assert assume.form["RoleArn"] == ROLE_ARN
    assert assume.form["RoleSessionName"] == "psw-cross-account"
    assert assume.form["ExternalId"] == "ext-1234"
    # The ECR call is signed with the role's session keys, not the base keys.
    assert get_token.operation == "GetAuthorizationToken"
    assert get_token.access_key.startswith("ASIA")


async def test_web_identity_from_the_environment_is_used_by_the_default_chain(
    aws: MotoProxy, kube: MemoryKube, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(await kube_token(kube, "pull-secret-webhook", "pull-secret-webhook"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", aws.url)
    config = ecr_config(aws, {"mode": "default"})
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config), "team-a")
    assert aws.operations() == ["AssumeRoleWithWebIdentity", "GetAuthorizationToken"]
    assert aws.calls[0].form["RoleArn"] == ROLE_ARN


async def kube_token(kube: MemoryKube, namespace: str, name: str) -> str:
    kube.put_service_account(namespace, name)
    return await kube.token(namespace, name, "sts.amazonaws.com", 3600)


async def test_a_pod_service_account_assumes_its_annotated_role_with_its_own_token(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    kube.put_service_account("team-a", "builder", **{"eks.amazonaws.com/role-arn": ROLE_ARN})
    config = ecr_config(aws, {"mode": "podServiceAccount", "sessionName": "psw-team-a"})
    async with new_cache(config, kube, clock) as cache:
        credential = await cache.get(pull_need(config, service_account="builder"), "team-a")
    assert credential.username == "AWS"
    assert kube.token_requests == [("team-a", "builder", "sts.amazonaws.com", 600)]
    web_identity, get_token = aws.calls
    assert web_identity.operation == "AssumeRoleWithWebIdentity"
    assert web_identity.access_key == ""  # the token authenticates the call, not a key
    assert web_identity.form["RoleArn"] == ROLE_ARN
    assert web_identity.form["RoleSessionName"] == "psw-team-a"
    claims = jws.decode_unverified(web_identity.form["WebIdentityToken"]).claims
    assert claims["sub"] == "system:serviceaccount:team-a:builder"
    assert get_token.access_key.startswith("ASIA")


async def test_pod_identities_of_two_namespaces_never_share_a_credential(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    for namespace in ("team-a", "team-b"):
        kube.put_service_account(namespace, "default", **{"eks.amazonaws.com/role-arn": ROLE_ARN})
    config = ecr_config(aws, {"mode": "podServiceAccount"})
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config), "team-a")
        await cache.get(pull_need(config), "team-b")
    assert aws.count("AssumeRoleWithWebIdentity") == 2
    assert [r[0] for r in kube.token_requests] == ["team-a", "team-b"]


async def test_a_service_account_without_a_role_annotation_fails_with_a_hint(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    kube.put_service_account("team-a", "default")
    config = ecr_config(aws, {"mode": "podServiceAccount"})
    async with new_cache(config, kube, clock) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config), "team-a")
    error = caught.value
    assert (error.step, error.code, error.transient) == (
        "service-account",
        "no-role-annotation",
        False,
    )
    assert "eks.amazonaws.com/role-arn" in error.hint
    assert error.identity == "team-a/default"
    assert aws.calls == []


async def test_ecr_public_uses_its_own_api_in_us_east_1(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    # moto has no ECR Public server API: the proxy answers as the service documents.
    aws.answer(
        "GetAuthorizationToken",
        {
            "authorizationData": {
                "authorizationToken": "QVdTOnB1YmxpYy10b2tlbg==",  # AWS:public-token
                "expiresAt": MOTO_EXPIRES_AT,
            }
        },
    )
    config = ecr_config(aws, {"mode": "default"}, hosts=["public.ecr.aws"])
    async with new_cache(config, kube, clock) as cache:
        credential = await cache.get(pull_need(config, "public.ecr.aws"), "team-a")
    assert (credential.username, credential.password) == ("AWS", "public-token")
    (call,) = aws.calls
    assert call.target == "SpencerFrontendService.GetAuthorizationToken"
    assert (call.service, call.region) == ("ecr-public", "us-east-1")


async def test_secrets_never_reach_errors_or_logs(
    aws: MotoProxy, kube: MemoryKube, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_key = "q" * 40
    kube.put_secret(
        "pull-secret-webhook",
        "aws-keys",
        {"accessKeyId": b"AKIASTATICKEYEXAMPLE", "secretAccessKey": secret_key.encode()},
    )
    config = ecr_config(aws, {"mode": "staticKeys", "accessKeysRef": {"name": "aws-keys"}})
    async with new_cache(config, kube, clock) as cache:
        credential = await cache.get(pull_need(config), "team-a")
        clock.now += 7 * 3600
        aws.json_error("GetAuthorizationToken", "AccessDeniedException", "not authorized")
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config), "team-a")
    for text in (caplog.text, str(caught.value), repr(credential)):
        assert credential.password not in text
        assert secret_key not in text


async def test_every_principals_clients_share_one_loader_that_reads_plain_dicts(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    # Assume-role: an STS client with the base keys, then an ECR client with the role's.
    config = ecr_config(
        aws, {"mode": "assumeRole", "roleArn": ROLE_ARN, "sessionName": "psw-shared"}
    )
    async with new_cache(config, kube, clock) as cache:
        await cache.get(pull_need(config), "team-a")
        provider = cache.provider(EcrEntry)
        assert isinstance(provider, EcrProvider)
        clients = [client for _, client in provider._clients.values()]
        assert sorted(c.meta.service_model.service_name for c in clients) == ["ecr", "sts"]
        # One loader for both (each data file read once per replica, not per principal),
        # reading plain dicts, not botocore's OrderedDicts (a third more memory).
        [loader] = {id(c._loader): c._loader for c in clients}.values()
        assert isinstance(loader.file_loader, PlainJsonFiles)
        model = loader.load_service_model("ecr", "service-2")
        table = loader.load_data("endpoints")
        for data in (model, table):
            assert type(data) is dict
            assert all(type(v) is not OrderedDict for v in data.values())
        # Lean: the service models without their documentation, the endpoint table with
        # only the services called here, in every partition (aws, aws-cn, aws-us-gov, ...).
        assert "documentation" not in model["operations"]["GetAuthorizationToken"]
        partitions = {p["partition"]: set(p["services"]) for p in table["partitions"]}
        assert {"aws", "aws-cn", "aws-us-gov"} <= set(partitions)
        assert partitions["aws"] == {"api.ecr", "api.ecr-public", "sts"}
        assert all(services <= ENDPOINT_PREFIXES for services in partitions.values())
