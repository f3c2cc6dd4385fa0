"""The credential cache's rules, with a scripted provider: single-flight, refresh
ahead of expiry, failures remembered briefly, deadlines."""

from __future__ import annotations

import asyncio
import logging
import math
import subprocess
import sys
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import pytest

from devenv.support.configs import sample_config
from tests.support.clock import Clock
from tests.support.refresh import assert_refreshes_at
from webhook.admission.needs import PullNeed, match_images
from webhook.config.acr import AcrEntry
from webhook.config.ecr import EcrEntry
from webhook.config.generic import GenericEntry
from webhook.config.kinds import KINDS, RegistryEntry
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import Credential, CredentialCache, RegistryAuthError, RetryPolicy
from webhook.credentials.acr import AcrProvider
from webhook.credentials.base import EXPIRY_MARGIN, Attempt
from webhook.credentials.cache import (
    NEGATIVE_TTL_PERMANENT,
    NEGATIVE_TTL_TRANSIENT,
    PRUNE_EVERY,
)
from webhook.credentials.ecr import EcrProvider
from webhook.credentials.generic import GenericProvider

FAST = RetryPolicy(first_delay=0.001, max_delay=0.005)
LIFETIME = 3600.0
HOST = "harbor.example.com"


@dataclass
class ScriptedProvider:
    """Answers each fetch with the next scripted outcome (default: a new credential)."""

    clock: Clock
    outcomes: list[Exception | float] = field(default_factory=list)
    """An exception to raise, or a lifetime for the credential to return."""
    gate: asyncio.Event | None = None
    fetches: int = 0
    closed: bool = False
    recheck_seconds: float | None = None

    def cache_key(self, need: PullNeed, namespace: str) -> Hashable:
        return (need.entry.name, need.identity.key)

    async def fetch(self, need: PullNeed, namespace: str, attempt: Attempt) -> Credential:
        self.fetches += 1
        attempt.step = "scripted"
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else LIFETIME
        if isinstance(outcome, Exception):
            raise outcome
        now = self.clock()
        return Credential("user", f"password-{self.fetches}", (need.host,), now + outcome, now)

    async def aclose(self) -> None:
        self.closed = True


def failure(*, transient: bool, code: str = "503") -> RegistryAuthError:
    return RegistryAuthError(
        entry="harbor", identity="x", step="scripted", code=code, transient=transient
    )


@pytest.fixture
def config() -> Config:
    return sample_config()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(clock: Clock) -> ScriptedProvider:
    return ScriptedProvider(clock)


def need(config: Config, host: str = HOST) -> PullNeed:
    found = match_images(config, [f"{host}/app:1"])[0].need
    assert found is not None
    return found


def cache_for(config: Config, clock: Clock, provider: ScriptedProvider) -> CredentialCache:
    return CredentialCache(
        ConfigStore(config), clock=clock, retry=FAST, providers={GenericEntry: provider}
    )


async def test_two_hundred_concurrent_gets_share_one_exchange(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    provider.gate = asyncio.Event()
    async with cache_for(config, clock, provider) as cache:
        waiting = [asyncio.create_task(cache.get(need(config), "team-a")) for _ in range(200)]
        await asyncio.sleep(0)
        provider.gate.set()
        results = await asyncio.gather(*waiting)
    assert provider.fetches == 1
    assert cache.exchanges == 1
    assert {r.password for r in results} == {"password-1"}


@pytest.mark.parametrize("fraction", [0.5, 0.8], ids=["half", "four-fifths"])
async def test_a_credential_is_reused_until_the_refresh_fraction_of_its_life(
    config: Config, clock: Clock, provider: ScriptedProvider, fraction: float
) -> None:
    async with CredentialCache(
        ConfigStore(config), clock=clock, fraction=fraction, providers={GenericEntry: provider}
    ) as cache:
        first = await cache.get(need(config), "team-a")
        clock.now += fraction * LIFETIME - 1
        assert await cache.get(need(config), "team-a") == first
        assert provider.fetches == 1
        await assert_refreshes_at(
            cache,
            need(config),
            "team-a",
            clock,
            lambda: provider.fetches,
            first.issued_at + fraction * LIFETIME,
        )
        second = await cache.get(need(config), "team-a")
    assert provider.fetches == 2
    assert second.password == "password-2"


async def test_the_configured_refresh_fraction_is_the_default(
    clock: Clock, provider: ScriptedProvider
) -> None:
    config = sample_config()
    async with cache_for(config, clock, provider) as cache:
        first = await cache.get(need(config), "team-a")
        await assert_refreshes_at(
            cache,
            need(config),
            "team-a",
            clock,
            lambda: provider.fetches,
            first.refresh_at(config.refresh.fraction),
        )


async def test_a_provider_recheck_interval_brings_the_refresh_forward(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    provider.recheck_seconds = 30.0
    async with cache_for(config, clock, provider) as cache:
        await cache.get(need(config), "team-a")
        await assert_refreshes_at(
            cache, need(config), "team-a", clock, lambda: provider.fetches, clock.now + 30.0
        )


async def test_a_failing_source_gets_the_old_credential_served_until_its_expiry_margin(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    async with cache_for(config, clock, provider) as cache:
        credential = await cache.get(need(config), "team-a")
        provider.outcomes = [failure(transient=True)] * FAST.max_attempts
        clock.now = math.nextafter(credential.expires_at - EXPIRY_MARGIN, -math.inf)
        assert await cache.get(need(config), "team-a") == credential
        # Still inside the failure's negative TTL: no new exchange, and no longer usable.
        clock.now = credential.expires_at - EXPIRY_MARGIN
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a")
    assert caught.value.code == "503"
    assert provider.fetches == 1 + FAST.max_attempts


async def test_a_transient_failure_is_retried_inside_one_get(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    provider.outcomes = [failure(transient=True), failure(transient=True)]
    async with cache_for(config, clock, provider) as cache:
        credential = await cache.get(need(config), "team-a")
    assert provider.fetches == 3
    assert credential.password == "password-3"


@pytest.mark.parametrize(
    ("transient", "ttl"),
    [(True, NEGATIVE_TTL_TRANSIENT), (False, NEGATIVE_TTL_PERMANENT)],
    ids=["transient", "permanent"],
)
async def test_a_failure_is_remembered_for_its_negative_ttl_only(
    config: Config, clock: Clock, provider: ScriptedProvider, transient: bool, ttl: float
) -> None:
    # A transient failure is tried max_attempts times, a permanent one once.
    provider.outcomes = [failure(transient=transient)] * (FAST.max_attempts if transient else 1)
    async with cache_for(config, clock, provider) as cache:
        with pytest.raises(RegistryAuthError) as first:
            await cache.get(need(config), "team-a")
        fetched = provider.fetches
        clock.now += ttl - 0.1
        with pytest.raises(RegistryAuthError) as again:
            await cache.get(need(config), "team-a")
        assert provider.fetches == fetched
        assert again.value is not first.value
        assert (again.value.code, again.value.transient) == ("503", transient)
        clock.now += 0.2
        await cache.get(need(config), "team-a")
    assert provider.fetches == fetched + 1


async def test_a_transient_refresh_failure_serves_the_still_valid_credential(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    async with cache_for(config, clock, provider) as cache:
        first = await cache.get(need(config), "team-a")
        clock.now += 0.9 * LIFETIME
        provider.outcomes = [failure(transient=True)] * FAST.max_attempts
        assert await cache.get(need(config), "team-a") == first


async def test_a_permanent_refresh_failure_stops_serving_the_old_credential(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    async with cache_for(config, clock, provider) as cache:
        await cache.get(need(config), "team-a")
        clock.now += 0.9 * LIFETIME
        provider.outcomes = [failure(transient=False, code="401")]
        with pytest.raises(RegistryAuthError):
            await cache.get(need(config), "team-a")
        # Within the failure's negative TTL a transient one would be answered with the
        # old credential; a permanent one dropped it, so its error is all that is left.
        with pytest.raises(RegistryAuthError) as again:
            await cache.get(need(config), "team-a")
    assert again.value.code == "401"
    assert provider.fetches == 2


async def test_a_credential_expired_on_arrival_is_blamed_on_the_clock(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    provider.outcomes = [-10.0]
    async with cache_for(config, clock, provider) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a")
    assert (caught.value.code, caught.value.transient) == ("expired-on-arrival", False)
    assert "clock" in caught.value.hint


async def test_a_deadline_bounds_the_wait_but_not_the_exchange(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    provider.gate = asyncio.Event()
    async with cache_for(config, clock, provider) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a", deadline=time.monotonic() + 0.05)
        assert (caught.value.step, caught.value.code) == ("exchange", "timeout")
        assert caught.value.transient
        provider.gate.set()
        credential = await cache.get(need(config), "team-a")
    assert credential.password == "password-1"
    assert provider.fetches == 1


async def test_a_deadline_already_past_still_returns_a_fresh_credential(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    async with cache_for(config, clock, provider) as cache:
        first = await cache.get(need(config), "team-a")
        assert await cache.get(need(config), "team-a", deadline=time.monotonic() - 1) == first


async def test_an_unexpected_provider_error_is_reported_without_its_text(
    config: Config, clock: Clock, provider: ScriptedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    provider.outcomes = [KeyError("password=hunter2")]
    async with cache_for(config, clock, provider) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a")
    assert (caught.value.code, caught.value.message) == ("internal-error", "KeyError")
    assert not caught.value.transient
    assert provider.fetches == 1
    assert "hunter2" not in caplog.text and "hunter2" not in str(caught.value)


async def test_closing_cancels_exchanges_and_closes_providers(
    config: Config, clock: Clock, provider: ScriptedProvider
) -> None:
    provider.gate = asyncio.Event()
    cache = cache_for(config, clock, provider)
    waiter = asyncio.create_task(cache.get(need(config), "team-a"))
    await asyncio.sleep(0)
    await cache.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert provider.closed
    with pytest.raises(RuntimeError):
        await cache.get(need(config), "team-a")


async def test_each_kind_gets_its_own_provider(config: Config) -> None:
    async with CredentialCache(ConfigStore(config)) as cache:
        assert isinstance(cache.provider(AcrEntry), AcrProvider)
        assert isinstance(cache.provider(EcrEntry), EcrProvider)
        assert isinstance(cache.provider(GenericEntry), GenericProvider)
        assert cache.provider(EcrEntry) is cache.provider(EcrEntry)


async def test_every_kind_an_entry_can_have_has_a_provider_from_the_module_serve_imports(
    config: Config,
) -> None:
    assert {kind.entry for kind in KINDS} == set(get_args(RegistryEntry))
    async with CredentialCache(ConfigStore(config)) as cache:
        for kind in KINDS:
            assert type(cache.provider(kind.entry)).__module__ == kind.provider


async def test_exchanges_are_logged_without_the_password(
    config: Config, clock: Clock, provider: ScriptedProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with cache_for(config, clock, provider) as cache:
        credential = await cache.get(need(config), "team-a")
    assert "valid for 3600s" in caplog.text
    assert credential.password not in caplog.text
    assert credential.password not in repr(credential)


@dataclass
class PerNamespaceProvider(ScriptedProvider):
    def cache_key(self, need: PullNeed, namespace: str) -> Hashable:
        return namespace


async def test_keys_of_expired_credentials_are_pruned_as_exchanges_go_on(
    config: Config, clock: Clock
) -> None:
    provider = PerNamespaceProvider(clock)
    async with cache_for(config, clock, provider) as cache:
        await cache.get(need(config), "old-namespace")
        clock.now += LIFETIME
        for i in range(PRUNE_EVERY - 1):
            await cache.get(need(config), f"ns-{i}")
        # The 256th exchange pruned the expired key: nothing is left to prune...
        assert cache.prune() == 0
        # ...and the live keys were kept: ns-0 is served without a new exchange.
        fetched = provider.fetches
        await cache.get(need(config), "ns-0")
        assert provider.fetches == fetched == PRUNE_EVERY


async def test_a_timeout_names_the_step_and_code_the_exchange_is_retrying(
    config: Config, clock: Clock
) -> None:
    provider = ScriptedProvider(clock, outcomes=[failure(transient=True)] * 100)
    slow = RetryPolicy(first_delay=0.2, max_delay=0.2, max_attempts=100)
    async with CredentialCache(
        ConfigStore(config), clock=clock, retry=slow, providers={GenericEntry: provider}
    ) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(need(config), "team-a", deadline=time.monotonic() + 0.1)
    error = caught.value
    assert (error.step, error.code, error.transient) == ("scripted", "timeout", True)
    assert "last attempt: 503" in error.message


PRELOAD_SCRIPT = """
import sys
from devenv.support.configs import sample_document
from webhook.config.load import parse_config
from webhook.credentials.cache import import_providers

document = sample_document()
document["registries"] = [r for r in document["registries"] if r["kind"] == "ecr"]
config = parse_config(document)
assert "webhook.credentials.ecr" not in sys.modules, "imported before"
import_providers(config)
print(sorted(m for m in ("webhook.credentials.acr", "webhook.credentials.ecr") if m in sys.modules))
"""


def test_import_providers_imports_the_named_kinds_only() -> None:
    # A fresh interpreter: in this one, other tests have imported every provider.
    proc = subprocess.run(
        [sys.executable, "-c", PRELOAD_SCRIPT],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['webhook.credentials.ecr']"  # the config names ECR only


GOOGLE_FOOTPRINT_SCRIPT = """
import sys
from devenv.support.configs import sample_document
from webhook.cli import doctor, explain, serve, validate
from webhook.config.load import parse_config
from webhook.credentials.cache import import_providers

document = sample_document()
others = [r for r in document["registries"] if r["kind"] != "gar"]
import_providers(parse_config(dict(document, registries=others)))  # every kind but gar
before = sorted(m for m in sys.modules if m == "google" or m.startswith("google."))
gar = {"name": "gar", "kind": "gar", "anyRegistry": True}
import_providers(parse_config({"registries": [gar]}))
print(before, "google.auth" in sys.modules, "webhook.credentials.gar" in sys.modules)
"""


def test_google_auth_is_imported_only_when_a_gar_entry_is_configured() -> None:
    # A fresh interpreter, as above: the commands and every other kind's provider leave
    # google-auth (and its requests transport) out of a replica's memory.
    proc = subprocess.run(
        [sys.executable, "-c", GOOGLE_FOOTPRINT_SCRIPT],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] True True"
