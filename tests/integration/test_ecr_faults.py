"""How ECR/STS failures are retried, reported and remembered (boto3 against moto,
with AWS's error answers injected by the proxy in front of it)."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator

import boto3
import pytest

from devenv.peers.aws import TEST_CREDENTIALS, MotoProxy
from tests.integration.conftest import Clock, MemoryKube
from tests.support.aws import (
    MOTO_EXPIRES_AT,
    ROLE_ARN,
    aws_env,
    clock,
    ecr_config,
    new_cache,
    pull_need,
)
from webhook.config.ecr import EcrEntry
from webhook.credentials import RegistryAuthError
from webhook.credentials.base import ProviderContext
from webhook.credentials.cache import NEGATIVE_TTL_PERMANENT, NEGATIVE_TTL_TRANSIENT
from webhook.credentials.ecr import EcrProvider

__all__ = ["aws_env", "clock"]

Inject = Callable[[MotoProxy], None]


@pytest.mark.parametrize(
    ("inject", "first_code"),
    [
        pytest.param(
            lambda a: a.json_error("GetAuthorizationToken", "ThrottlingException", "Rate exceeded"),
            "ThrottlingException",
            id="throttling",
        ),
        pytest.param(
            lambda a: a.json_error(
                "GetAuthorizationToken", "ServiceUnavailableException", "try later", 503
            ),
            "ServiceUnavailableException",
            id="service-unavailable-503",
        ),
        pytest.param(
            lambda a: a.json_error("GetAuthorizationToken", "ServerException", "oops", 500),
            "ServerException",
            id="server-exception-500",
        ),
        pytest.param(lambda a: a.drop("GetAuthorizationToken"), "connection", id="dropped"),
        pytest.param(lambda a: a.slow("GetAuthorizationToken", 1.5), "timeout", id="read-timeout"),
    ],
)
async def test_a_transient_ecr_failure_is_retried_and_then_succeeds(
    aws: MotoProxy,
    kube: MemoryKube,
    clock: Clock,
    inject: Inject,
    first_code: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="webhook.credentials")
    config = ecr_config(aws, {"mode": "default"})
    # A short read timeout so the slow answer counts as one.
    provider = EcrProvider(ProviderContext("", kube, kube, clock), read_timeout=0.5)
    inject(aws)
    async with new_cache(config, kube, clock, providers={EcrEntry: provider}) as cache:
        credential = await cache.get(pull_need(config), "team-a")
    assert credential.username == "AWS"
    assert aws.count("GetAuthorizationToken") == 2
    assert f"after ecr-get-authorization-token: {first_code}" in caplog.text


@pytest.mark.parametrize(
    ("code", "status", "hint"),
    [
        pytest.param(
            "AccessDeniedException", 400, "AmazonEC2ContainerRegistryPullOnly", id="access-denied"
        ),
        pytest.param(
            "UnrecognizedClientException", 400, "does not know this access key", id="unknown-key"
        ),
        pytest.param("ExpiredTokenException", 400, "expired", id="expired-session"),
        pytest.param("InvalidSignatureException", 400, "clock", id="bad-signature"),
    ],
)
async def test_a_permanent_ecr_failure_is_not_retried_and_says_what_to_fix(
    aws: MotoProxy, kube: MemoryKube, clock: Clock, code: str, status: int, hint: str
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    aws.json_error("GetAuthorizationToken", code, "refused", status)
    async with new_cache(config, kube, clock) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config), "team-a")
    error = caught.value
    assert (error.entry, error.identity) == ("aws", "default")
    assert (error.step, error.code, error.transient) == (
        "ecr-get-authorization-token",
        code,
        False,
    )
    assert hint in error.hint
    assert aws.count("GetAuthorizationToken") == 1
    assert str(error).count("\n") == 0
    assert code in str(error) and error.hint in str(error)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        pytest.param(
            "AccessDenied",
            "AssumeRoleWithWebIdentity for system:serviceaccount:team-a:builder",
            id="trust-policy",
        ),
        pytest.param("InvalidIdentityToken", "OIDC provider", id="no-oidc-provider"),
    ],
)
async def test_a_refused_web_identity_names_the_service_account_in_its_hint(
    aws: MotoProxy, kube: MemoryKube, clock: Clock, code: str, hint: str
) -> None:
    kube.put_service_account("team-a", "builder", **{"eks.amazonaws.com/role-arn": ROLE_ARN})
    aws.query_error("AssumeRoleWithWebIdentity", code, "Not authorized", 403)
    config = ecr_config(aws, {"mode": "podServiceAccount"})
    async with new_cache(config, kube, clock) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config, service_account="builder"), "team-a")
    error = caught.value
    assert (error.step, error.code, error.transient) == (
        "sts-assume-role-with-web-identity",
        code,
        False,
    )
    assert hint in error.hint
    assert error.identity == "team-a/builder"
    assert aws.operations() == ["AssumeRoleWithWebIdentity"]


@pytest.fixture
def iam_enforced(aws: MotoProxy) -> Iterator[Callable[[int], None]]:
    """Turns on moto's IAM enforcement after ``n`` more unauthenticated requests;
    always turns it off again (the moto server is shared by the session)."""

    def reset_auth(value: str) -> None:
        request = urllib.request.Request(  # noqa: S310 - the loopback moto server
            f"{aws.upstream}/moto-api/reset-auth",
            data=value.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    yield lambda n: reset_auth(str(n))
    reset_auth("inf")


async def test_an_identity_without_sts_assume_role_permission_is_denied_by_iam(
    aws: MotoProxy,
    kube: MemoryKube,
    clock: Clock,
    iam_enforced: Callable[[int], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    iam_enforced(2)  # the two setup calls below run before enforcement starts
    iam = boto3.client(
        "iam", region_name="us-east-1", endpoint_url=aws.upstream, **TEST_CREDENTIALS
    )
    iam.create_user(UserName="no-policies")
    key = iam.create_access_key(UserName="no-policies")["AccessKey"]
    iam.close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    config = ecr_config(aws, {"mode": "assumeRole", "roleArn": ROLE_ARN})
    async with new_cache(config, kube, clock) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config), "team-a")
    error = caught.value
    assert (error.step, error.code, error.transient) == ("sts-assume-role", "AccessDenied", False)
    assert "sts:AssumeRole" in error.message
    assert "trust policy" in error.hint
    assert aws.operations() == ["AssumeRole"]


async def test_a_failure_is_remembered_only_for_the_negative_ttl(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    aws.json_error("GetAuthorizationToken", "AccessDeniedException", "no")
    async with new_cache(config, kube, clock) as cache:
        for _ in range(50):
            with pytest.raises(RegistryAuthError):
                await cache.get(pull_need(config), "team-a")
        assert aws.count("GetAuthorizationToken") == 1
        clock.now += NEGATIVE_TTL_PERMANENT + 0.1
        await cache.get(pull_need(config), "team-a")
        assert aws.count("GetAuthorizationToken") == 2


async def test_a_failed_refresh_keeps_serving_the_still_valid_token(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    need = pull_need(config)
    async with new_cache(config, kube, clock) as cache:
        first = await cache.get(need, "team-a")
        clock.now += 7 * 3600  # past the refresh point, 5 h before expiry
        for _ in range(6):  # every attempt of the refresh is throttled
            aws.json_error("GetAuthorizationToken", "ThrottlingException", "Rate exceeded")
        again = await cache.get(need, "team-a")
        attempts = aws.count("GetAuthorizationToken")
        # Within the negative TTL, neither a new exchange nor an error.
        assert await cache.get(need, "team-a") == first
        assert aws.count("GetAuthorizationToken") == attempts
        clock.now += NEGATIVE_TTL_TRANSIENT + 0.1
        await cache.get(need, "team-a")
    assert again == first
    assert attempts == 1 + 6
    assert aws.count("GetAuthorizationToken") == attempts + 1
    assert clock.now < MOTO_EXPIRES_AT


async def test_a_get_past_its_deadline_times_out_while_the_exchange_goes_on(
    aws: MotoProxy, kube: MemoryKube, clock: Clock
) -> None:
    config = ecr_config(aws, {"mode": "default"})
    aws.slow("GetAuthorizationToken", 1.0)
    async with new_cache(config, kube, clock) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(pull_need(config), "team-a", deadline=time.monotonic() + 0.2)
        assert (caught.value.code, caught.value.transient) == ("timeout", True)
        # The background exchange finishes and serves the next admission.
        credential = await asyncio.wait_for(cache.get(pull_need(config), "team-a"), 5)
    assert credential.username == "AWS"
    assert aws.count("GetAuthorizationToken") == 1
