"""The hot path: a pod whose secrets are known fresh costs no Kubernetes or cloud call."""

from __future__ import annotations

import time

import pytest

from devenv.support.hotpath import known_secret, offline_manager, remember
from devenv.support.reviews import make_pod
from webhook.admission.needs import pull_needs
from webhook.config.schema import Config
from webhook.pullsecrets.records import ManagedSecret

ACR = "contoso.azurecr.io/app:1"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:2"


async def test_known_fresh_secrets_answer_without_any_call(config: Config) -> None:
    m = offline_manager(config)
    needs = pull_needs(config, make_pod(ACR, ECR))
    for need in needs:
        remember(m, known_secret(need, expires_in=3600, refresh_in=1800))
    outcome = await m.ensure("team-a", needs, budget=6, dry_run=False)
    assert dict(outcome.statuses) == {}


async def test_foreign_secret_is_reported_without_any_call(config: Config) -> None:
    m = offline_manager(config)
    [need] = pull_needs(config, make_pod(ACR))
    remember(m, known_secret(need, expires_in=3600, refresh_in=1800, state="Foreign"))
    outcome = await m.ensure("team-a", [need], budget=6, dry_run=False)
    assert outcome.status(need.secret_name).state == "foreign"


async def test_dry_run_never_writes_even_when_the_secret_is_missing(config: Config) -> None:
    m = offline_manager(config)
    needs = pull_needs(config, make_pod(ACR))
    outcome = await m.ensure("team-a", needs, budget=6, dry_run=True)
    assert dict(outcome.statuses) == {}


def test_records_round_trip_through_their_objects(config: Config) -> None:
    [need] = pull_needs(config, make_pod(ACR))
    r = ManagedSecret.from_object(known_secret(need).to_object("pull-secret-webhook"))
    assert r is not None and r.state == "Ready"
    assert r.usable(time.time())
    assert r.refresh_at == pytest.approx(time.time() + 1800, abs=2)
    assert not known_secret(need, expires_in=30, refresh_in=-10).usable(time.time())


def test_a_record_whose_name_does_not_match_its_secret_is_ignored(config: Config) -> None:
    [need] = pull_needs(config, make_pod(ACR))
    doc = known_secret(need).to_object("pull-secret-webhook")
    doc["metadata"]["name"] = "team-b." + need.secret_name
    assert ManagedSecret.from_object(doc) is None
