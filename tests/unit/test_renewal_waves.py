"""Secrets minted together do not renew together: each falls due at its own place in the
refresh window, and the leader renews what is due through a token bucket, soonest expiry
first, never letting the bucket hold a renewal past its credential's usable end.

The leader's pass runs against the in-memory API (devenv/support/memkube.py) on a clock
the bucket's sleeps advance, so minutes of pacing take milliseconds."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from tests.support.bookkeeping import Minter, need_of
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials.base import EXPIRY_MARGIN, Credential
from webhook.kube.pods import ListedPods
from webhook.pullsecrets.manager import PullSecretManager
from webhook.pullsecrets.records import ManagedSecret, marker_object
from webhook.pullsecrets.renewals import (
    JITTER_SHARE,
    RENEWAL_BURST,
    RENEWALS_PER_SECOND,
    URGENT_SECONDS,
    Pace,
    renew_at,
)
from webhook.upkeep.refresher import Refresher

#: ECR's token lifetime (12 h): one GetAuthorizationToken serves every namespace of a
#: principal, so a storm's secrets really do share one credential and one issue time.
ECR_LIFETIME = 43200.0


class FakeTime:
    """The wall clock the refresher and the manager read; the bucket's sleeps advance it."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class TimedKube(MemKube):
    """MemKube that notes when (by the fake clock) each write of a Secret or a record
    was made, and for which namespace."""

    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock
        self.writes: list[tuple[float, str, str]] = []

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.writes.append((self.clock(), "secret", namespace))
        return await super().replace_secret(namespace, name, body)

    async def replace_record(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.writes.append((self.clock(), "record", name.partition(".")[0]))
        return await super().replace_record(namespace, name, body)


async def minted_together(config: Config, count: int) -> list[ManagedSecret]:
    """``count`` namespaces whose secrets were made in one instant from one credential."""
    clock = FakeTime()
    kube = MemKube()
    m = PullSecretManager(ConfigStore(config), kube, SharedMinter(clock.now), clock=clock)
    namespaces = [f"ns-{i}" for i in range(count)]
    m.namespaces.replace_all(opted_in(*namespaces))
    need = need_of(config)
    for ns in namespaces:
        await m.writer.refresh(ns, need)
    records = [m.records.get(ns, need.secret_name) for ns in namespaces]
    await m.close()
    return [r for r in records if r is not None and r.state == "Ready"]


class SharedMinter(Minter):
    """One credential for every namespace, issued at ``issued_at`` (as a cached ECR token)."""

    def __init__(self, issued_at: float) -> None:
        super().__init__(ECR_LIFETIME)
        self.issued_at = issued_at

    async def get(self, need: Any, namespace: str) -> Credential:
        return Credential(
            "AWS", "token", (need.host,), self.issued_at + ECR_LIFETIME, self.issued_at
        )


def spread_over_the_window(due: list[float], credential: Credential, fraction: float) -> None:
    start = credential.refresh_at(fraction)
    spread = JITTER_SHARE * (credential.expires_at - EXPIRY_MARGIN - start)
    # Never before the configured fraction, never in the window's headroom.
    assert start <= min(due) and max(due) <= start + spread
    # Uniform over the spread: ten equal slices of it each hold a tenth, within 10% plus
    # six binomial deviations (for 30,000 one slice's count varies by about 52).
    slices = Counter(min(int((t - start) / spread * 10), 9) for t in due)
    tenth = len(due) / 10
    slack = 0.1 * tenth + 6 * (len(due) * 0.09) ** 0.5
    assert all(abs(slices[i] - tenth) <= slack for i in range(10)), slices


def test_thirty_thousand_secrets_minted_in_one_instant_fall_due_across_the_window() -> None:
    issued = float(int(time.time()))
    credential = Credential("AWS", "t", ("h",), issued + ECR_LIFETIME, issued)
    due = [renew_at(credential, 0.5, f"ns-{i}", "psw-ecr") for i in range(30_000)]
    spread_over_the_window(due, credential, 0.5)
    # No second holds more than a few of them (all 30,000 used to share one instant:
    # the spread is about 3 h, so 2.8 a second on average).
    assert max(Counter(int(t) for t in due).values()) <= 15


async def test_the_manager_dates_each_secret_it_makes_at_its_own_place(config: Config) -> None:
    records = await minted_together(config, 1000)
    assert len(records) == 1000
    issued = records[0].expires_at - ECR_LIFETIME
    credential = Credential("AWS", "t", ("h",), issued + ECR_LIFETIME, issued)
    spread_over_the_window([r.refresh_at for r in records], credential, config.refresh.fraction)
    for r in records:  # the record carries whole seconds (RFC 3339)
        due = renew_at(credential, config.refresh.fraction, r.namespace, r.name)
        assert abs(r.refresh_at - due) < 1.0


def test_a_secret_keeps_its_place_in_the_window_from_one_renewal_to_the_next() -> None:
    first = Credential("AWS", "a", ("h",), expires_at=1e9 + ECR_LIFETIME, issued_at=1e9)
    later = Credential("AWS", "b", ("h",), expires_at=2e9 + ECR_LIFETIME, issued_at=2e9)
    offsets = {renew_at(c, 0.5, "team-a", "psw-x") - c.issued_at for c in (first, later)}
    assert len(offsets) == 1
    assert renew_at(first, 0.5, "team-a", "psw-x") != renew_at(first, 0.5, "team-b", "psw-x")


async def due_secrets(
    config: Config, clock: FakeTime, expiries: list[float]
) -> tuple[TimedKube, Refresher]:
    """A leader over Ready, referenced, marked secrets, one per namespace, all due, with
    the given expiries; its bucket sleeps on ``clock``."""
    kube = TimedKube(clock)
    manager = PullSecretManager(ConfigStore(config), kube, SharedMinter(clock.now), clock=clock)
    need = need_of(config)
    namespaces = [f"ns-{i}" for i in range(len(expiries))]
    manager.namespaces.replace_all(opted_in(*namespaces))
    pace = Pace(RENEWALS_PER_SECOND, RENEWAL_BURST, clock=clock, sleep=clock.sleep)
    refresher = Refresher(
        ConfigStore(config),
        manager,
        kube,
        "replica-0",
        writer=manager.writer,
        collector=manager.collector,
        clock=clock,
        pace=pace,
    )
    pods = []
    for ns, expires_at in zip(namespaces, expiries, strict=True):
        uid = kube.plant_secret(ns, need.secret_name)["metadata"]["uid"]
        record = ManagedSecret(
            ns,
            need.secret_name,
            need.entry.name,
            need.host,
            need.identity.key,
            state="Ready",
            secret_uid=uid,
            expires_at=expires_at,
            refresh_at=clock.now - 1,
        )
        saved = await kube.create_record(config.namespace, record.to_object(config.namespace))
        manager.records.put(ManagedSecret.from_object(saved) or record)
        manager.markers.apply("ADDED", marker_object(ns, need.secret_name, uid))
        pods.append(
            {
                "metadata": {"namespace": ns, "name": "p"},
                "spec": {"imagePullSecrets": [{"name": need.secret_name}]},
            }
        )
    refresher.references.replace_all(ListedPods.of(pods))
    return kube, refresher


async def test_the_leaders_write_rate_never_exceeds_the_bound_when_all_fall_due_at_once(
    config: Config,
) -> None:
    clock = FakeTime()
    count = 600
    kube, refresher = await due_secrets(config, clock, [clock.now + 3 * 3600] * count)
    began = clock.now
    report = await refresher.run_once()
    assert len(report.refreshed) == count
    times = sorted(t for t, _, _ in kube.writes)
    assert len(times) == 2 * count  # the Secret and its record, per renewal
    # A token bucket: in any second, at most its burst plus one second's rate of
    # renewals, two writes each.
    # The documented bound (webhook.pullsecrets.renewals): 10 renewals a second after a burst of 10.
    assert (RENEWALS_PER_SECOND, RENEWAL_BURST) == (10.0, 10)
    bound = 2 * (RENEWAL_BURST + RENEWALS_PER_SECOND)
    for i, t in enumerate(times):
        in_that_second = sum(1 for u in times[i:] if u < t + 1.0)
        assert in_that_second <= bound, (t - began, in_that_second)
    # ... and paced, not merely slow: the pass took as long as the bound makes it.
    took = times[-1] - began
    expected = (count - RENEWAL_BURST) / RENEWALS_PER_SECOND
    assert expected - 1 <= took <= expected + 1


async def test_the_soonest_to_expire_renews_first(config: Config) -> None:
    clock = FakeTime()
    expiries = [clock.now + 3600 + 60 * i for i in range(200)]
    random.Random(7).shuffle(expiries)
    kube, refresher = await due_secrets(config, clock, expiries)
    await refresher.run_once()
    order = [ns for _, kind, ns in kube.writes if kind == "secret"]
    by_expiry = [f"ns-{i}" for i in sorted(range(200), key=lambda i: expiries[i])]
    assert order == by_expiry


async def test_the_bound_never_holds_a_renewal_past_its_credentials_usable_end(
    config: Config,
) -> None:
    clock = FakeTime()
    # 3,000 due, their usable ends spread over the next ten minutes: the bucket alone
    # would need five minutes for them, and the last would be written after the first
    # hundreds expired.
    expiries = [clock.now + EXPIRY_MARGIN + 600 * i / 3000 + 1 for i in range(3000)]
    began = clock.now
    kube, refresher = await due_secrets(config, clock, expiries)
    report = await refresher.run_once()
    assert len(report.refreshed) == 3000
    written = {ns: t for t, kind, ns in kube.writes if kind == "secret"}
    late = [ns for ns, t in written.items() if t >= expiries[int(ns[3:])] - EXPIRY_MARGIN]
    assert late == []
    # Those within URGENT_SECONDS of their end went at once; the bucket still paced the
    # others, whose ends it could not reach.
    urgent = [e for e in expiries if e - EXPIRY_MARGIN - began <= URGENT_SECONDS]
    assert sum(1 for t in written.values() if t == began) >= len(urgent)
    pace = refresher.pace
    assert max(written.values()) - began >= (3000 - len(urgent) - pace.burst) / pace.rate - 1
