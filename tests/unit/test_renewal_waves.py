"""Secrets minted together do not renew together: each falls due at its own place in the
refresh window, and the leader renews what is due through a token bucket, soonest expiry
first, never letting the bucket hold a renewal past its credential's usable end.

The leader's pass runs against the in-memory API (devenv/support/memkube.py) on a clock
the bucket's sleeps advance, so minutes of pacing take milliseconds."""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from tests.support.bookkeeping import Minter, need_of
from webhook.config.schema import Config, RefreshSettings
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
from webhook.upkeep.refresher import PassReport, Refresher

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


def leader(
    config: Config,
    manager: PullSecretManager,
    kube: TimedKube,
    clock: FakeTime,
    **options: Any,
) -> Refresher:
    """The leader's refresher over ``manager``, paced by the documented bucket on ``clock``."""
    return Refresher(
        ConfigStore(config),
        manager,
        kube,
        "replica-0",
        writer=manager.writer,
        collector=manager.collector,
        clock=clock,
        pace=Pace(RENEWALS_PER_SECOND, RENEWAL_BURST, clock=clock, sleep=clock.sleep),
        **options,
    )


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
    refresher = leader(config, manager, kube, clock)
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
    # The documented bound (webhook.pullsecrets.renewals): 25 renewals a second, one at
    # a time.
    assert (RENEWALS_PER_SECOND, RENEWAL_BURST) == (25.0, 1)
    # In any second, at most one second's rate of renewals plus the burst, two writes
    # each...
    bound = 2 * (RENEWAL_BURST + RENEWALS_PER_SECOND)
    for i, t in enumerate(times):
        in_that_second = sum(1 for u in times[i:] if u < t + 1.0)
        assert in_that_second <= bound, (t - began, in_that_second)
    # ... and never a batch: after the first, renewals are 1/rate apart (a burst of 10
    # used to let ten through back to back).
    secrets = sorted(t for t, kind, _ in kube.writes if kind == "secret")
    gaps = [b - a for a, b in itertools.pairwise(secrets)]
    assert min(gaps) >= 1 / RENEWALS_PER_SECOND - 1e-6
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


class CacheMinter(Minter):
    """The credential cache for one identity: one credential shared by every namespace,
    exchanged again once ``fraction`` of its lifetime has passed on ``clock``."""

    def __init__(self, clock: FakeTime, lifetime: float, fraction: float) -> None:
        super().__init__(lifetime)
        self.clock = clock
        self.fraction = fraction
        self.current: Credential | None = None

    async def get(self, need: Any, namespace: str) -> Credential:
        now = self.clock()
        if self.current is None or now >= self.current.refresh_at(self.fraction):
            self.calls += 1
            self.current = Credential(
                "00000000-0000-0000-0000-000000000000",
                f"token-{self.calls}",
                (need.host,),
                expires_at=now + self.lifetime,
                issued_at=now,
            )
        return self.current


async def minted_leader(
    config: Config, clock: FakeTime, count: int, lifetime: float
) -> tuple[TimedKube, Refresher, list[ManagedSecret]]:
    """A leader over ``count`` secrets minted in one instant from one shared credential
    of ``lifetime`` seconds, each referenced by a pod, marked as its watch would show."""
    kube = TimedKube(clock)
    minter = CacheMinter(clock, lifetime, config.refresh.fraction)
    manager = PullSecretManager(ConfigStore(config), kube, minter, clock=clock)
    need = need_of(config)
    namespaces = [f"ns-{i}" for i in range(count)]
    manager.namespaces.replace_all(opted_in(*namespaces))
    for ns in namespaces:
        await manager.writer.refresh(ns, need)
    records = [manager.records.get(ns, need.secret_name) for ns in namespaces]
    ready = [r for r in records if r is not None and r.state == "Ready"]
    for r in ready:
        manager.markers.apply("ADDED", marker_object(r.namespace, r.name, r.secret_uid))
    refresher = leader(config, manager, kube, clock, sleep=clock.sleep)
    pods = [
        {
            "metadata": {"namespace": ns, "name": "p"},
            "spec": {"imagePullSecrets": [{"name": need.secret_name}]},
        }
        for ns in namespaces
    ]
    refresher.references.replace_all(ListedPods.of(pods))
    kube.writes.clear()
    return kube, refresher, ready


async def lead(refresher: Refresher, clock: FakeTime, until: float, interval: float) -> None:
    """The leader's loop on the fake clock: a pass every ``interval`` that schedules what
    falls due before the next, and the renewer between passes."""
    report = PassReport()
    while clock.now < until:
        await refresher.scan(ahead=interval + 10)
        await refresher.renew_until(clock.now + interval, report)


async def test_a_wave_is_renewed_as_each_secret_falls_due_one_at_a_time(config: Config) -> None:
    """The shortest tokens the webhook handles (1 hour), 1,000 secrets minted together,
    passes a minute apart: every secret is renewed once, at its own time (within a
    second of it: no pass gathers them into a batch), one at a time, before it expires."""
    clock = FakeTime()
    lifetime = 3600.0
    kube, refresher, records = await minted_leader(config, clock, 1000, lifetime)
    assert len(records) == 1000
    issued = records[0].expires_at - lifetime
    credential = Credential("AWS", "t", ("h",), issued + lifetime, issued)
    due = {r.namespace: r.refresh_at for r in records}
    spread_over_the_window(list(due.values()), credential, config.refresh.fraction)
    first_wave_end = max(due.values()) + 1
    await lead(refresher, clock, first_wave_end + 60, interval=60.0)
    written = [(t, ns) for t, kind, ns in kube.writes if kind == "secret" and t < first_wave_end]
    assert sorted(ns for _, ns in written) == sorted(due)  # each once
    late = [t - due[ns] for t, ns in written]
    assert min(late) >= 0 and max(late) <= 1.0, (min(late), max(late))
    times = sorted(t for t, _ in written)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / RENEWALS_PER_SECOND - 1e-6
    # Spread as their due times: renewals fall across the window like the due times.
    spread_over_the_window(times, credential, config.refresh.fraction)
    assert all(
        t < r.expires_at - EXPIRY_MARGIN
        for (t, _), r in zip(sorted(written), records, strict=False)
    )


def test_the_bound_renews_thirty_thousand_secrets_of_the_shortest_token_in_time() -> None:
    """The bound's reason (webhook.pullsecrets.renewals): 30,000 secrets sharing a 1-hour
    token (the shortest the webhook handles), minted in one storm, at the default
    fraction: their steady state fits under it, and so does their first wave, all of
    it between its first due time and the urgent line, with no help from the override."""
    lifetime, fraction, count = 3600.0, RefreshSettings().fraction, 30_000
    assert count / (fraction * lifetime) <= 0.8 * RENEWALS_PER_SECOND  # 16.7 a second
    first_due = fraction * lifetime
    urgent_line = lifetime - EXPIRY_MARGIN - URGENT_SECONDS
    assert first_due + count / RENEWALS_PER_SECOND <= urgent_line - 120  # 2 min to spare


async def test_all_due_at_once_are_paced_one_at_a_time_and_none_needs_the_override(
    config: Config,
) -> None:
    """3,000 due at once, sharing one expiry a little further off than the bucket needs
    to renew them all: written one at a time, 1/rate apart, none by the override (which
    would write it at once) and each before its credential's usable end."""
    clock = FakeTime()
    count = 3000
    began = clock.now
    expires_at = began + EXPIRY_MARGIN + URGENT_SECONDS + count / RENEWALS_PER_SECOND + 10
    kube, refresher = await due_secrets(config, clock, [expires_at] * count)
    report = await refresher.run_once()
    assert len(report.refreshed) == count
    paced = sorted(t for t, kind, _ in kube.writes if kind == "secret")
    assert paced[-1] < expires_at - EXPIRY_MARGIN - URGENT_SECONDS
    gaps = [b - a for a, b in itertools.pairwise(paced)]
    assert min(gaps) >= 1 / RENEWALS_PER_SECOND - 1e-6
    assert abs(paced[-1] - began - (count - RENEWAL_BURST) / RENEWALS_PER_SECOND) <= 1


async def test_a_scheduled_renewal_an_admission_made_first_is_not_written_again(
    config: Config,
) -> None:
    clock = FakeTime()
    kube, refresher, records = await minted_leader(config, clock, 50, 3600.0)
    first = min(records, key=lambda r: r.refresh_at)
    clock.now = first.refresh_at - 30
    await refresher.scan(ahead=3600)
    assert first.key in refresher.queue
    # An admission in that namespace renews it before the renewer's turn comes.
    clock.now = first.refresh_at
    await refresher.writer.refresh(first.namespace, need_of(config))
    renewed_by_admission = len(kube.writes)
    assert renewed_by_admission == 2
    await refresher.renew_until(clock.now + 1, PassReport())
    assert [w for w in kube.writes if w[2] == first.namespace] == kube.writes[:2]
