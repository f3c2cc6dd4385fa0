"""Credentials ahead of need (``CredentialCache.keep_ahead``): each ``prefetch`` entry's
listed hosts exchanged before any pod asks, a credential in use exchanged again before
its refresh point while admissions are served from the old one, and nothing exchanged
ahead for what nobody asks for, for a per-pod identity, or after a failure."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from devenv.support.configs import sample_document
from tests.support.clock import Clock
from webhook.admission.needs import PullNeed, match_images
from webhook.config.generic import GenericEntry
from webhook.config.load import ConfigError, parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import Credential, CredentialCache, RegistryAuthError, RetryPolicy
from webhook.credentials.base import Attempt
from webhook.credentials.cache import NEGATIVE_TTL_PERMANENT, prefetched

FAST = RetryPolicy(first_delay=0.001, max_delay=0.005)
LIFETIME = 3600.0
FRACTION = 0.5
#: ``keep_ahead``'s period here: its checks come every 10 ms of real time; the clock the
#: cache reads only moves when a test moves it.
PERIOD = 0.01


@dataclass
class Provider:
    """Generic entries' exchanges, counted per host; ``outcomes`` scripts failures, and
    ``gate`` holds an exchange until it is set."""

    clock: Clock
    outcomes: list[Exception] = field(default_factory=list)
    gate: asyncio.Event | None = None
    fetches: list[str] = field(default_factory=list)
    recheck_seconds: float | None = None

    def cache_key(self, need: PullNeed, namespace: str) -> Hashable:
        return (need.entry.name, need.host)

    async def fetch(self, need: PullNeed, namespace: str, attempt: Attempt) -> Credential:
        self.fetches.append(need.host)
        attempt.step = "scripted"
        if self.gate is not None:
            await self.gate.wait()
        if self.outcomes:
            raise self.outcomes.pop(0)
        now = self.clock()
        n = len(self.fetches)
        return Credential("user", f"password-{n}", (need.host,), now + LIFETIME, now)

    async def aclose(self) -> None:
        pass


def document(**harbor: Any) -> dict[str, Any]:
    """The sample config with its one ACR entry of listed hosts not prefetched (no test
    here reaches Entra ID), and ``harbor``'s keys changed as given."""
    doc = copy.deepcopy(sample_document())
    for entry in doc["registries"]:
        if entry["name"] == "contoso":
            entry["prefetch"] = False
        if entry["name"] == "harbor":
            entry.update(harbor)
    return doc


def need(config: Config, host: str) -> PullNeed:
    found = match_images(config, [f"{host}/app:1"])[0].need
    assert found is not None
    return found


async def until(what: str, done: Callable[[], bool], limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        if done():
            return
        assert loop.time() < deadline, f"not within {limit:g} s: {what}"
        await asyncio.sleep(PERIOD / 2)


async def ticks(n: int = 5) -> None:
    """Long enough for ``keep_ahead`` to have looked ``n`` times."""
    await asyncio.sleep(n * PERIOD)


@asynccontextmanager
async def ahead(
    store: ConfigStore, clock: Clock, provider: Provider
) -> AsyncIterator[CredentialCache]:
    cache = CredentialCache(
        store, clock=clock, fraction=FRACTION, retry=FAST, providers={GenericEntry: provider}
    )
    task = asyncio.create_task(cache.keep_ahead(PERIOD))
    try:
        yield cache
    finally:
        task.cancel()
        await cache.aclose()


def test_prefetched_needs_are_the_listed_hosts_of_the_webhooks_own_identity() -> None:
    config = parse_config(sample_document())
    got = sorted((n.entry.name, n.host) for n in prefetched(config))
    # contoso (acr, one host) and harbor (generic, two hosts); not the anyRegistry
    # families (no host is known before a pod names one) nor tenant-ecr (per pod).
    assert got == [
        ("contoso", "contoso.azurecr.io"),
        ("harbor", "127.0.0.1:5000"),
        ("harbor", "harbor.example.com"),
    ]
    assert [n.entry.name for n in prefetched(parse_config(document(prefetch=False)))] == []
    tenant = [e for e in config.registries if e.name == "tenant-ecr"]
    assert tenant and not tenant[0].prefetch


def test_prefetch_is_refused_for_a_per_pod_identity_and_must_be_a_boolean() -> None:
    doc = copy.deepcopy(sample_document())
    for entry in doc["registries"]:
        if entry["name"] == "tenant-ecr":
            entry["prefetch"] = True
        if entry["name"] == "harbor":
            entry["prefetch"] = "yes"
    with pytest.raises(ConfigError) as refused:
        parse_config(doc)
    assert refused.value.problems == [
        "registries[3].prefetch: got True, expected false or absent with a per-pod identity",
        "registries[4].prefetch: got 'yes', expected true or false",
    ]


async def test_each_listed_host_is_exchanged_before_any_pod_asks_and_the_pod_waits_for_none() -> (
    None
):
    clock = Clock()
    provider = Provider(clock)
    config = parse_config(document())
    async with ahead(ConfigStore(config), clock, provider) as cache:
        await until("both hosts prefetched", lambda: len(provider.fetches) == 2)
        assert sorted(provider.fetches) == ["127.0.0.1:5000", "harbor.example.com"]
        provider.gate = asyncio.Event()  # an exchange now would hang the get below
        got = await asyncio.wait_for(cache.get(need(config, "harbor.example.com"), "team-a"), 1)
        assert got.hosts == ("harbor.example.com",)
        await ticks()
        assert len(provider.fetches) == 2  # once per configuration, not again


async def test_an_entry_without_prefetch_is_exchanged_only_when_a_pod_asks() -> None:
    clock = Clock()
    provider = Provider(clock)
    config = parse_config(document(prefetch=False))
    async with ahead(ConfigStore(config), clock, provider) as cache:
        await ticks()
        assert provider.fetches == []
        await cache.get(need(config, "harbor.example.com"), "team-a")
        assert provider.fetches == ["harbor.example.com"]


async def test_a_reload_prefetches_the_hosts_it_adds() -> None:
    clock = Clock()
    provider = Provider(clock)
    store = ConfigStore(parse_config(document(hosts=["harbor.example.com"])))
    async with ahead(store, clock, provider):
        await until("the first host", lambda: provider.fetches == ["harbor.example.com"])
        store.replace(parse_config(document(hosts=["harbor.example.com", "two.example.com"])))
        await until("the added host", lambda: len(provider.fetches) == 2)
        # harbor.example.com's credential is still fresh: only the new host's exchange.
        assert provider.fetches == ["harbor.example.com", "two.example.com"]


async def test_a_credential_in_use_is_renewed_before_its_refresh_point_and_nobody_waits() -> None:
    clock = Clock()
    provider = Provider(clock)
    config = parse_config(document(prefetch=False))
    harbor = need(config, "harbor.example.com")
    async with ahead(ConfigStore(config), clock, provider) as cache:
        first = await cache.get(harbor, "team-a")
        assert first.password == "password-1"
        # Just before its refresh point (half its life): the next exchange starts in the
        # background, and a pod meanwhile is served from the first credential at once.
        provider.gate = asyncio.Event()
        clock.now = first.refresh_at(FRACTION) - PERIOD
        await until("the exchange ahead", lambda: len(provider.fetches) == 2)
        served = await asyncio.wait_for(cache.get(harbor, "team-b"), 1)
        assert served.password == "password-1"
        provider.gate.set()
        await until(
            "the renewed credential",
            lambda: not cache._slots[("harbor", "harbor.example.com")].task,
        )
        renewed = await asyncio.wait_for(cache.get(harbor, "team-c"), 1)
        assert renewed.password == "password-2"
        assert len(provider.fetches) == 2


async def test_a_credential_nobody_asks_for_again_lapses_and_is_exchanged_on_need() -> None:
    clock = Clock()
    provider = Provider(clock)
    config = parse_config(document(hosts=["harbor.example.com"]))
    async with ahead(ConfigStore(config), clock, provider) as cache:
        await until("the prefetch", lambda: len(provider.fetches) == 1)
        clock.now += LIFETIME * FRACTION + 1  # past its refresh point, never asked for
        await ticks()
        assert len(provider.fetches) == 1
        got = await cache.get(need(config, "harbor.example.com"), "team-a")
        assert got.password == "password-2" and len(provider.fetches) == 2
        # Asked for once: renewed ahead once, then lapses again.
        clock.now += LIFETIME * FRACTION + 1
        await until("the renewal ahead", lambda: len(provider.fetches) == 3)
        clock.now += LIFETIME * FRACTION + 1
        await ticks()
        assert len(provider.fetches) == 3


async def test_a_failed_prefetch_is_remembered_and_never_retried_ahead() -> None:
    clock = Clock()
    # Refused (a missing role): not retried within the exchange, remembered 15 s.
    refused = RegistryAuthError(
        entry="harbor", identity="x", step="scripted", code="403", transient=False
    )
    provider = Provider(clock, outcomes=[refused])
    config = parse_config(document(hosts=["harbor.example.com"]))
    harbor = need(config, "harbor.example.com")
    async with ahead(ConfigStore(config), clock, provider) as cache:
        await until("the failed prefetch", lambda: len(provider.fetches) == 1)
        await until("its end", lambda: not cache._slots[("harbor", "harbor.example.com")].task)
        # A pod within the failure's memory gets it without a new call ...
        with pytest.raises(RegistryAuthError) as remembered:
            await cache.get(harbor, "team-a")
        assert remembered.value.code == "403"
        clock.now += NEGATIVE_TTL_PERMANENT + 1
        await ticks()
        assert len(provider.fetches) == 1  # ... and nothing retries it ahead
        got = await cache.get(harbor, "team-a")  # the next pod after it tries itself
        assert got.password == "password-2"


async def test_a_per_pod_identity_is_never_exchanged_ahead() -> None:
    clock = Clock()
    config = parse_config(document(prefetch=False))

    @dataclass
    class PerPod(Provider):
        def cache_key(self, need: PullNeed, namespace: str) -> Hashable:
            return (need.entry.name, namespace, need.identity.key)

    provider = PerPod(clock)
    async with ahead(ConfigStore(config), clock, provider) as cache:
        pod = need(config, "harbor.example.com")
        per_pod = PullNeed(
            pod.entry, pod.host, type(pod.identity)("sa:builder", "builder"), pod.secret_name
        )
        first = await cache.get(per_pod, "team-a")
        clock.now = first.refresh_at(FRACTION) + 1
        await ticks()
        assert len(provider.fetches) == 1  # its pod's namespace is all that knows it


async def test_a_credential_in_use_is_still_renewed_ahead_after_a_reload() -> None:
    clock = Clock()
    provider = Provider(clock)
    store = ConfigStore(parse_config(document(hosts=["harbor.example.com"])))
    async with ahead(store, clock, provider) as cache:
        await until("the prefetch", lambda: len(provider.fetches) == 1)
        first = await cache.get(need(store.current, "harbor.example.com"), "team-a")
        # A reload that prefetches again finds this credential fresh and in use: it is
        # left as it is, and still renewed ahead when its refresh point comes.
        store.replace(parse_config(document(hosts=["harbor.example.com", "two.example.com"])))
        await until("the added host", lambda: len(provider.fetches) == 2)
        clock.now = first.refresh_at(FRACTION) - PERIOD
        await until("the renewal ahead", lambda: provider.fetches.count("harbor.example.com") == 2)
