"""A reload reaches every consumer: the pull-secret writer, the credential cache and its
providers read the one ConfigStore at use, not the config they were started with; a setting
that needs a restart is refused by name; and no file, however broken, stops the watch.
Against the in-memory API (devenv/support/memkube.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Hashable
from pathlib import Path

import pytest

from devenv.support.configs import sample_config
from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from devenv.support.reviews import make_pod
from tests.support.refresh import assert_refreshes_at
from webhook.admission.needs import PullNeed, pull_needs
from webhook.config.acr import AcrEntry
from webhook.config.generic import GenericEntry
from webhook.config.load import load_config
from webhook.config.schema import Config, RefreshSettings
from webhook.config.store import ConfigStore
from webhook.config.watch import ConfigWatcher
from webhook.credentials.base import EXPIRY_MARGIN, Attempt, Credential
from webhook.credentials.cache import CredentialCache
from webhook.kube.rfc3339 import from_rfc3339
from webhook.pullsecrets.manager import PullSecretManager
from webhook.pullsecrets.records import CLAIM_SECONDS
from webhook.pullsecrets.renewals import renew_at
from webhook.upkeep import refresher as refresher_module
from webhook.upkeep.refresher import Refresher

ACR = "contoso.azurecr.io/app:1"
#: A credential lifetime long enough for fraction arithmetic to be exact to the second.
LIFETIME = 10_000.0


class Minter:
    """The credential cache's place: a fresh credential per call."""

    async def get(self, need: PullNeed, namespace: str) -> Credential:
        now = time.time()
        return Credential("user", "token", (need.host,), now + LIFETIME, issued_at=now)


def manager(store: ConfigStore, kube: MemKube) -> PullSecretManager:
    m = PullSecretManager(store, kube, Minter(), health=kube.health)
    m.namespaces.replace_all(opted_in("team-a", "team-b"))
    return m


async def test_a_namespace_excluded_by_a_reload_gets_no_secret_from_the_next_admission() -> None:
    config = sample_config()
    store = ConfigStore(config)
    kube = MemKube()
    m = manager(store, kube)
    needs = pull_needs(config, make_pod(ACR))
    assert not (await m.ensure("team-b", needs, budget=2, dry_run=False)).refused
    store.replace(dataclasses.replace(config, excluded_namespaces=("team-b",)))
    kube.secrets.clear()
    outcome = await m.ensure("team-b", needs, budget=2, dry_run=False)
    assert outcome.refused == "namespace is excluded"
    assert not [key for key in kube.secrets if key[0] == "team-b"]
    assert not (await m.ensure("team-a", needs, budget=2, dry_run=False)).refused
    await m.close()


@pytest.mark.parametrize("fraction", [0.1, 0.9])
async def test_a_reloaded_refresh_fraction_dates_the_next_secret(fraction: float) -> None:
    config = sample_config()
    store = ConfigStore(config)
    kube = MemKube()
    m = manager(store, kube)
    store.replace(dataclasses.replace(config, refresh=RefreshSettings(fraction=fraction)))
    [need] = pull_needs(config, make_pod(ACR))
    await m.ensure("team-a", [need], budget=2, dry_run=False)
    annotations = kube.secrets[("team-a", need.secret_name)]["metadata"]["annotations"]
    expires = from_rfc3339(annotations["pull-secret-webhook/expires-at"])
    refresh = from_rfc3339(annotations["pull-secret-webhook/refresh-at"])
    assert expires is not None and refresh is not None
    # The credential's issue time is LIFETIME before its expiry; RFC 3339 keeps seconds.
    # The Secret is due at the fraction plus its own place in the window (renewals).
    issued = expires - LIFETIME
    credential = Credential("u", "p", (need.host,), expires_at=expires, issued_at=issued)
    due = renew_at(credential, fraction, "team-a", need.secret_name)
    assert abs(refresh - due) <= 1.0
    assert issued + fraction * LIFETIME - 1.0 <= refresh <= expires - EXPIRY_MARGIN
    await m.close()


async def test_the_credential_cache_renews_by_the_fraction_in_use_now() -> None:
    config = sample_config()
    store = ConfigStore(config)
    [need] = pull_needs(config, make_pod("harbor.example.com/app:1"))

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()

    class Fresh:
        recheck_seconds: float | None = None
        fetches = 0

        def cache_key(self, need: PullNeed, namespace: str) -> Hashable:
            return ("generic", need.entry.name, need.host)

        async def fetch(self, need: PullNeed, namespace: str, attempt: Attempt) -> Credential:
            self.fetches += 1
            now = clock()
            return Credential("u", "p", (need.host,), now + LIFETIME, issued_at=now)

        async def aclose(self) -> None:
            pass

    provider = Fresh()
    async with CredentialCache(store, clock=clock, providers={GenericEntry: provider}) as cache:
        await cache.get(need, "team-a")
        fetches = lambda: provider.fetches  # noqa: E731
        await assert_refreshes_at(cache, need, "team-a", clock, fetches, 1000.0 + 0.5 * LIFETIME)
        # The credential just taken was dated under 0.5; the reload moves its due time.
        store.replace(dataclasses.replace(config, refresh=RefreshSettings(fraction=0.1)))
        await assert_refreshes_at(cache, need, "team-a", clock, fetches, clock.now + 0.1 * LIFETIME)


async def test_a_reloaded_ca_file_gives_the_acr_provider_a_new_session(tmp_path: Path) -> None:
    config = sample_config()
    store = ConfigStore(config)
    async with CredentialCache(store, exchange_budget=0.01) as cache:
        first = cache.provider(AcrEntry)
        assert cache.provider(AcrEntry) is first  # unchanged config: the same provider
        store.replace(dataclasses.replace(config, ca_file=str(tmp_path / "proxy-ca.pem")))
        second = cache.provider(AcrEntry)
        assert second is not first
        assert second._ca_file == str(tmp_path / "proxy-ca.pem")  # type: ignore[attr-defined]
        assert cache.provider(AcrEntry) is second  # made once for the new config, then kept


GOOD = (
    "registries:\n"
    "  - {name: harbor, kind: generic, hosts: [harbor.example.com], auth: {secretRef: {name: h}}}\n"
)


def watcher(tmp_path: Path, text: str = GOOD) -> tuple[ConfigWatcher, list[bool]]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    results: list[bool] = []
    return ConfigWatcher(path, ConfigStore(load_config(path)), on_reload=results.append), results


@pytest.mark.parametrize(
    ("setting", "text", "reason"),
    [
        ("namespace", GOOD + "namespace: elsewhere\n", "namespace: changed from"),
        (
            "refresh.leaseName",
            GOOD + "refresh: {leaseName: other}\n",
            "refresh.leaseName: changed from 'pull-secret-webhook' to 'other', which needs a",
        ),
    ],
)
def test_a_setting_that_needs_a_restart_is_refused_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, setting: str, text: str, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="webhook.config.watch")
    w, results = watcher(tmp_path)
    before = w.store.current
    w.path.write_text(text)
    assert w.check() is False
    assert results == [False]
    assert w.store.current is before
    [line] = [r.getMessage() for r in caplog.records]
    assert reason in line and "needs a restart" in line and setting in line


@pytest.mark.parametrize(
    "broken",
    [
        b"registries: [\x01]\n",  # a control character: yaml's ReaderError
        b"registries: [\xff]\n",  # not UTF-8
        b"registries: {{{\n",
        b"",
    ],
    ids=["control-character", "not-utf8", "unparsable", "empty"],
)
def test_a_broken_file_is_refused_logged_and_a_valid_change_after_it_is_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: bytes
) -> None:
    caplog.set_level(logging.WARNING, logger="webhook.config.watch")
    w, results = watcher(tmp_path)
    w.path.write_bytes(broken)
    assert w.check() is False
    assert w.check() is None  # the same broken file is refused once
    assert len(caplog.records) == 1 and "refused" in caplog.records[0].getMessage()
    w.path.write_text(GOOD.replace("harbor.example.com", "quay.example.com"))
    assert w.check() is True
    assert results == [False, True]
    assert w.store.current.registries[0].rule.hosts == {"quay.example.com"}


def test_an_unreadable_file_is_refused_and_its_return_is_applied(tmp_path: Path) -> None:
    w, results = watcher(tmp_path)
    w.path.unlink()
    w.path.mkdir()  # not a regular file
    assert w.check() is False
    w.path.rmdir()
    w.path.write_text(GOOD + "secretPrefix: team\n")
    assert w.check() is True
    assert results == [False, True]
    assert w.store.current.secret_prefix == "team"


async def test_the_watch_survives_a_check_that_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w, results = watcher(tmp_path)
    calls: list[int] = []

    def explode() -> bool | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no file should do this")
        return None

    monkeypatch.setattr(w, "check", explode)
    task = asyncio.create_task(w.watch(poll=0.01))
    await asyncio.sleep(0.5)  # 50 polls: the watch went on after the failure
    task.cancel()
    assert len(calls) > 3
    assert results[0] is False  # counted as refused
    assert "the check failed" in caplog.text


def test_every_consumer_of_a_running_replica_reads_the_same_store() -> None:
    config: Config = sample_config()
    store = ConfigStore(config)
    m = PullSecretManager(store, MemKube(), Minter())
    cache = CredentialCache(store)
    assert m.store is store and cache._store is store


async def test_a_reloaded_gc_grace_applies_at_the_refreshers_next_pass() -> None:
    config = sample_config()
    store = ConfigStore(config)
    kube = MemKube()
    m = manager(store, kube)
    [need] = pull_needs(config, make_pod(ACR))
    await m.ensure("team-a", [need], budget=2, dry_run=False)
    refresher = Refresher(store, m, kube, "replica-0", writer=m.writer, collector=m.collector)
    # No pod references the Secret: the first pass marks it, a later one past the grace
    # collects it.
    refresher.clock = lambda: time.time() + CLAIM_SECONDS
    assert (await refresher.run_once()).marked == [f"team-a/{need.secret_name}"]
    refresher.clock = lambda: time.time() + CLAIM_SECONDS + 60
    assert (await refresher.run_once()).collected == []  # the default grace is an hour
    store.replace(dataclasses.replace(config, refresh=RefreshSettings(gc_grace_seconds=30.0)))
    assert (await refresher.run_once()).collected == [f"team-a/{need.secret_name}"]
    assert ("team-a", need.secret_name) not in kube.secrets
    await m.close()


async def test_a_reloaded_refresh_interval_applies_to_the_refreshers_next_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The leader's loop looks at its Lease (and the interval) every RENEW_SECONDS.
    monkeypatch.setattr(refresher_module, "RENEW_SECONDS", 0.05)
    config = dataclasses.replace(sample_config(), refresh=RefreshSettings(interval_seconds=3600.0))
    store = ConfigStore(config)
    kube = MemKube()
    m = manager(store, kube)
    refresher = Refresher(store, m, kube, "replica-0", writer=m.writer, collector=m.collector)
    passes: list[float] = []

    async def counted(*, ahead: float = 0.0) -> refresher_module.PassReport:
        passes.append(time.monotonic())
        return refresher_module.PassReport()

    monkeypatch.setattr(refresher, "scan", counted)  # what the leader's loop runs each pass
    m.records.replace_all([])  # the manager's watches, as listed
    for informer in m._informers:
        informer.synced.set()
    refresher.start()
    try:
        await asyncio.sleep(1.0)
        assert len(passes) == 1  # the first pass at once, then an hour's wait
        store.replace(dataclasses.replace(config, refresh=RefreshSettings(interval_seconds=0.2)))
        await asyncio.sleep(1.0)
        assert len(passes) >= 3
    finally:
        await refresher.close()
        await m.close()
