"""Work waiting on an unreachable API server resumes within about a second of its return:
background retries of pull secrets and watches listing again, woken by ``ApiHealth``;
credential failures keep the kubelet-aligned schedule. The refresher follows config
reloads. Against the in-memory API (devenv/support/memkube.py), in real time."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devenv.support.configs import sample_document
from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from devenv.support.reviews import make_pod
from webhook.admission.needs import PullNeed, pull_needs
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials.base import Credential, RegistryAuthError
from webhook.kube import informer as informer_module
from webhook.kube.health import JITTER, PROBE_MAX_SECONDS, ApiHealth
from webhook.kube.informer import RECOVERY_SPREAD_SECONDS, Informer
from webhook.kube.objects import KubeAPIError
from webhook.pullsecrets import retries
from webhook.pullsecrets.manager import PullSecretManager
from webhook.pullsecrets.namespaces import NamespaceIndex
from webhook.pullsecrets.records import ManagedSecret
from webhook.pullsecrets.retries import (
    RESUME_SPREAD_MIN,
    RETRY_API_FIRST_SECONDS,
    RETRY_FIRST_SECONDS,
)
from webhook.upkeep.refresher import Refresher

ACR = "contoso.azurecr.io/app:1"
#: The API server's return is noticed by the next probe (at most PROBE_MAX_SECONDS,
#: jittered, apart); the woken retry starts within the resume spread and writes at once.
NOTICED_WITHIN = PROBE_MAX_SECONDS * (1 + JITTER) + RESUME_SPREAD_MIN + 0.5


class Minter:
    """The credential cache's place: a fresh credential per call, or a registry refusal."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls = 0

    async def get(self, need: PullNeed, namespace: str) -> Credential:
        self.calls += 1
        if self.refuse:
            raise RegistryAuthError(
                entry=need.entry.name, identity="wi", step="acr-exchange", code="401"
            )
        now = time.time()
        return Credential("user", f"token-{self.calls}", (need.host,), now + 3600, issued_at=now)


def manager(config: Config, kube: MemKube, minter: Minter) -> PullSecretManager:
    m = PullSecretManager(ConfigStore(config), kube, minter, health=kube.health)
    m.namespaces.replace_all(opted_in("team-a"))
    return m


async def wait_until(predicate: Any, within: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``within`` seconds."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < within, f"not within {within:g}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_secret_unwritable_while_the_api_was_unreachable_is_made_as_it_returns(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A back-off far longer than the test: only the API server's return can wake the retry.
    monkeypatch.setattr(retries, "RETRY_API_FIRST_SECONDS", 60.0)
    kube = MemKube()
    m = manager(config, kube, Minter())
    [need] = pull_needs(config, make_pod(ACR))
    kube.unreachable = True
    outcome = await m.ensure("team-a", [need], budget=2, dry_run=False)
    status = outcome.status(need.secret_name)
    assert status.state == "pending" and status.api_unavailable
    assert kube.health.down
    await asyncio.sleep(1.0)
    assert kube.calls["create_secret"] == 1  # waiting, not retrying in a loop
    assert 1 <= kube.probes <= 2  # one cheap probe every 0.5-2 s
    kube.unreachable = False
    took = await wait_until(lambda: ("team-a", need.secret_name) in kube.secrets, NOTICED_WITHIN)
    assert took < NOTICED_WITHIN < RETRY_FIRST_SECONDS
    assert not kube.health.down
    assert kube.calls["create_secret"] == 2
    await m.close()


async def test_a_refusal_from_an_api_server_just_back_is_retried_on_its_cadence(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kube-apiserver just restarted says ready a moment before its authorizer has
    caught up: the 403 it gives then is retried after ~1 s, not on the 5 s schedule."""
    monkeypatch.setattr(retries, "RETRY_API_FIRST_SECONDS", 60.0)
    kube = MemKube()
    m = manager(config, kube, Minter())
    [need] = pull_needs(config, make_pod(ACR))
    create_secret = kube.create_secret
    refusals = [KubeAPIError(403, "Forbidden", "cannot create resource")]

    async def settling(namespace: str, body: Any) -> dict[str, Any]:
        if not kube.unreachable and refusals:
            raise refusals.pop()
        return await create_secret(namespace, body)

    kube.create_secret = settling  # type: ignore[method-assign]
    kube.unreachable = True
    await m.ensure("team-a", [need], budget=2, dry_run=False)
    await asyncio.sleep(0.2)
    kube.unreachable = False
    # Woken by the return, refused once, then retried 1 s (jittered) later: the back-off
    # starts afresh after an outage (the 60 s set above would otherwise apply).
    monkeypatch.setattr(retries, "RETRY_API_FIRST_SECONDS", 1.0)
    took = await wait_until(
        lambda: ("team-a", need.secret_name) in kube.secrets, NOTICED_WITHIN + 1.3
    )
    assert refusals == [] and took < RETRY_FIRST_SECONDS
    await m.close()


async def test_retries_while_the_api_server_stays_away_back_off_from_a_second(
    config: Config,
) -> None:
    kube = MemKube()
    m = manager(config, kube, Minter())
    [need] = pull_needs(config, make_pod(ACR))
    attempts: list[float] = []
    create_secret = kube.create_secret

    async def timed(namespace: str, body: Any) -> dict[str, Any]:
        attempts.append(time.monotonic())
        return await create_secret(namespace, body)

    kube.create_secret = timed  # type: ignore[method-assign]
    kube.unreachable = True  # and stays so: the probes find it down too
    await m.ensure("team-a", [need], budget=2, dry_run=False)
    await asyncio.sleep(RETRY_API_FIRST_SECONDS * 3 * (1 + JITTER) + 0.1)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) == 2, gaps  # ~1 s, then ~2 s (the next would come ~4 s later)
    for gap, expected in zip(gaps, (1, 2), strict=True):
        low = RETRY_API_FIRST_SECONDS * expected * (1 - JITTER)
        high = RETRY_API_FIRST_SECONDS * expected * (1 + JITTER) + 0.1
        assert low <= gap <= high, gaps
    await m.close()


async def test_a_credential_refused_by_the_registry_keeps_the_kubelet_schedule(
    config: Config,
) -> None:
    kube = MemKube()
    minter = Minter(refuse=True)
    m = manager(config, kube, minter)
    [need] = pull_needs(config, make_pod(ACR))
    outcome = await m.ensure("team-a", [need], budget=2, dry_run=False)
    status = outcome.status(need.secret_name)
    assert status.state == "pending" and not status.api_unavailable
    # The API server going away and coming back says nothing about the registry: the
    # retry still waits out its RETRY_FIRST_SECONDS.
    kube.health.failed(0)
    kube.health.succeeded()
    await asyncio.sleep(RETRY_API_FIRST_SECONDS * 1.5)
    assert minter.calls == 1
    await m.close()


async def test_a_credential_read_from_an_unreachable_api_server_waits_for_its_return(
    config: Config,
) -> None:
    """A Secret or TokenRequest the credential needs from the API server: that failure
    (RegistryAuthError caused by status 0) follows the API server, not the registry."""
    kube = MemKube()
    minter = Minter()
    m = manager(config, kube, minter)
    [need] = pull_needs(config, make_pod(ACR))
    real_get = minter.get

    async def get(need: PullNeed, namespace: str) -> Credential:
        if kube.unreachable:
            kube.health.failed(0)
            try:
                raise KubeAPIError(0, "ClientConnectorError", "Connection refused")
            except KubeAPIError as e:
                raise RegistryAuthError(
                    entry=need.entry.name, identity="sa", step="read-secret", code="0"
                ) from e
        return await real_get(need, namespace)

    minter.get = get  # type: ignore[method-assign]
    kube.unreachable = True
    outcome = await m.ensure("team-a", [need], budget=2, dry_run=False)
    assert outcome.status(need.secret_name).api_unavailable
    await asyncio.sleep(0.2)
    kube.unreachable = False
    took = await wait_until(lambda: ("team-a", need.secret_name) in kube.secrets, NOTICED_WITHIN)
    assert took < RETRY_FIRST_SECONDS
    await m.close()


async def test_a_watch_backing_off_lists_again_as_soon_as_the_api_server_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(informer_module, "RETRY_SECONDS", 60.0)  # only a wake-up can help
    health = ApiHealth()  # no probe: another call's success is what clears it
    index = NamespaceIndex(set())
    lists: list[float] = []
    up = False

    async def lister() -> tuple[list[dict[str, Any]], str]:
        lists.append(time.monotonic())
        if not up:
            health.failed(0)
            raise KubeAPIError(0, "ClientConnectorError", "Connection refused")
        return opted_in("team-a"), "10"

    async def watcher(version: str) -> AsyncIterator[dict[str, Any]]:
        await asyncio.sleep(3600)
        yield {}

    informer = Informer("namespaces", lister, watcher, index, health=health)
    informer.start()
    try:
        await asyncio.sleep(0.3)
        assert len(lists) == 1
        up = True
        health.succeeded()  # e.g. the records watch got through first
        took = await wait_until(informer.synced.is_set, RECOVERY_SPREAD_SECONDS + 0.5)
        assert took <= RECOVERY_SPREAD_SECONDS + 0.3
        assert len(lists) == 2 and index.refusal("team-a") is None
    finally:
        await informer.close()


async def test_a_watch_refused_by_an_api_server_just_back_lists_again_after_the_first_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its back-off grown during the outage, a watch that lists on its own timer just
    after the API server's return and is refused (403: the authorizer not caught up)
    starts its back-off afresh instead of doubling it."""
    monkeypatch.setattr(informer_module, "RETRY_SECONDS", 0.1)
    health = ApiHealth()
    lists: list[float] = []
    outcome: list[int] = [0, 0, 0, 0, 403]  # four refused connections, then a 403

    async def lister() -> tuple[list[dict[str, Any]], str]:
        lists.append(time.monotonic())
        if outcome:
            status = outcome.pop(0)
            if status == 0:
                health.failed(0)
            else:
                health.succeeded()  # it answered another call a moment before
            raise KubeAPIError(status, "refused", "")
        return opted_in("team-a"), "10"

    async def watcher(version: str) -> AsyncIterator[dict[str, Any]]:
        await asyncio.sleep(3600)
        yield {}

    monkeypatch.setattr(ApiHealth, "until_recovered", _plain_sleep)  # no wake-ups here
    informer = Informer("namespaces", lister, watcher, NamespaceIndex(set()), health=health)
    informer.start()
    try:
        await wait_until(informer.synced.is_set, 5.0)
    finally:
        await informer.close()
    gaps = [b - a for a, b in itertools.pairwise(lists)]
    # 0.1, 0.2, 0.4, 0.8 (jittered) while down; then, just back, 0.1 again, not 1.6.
    assert len(gaps) == 5 and gaps[3] >= 0.8 * (1 - JITTER), gaps
    assert gaps[4] <= 0.1 * (1 + JITTER) + 0.05, gaps


async def _plain_sleep(self: ApiHealth, seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return False


async def test_api_health_counts_only_unavailability_and_a_probe_clears_it() -> None:
    answers = [False, True]

    async def probe() -> bool:
        return answers.pop(0)

    health = ApiHealth(probe)
    for status in (403, 404, 409, 422, 429, 500):
        health.failed(status)
        assert not health.down, status
    health.failed(503)
    assert health.down and health.outages == 1
    health.failed(0)  # the same outage
    assert health.outages == 1
    woken = await health.until_recovered(5.0)  # probes at ~0.5 s (not ready), ~1.5 s (ready)
    assert woken and not health.down and answers == []
    assert not await health.until_recovered(0.01)  # up: a plain sleep
    await health.close()


def test_the_refresher_renews_by_the_entries_of_a_reloaded_config() -> None:
    first = parse_config(sample_document())
    document = sample_document()
    document["registries"][0]["name"] = "contoso-renamed"
    reloaded = parse_config(document)
    store = ConfigStore(first)
    kube = MemKube()
    m = PullSecretManager(ConfigStore(first), kube, Minter())
    refresher = Refresher(store, m, kube, "replica-0", writer=m.writer, collector=m.collector)
    [need] = pull_needs(reloaded, make_pod(ACR))
    record = ManagedSecret(
        namespace="team-a",
        name=need.secret_name,
        entry="contoso-renamed",
        host=need.host,
        identity=need.identity.key,
        service_account="",
        claimed_at=0.0,
    )
    assert refresher.need_for(record) is None  # the entry is not in the config in use
    store.current = reloaded
    store.generation += 1
    rebuilt = refresher.need_for(record)
    assert rebuilt is not None and rebuilt.entry.name == "contoso-renamed"
    assert rebuilt.secret_name == need.secret_name
