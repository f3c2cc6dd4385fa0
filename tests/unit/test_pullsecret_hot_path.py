"""The hot path: a pod whose secrets are known fresh costs no Kubernetes or cloud call."""

from __future__ import annotations

import time
from typing import Any, NoReturn

import pytest

from tests.support.reviews import make_pod
from webhook.config import Config
from webhook.kube import to_rfc3339
from webhook.needs import PullNeed, pull_needs
from webhook.pullsecrets import (
    ANN_EXPIRES,
    ANN_REFRESH,
    MANAGED_BY,
    MANAGER,
    PullSecretManager,
    SecretRecord,
)

ACR = "contoso.azurecr.io/app:1"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:2"


class NoNetwork:
    """Stands where the Kubernetes client and the credential cache go: any use fails."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"the hot path called {name}()")


def manager(config: Config) -> PullSecretManager:
    kube: Any = NoNetwork()
    cache: Any = NoNetwork()
    return PullSecretManager(config, kube, cache)


def record(
    need: PullNeed, *, expires_in: float, refresh_in: float, managed: bool = True
) -> SecretRecord:
    now = time.time()
    doc = {
        "metadata": {
            "namespace": "team-a",
            "name": need.secret_name,
            "resourceVersion": "7",
            "labels": {MANAGED_BY: MANAGER} if managed else {},
            "annotations": {
                ANN_EXPIRES: to_rfc3339(now + expires_in),
                ANN_REFRESH: to_rfc3339(now + refresh_in),
            },
        }
    }
    return SecretRecord.from_secret(doc)


async def test_known_fresh_secrets_answer_without_any_call(config: Config) -> None:
    m = manager(config)
    needs = pull_needs(config, make_pod(ACR, ECR))
    for need in needs:
        m.index.put(record(need, expires_in=3600, refresh_in=1800))
    outcome = await m.ensure("team-a", needs, budget=6, dry_run=False)
    assert dict(outcome.statuses) == {}


async def test_foreign_secret_is_reported_without_any_call(config: Config) -> None:
    m = manager(config)
    [need] = pull_needs(config, make_pod(ACR))
    m.index.put(record(need, expires_in=3600, refresh_in=1800, managed=False))
    outcome = await m.ensure("team-a", [need], budget=6, dry_run=False)
    assert outcome.status(need.secret_name).state == "foreign"


async def test_dry_run_never_writes_even_when_the_secret_is_missing(config: Config) -> None:
    m = manager(config)
    needs = pull_needs(config, make_pod(ACR))
    outcome = await m.ensure("team-a", needs, budget=6, dry_run=True)
    assert dict(outcome.statuses) == {}


def test_expiry_and_refresh_annotations_round_trip(config: Config) -> None:
    [need] = pull_needs(config, make_pod(ACR))
    r = record(need, expires_in=3600, refresh_in=1800)
    assert r.managed
    assert r.usable(time.time())
    assert r.refresh_at == pytest.approx(time.time() + 1800, abs=2)
    assert not record(need, expires_in=30, refresh_in=-10).usable(time.time())
