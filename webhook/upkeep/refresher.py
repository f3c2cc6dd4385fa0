"""Background upkeep, on one replica at a time: renew secrets before their credentials
expire, re-create the ones somebody deleted, and delete managed secrets no pod has
referenced for a grace period. The leader follows pods with a watch, and every
replica the markers the pull secrets own, so an idle pass costs the API server
nothing: it reads only what changed, and writes only what is due. It works from
the webhook's records (records.py), never from Secrets: a Secret the webhook did
not create is never refreshed or deleted, whatever its labels say.

Leadership is a ``coordination.k8s.io/v1`` Lease in the webhook's namespace, the
same protocol client-go's leader election uses: the holder renews it every few
seconds; another replica takes over once ``leaseDurationSeconds`` pass without a
renewal. Every replica keeps serving admissions whatever the Lease says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webhook.admission.needs import PullNeed
from webhook.config.kinds import RegistryEntry
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.kube.errors import ApiError
from webhook.kube.informer import Handler, Informer
from webhook.kube.pods import ListedPods
from webhook.pullsecrets.collector import Collecting
from webhook.pullsecrets.namespaces import NamespaceState
from webhook.pullsecrets.records import CLAIM_SECONDS, ManagedSecret
from webhook.pullsecrets.renewals import DueQueue, Pace, urgent
from webhook.pullsecrets.writer import Writing
from webhook.upkeep.election import RELEASE_SECONDS, RENEW_SECONDS, LeaderElector, LeaseApi
from webhook.upkeep.healing import Healer
from webhook.upkeep.references import References

log = logging.getLogger(__name__)

#: The longest the renewer sleeps with nothing due: a pass that schedules a renewal due
#: at once is heard within this.
RENEWER_POLL_SECONDS = 1.0


class PodSource(Protocol):
    """Where the leader learns which pull secrets pods reference (``webhook.kube.calls.Kube``)."""

    async def list_pods(self) -> tuple[ListedPods, str]: ...

    def watch_pods(self, resource_version: str) -> AsyncIterator[dict[str, Any]]: ...


class UpkeepApi(LeaseApi, PodSource, Protocol):
    """All the refresher asks of Kubernetes directly."""


class SecretBook(Protocol):
    """What the refresher reads of the pull secrets (``PullSecretManager``): the records
    and the namespaces, as the watches keep them."""

    def managed(self) -> Iterable[ManagedSecret]: ...

    def record(self, namespace: str, name: str) -> ManagedSecret | None: ...

    def namespace_state(self, namespace: str) -> NamespaceState: ...

    async def wait_synced(self) -> None: ...


@dataclass
class PassReport:
    """What one refresher pass did (for logs and tests)."""

    refreshed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Refresher:
    def __init__(
        self,
        store: ConfigStore,
        book: SecretBook,
        kube: UpkeepApi,
        holder: str,
        *,
        writer: Writing,
        collector: Collecting,
        on_leader: Callable[[bool], None] = lambda leader: None,
        clock: Callable[[], float] = time.time,
        healer: Healer | None = None,
        pace: Pace | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``store`` is where the config file is reloaded into: each pass renews secrets by
        the registry entries in use at that time. ``on_leader`` hears
        whether this replica leads after each try (for the leader metric). ``healer``,
        when given, follows the same pods watch and runs on every tick of the leader.
        ``pace`` bounds the rate of renewals (webhook.pullsecrets.renewals; tests give their
        own, and a ``sleep`` on their clock for the renewer's waits). ``book`` is what the
        pass reads; ``writer`` renews, re-creates and checks
        secrets as admissions do, ``collector`` deletes what no pod uses."""
        self.store = store
        self.book = book
        self.writer = writer
        self.collector = collector
        self.kube = kube
        self.on_leader = on_leader
        self.clock = clock
        start = self.store.current  # namespace and leaseName are restart-only
        self.elector = LeaderElector(
            kube, start.namespace, start.refresh.lease_name, holder, clock=clock
        )
        self._entries: tuple[int, dict[str, RegistryEntry]] = (0, {})
        self._task: asyncio.Task[None] | None = None
        self._pass: asyncio.Task[None] | None = None
        self.pace = pace or Pace()
        self.sleep = sleep
        #: What the passes scheduled, renewed one at a time by the renewer task.
        self.queue = DueQueue()
        self._renewer: asyncio.Task[None] | None = None
        self._renewed = PassReport()  # the renewer's, since the last pass logged them
        self.leader = False
        self.references = References(start.secret_prefix)
        self._watches: tuple[Informer[ListedPods], ...] = ()
        self.healer = healer

    @property
    def config(self) -> Config:
        return self.store.current

    @property
    def entries(self) -> dict[str, RegistryEntry]:
        """The registry entries of the config in use, by name."""
        generation, entries = self._entries
        if generation != self.store.generation:
            entries = {e.name: e for e in self.store.current.registries}
            self._entries = (self.store.generation, entries)
        return entries

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        for task in (self._task, self._pass, self._renewer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._follow(False)
        if self.leader:
            self.leader = False
            try:
                async with asyncio.timeout(RELEASE_SECONDS):
                    await self.elector.release()
            except (ApiError, TimeoutError) as e:
                log.warning("refresher lease not released (it expires by itself): %s", e)

    async def _follow(self, on: bool) -> None:
        """Only the leader watches pods (which secrets are in use): garbage collection is
        its job alone. (Every replica watches the markers: the hot path needs them.)"""
        if on and not self._watches:
            kube = self.kube
            self.references = References(self.config.secret_prefix)
            handlers: list[Handler[ListedPods]] = [self.references]
            if self.healer is not None:
                self.healer.idle()  # a fresh start: its pods come with the list
                handlers.append(self.healer.pods)
            self._watches = (
                Informer(
                    "pods",
                    lambda: kube.list_pods(),
                    lambda version: kube.watch_pods(version),
                    _Both(handlers),
                ),
            )
            for informer in self._watches:
                informer.start()
        elif not on and self._watches:
            for informer in self._watches:
                await informer.close()
            self._watches = ()
            if self.healer is not None:
                self.healer.idle()

    def _watches_synced(self) -> bool:
        return bool(self._watches) and all(i.synced.is_set() for i in self._watches)

    async def _loop(self) -> None:
        # The first pass as soon as this replica leads, whatever the monotonic clock reads
        # (it starts near 0 at boot: a node up for less than intervalSeconds would wait).
        last_pass = float("-inf")
        while True:
            try:
                self.leader = await self.elector.try_acquire()
            except ApiError as e:
                log.warning("refresher lease not renewed: %s", e)
                self.leader = False
            self.on_leader(self.leader)
            if self._watches and self.references.prefix != self.config.secret_prefix:
                # A reload changed secretPrefix: the pods watch keeps only names with the
                # old one, so it starts over (garbage collection waits for it to sync).
                await self._follow(False)
            if not self.leader:
                # Another replica leads now: it does the upkeep from here.
                await self._stop_upkeep()
            await self._follow(self.leader)
            if (
                self.leader
                and self._watches_synced()
                and (self._pass is None or self._pass.done())
                and time.monotonic() - last_pass >= self.config.refresh.interval_seconds
            ):
                # In its own task: a pass paced through many renewals lasts longer than
                # the Lease, which this loop keeps renewing meanwhile.
                last_pass = time.monotonic()
                self._pass = asyncio.create_task(self._one_pass())
            if self.leader and self._watches_synced() and self._renewer is None:
                # Renewals go out from here as each falls due, paced one at a time: not
                # in batches on this loop's tick or at the start of a pass.
                self._renewer = asyncio.create_task(self._renewing())
            if self.healer is not None and self.leader and self._watches_synced():
                # Every tick: with nothing stuck it makes no request (a local scan).
                try:
                    await self.book.wait_synced()
                    await self.healer.run_once()
                except Exception:
                    log.exception("healing pass failed")
            await asyncio.sleep(RENEW_SECONDS)

    async def _stop_upkeep(self) -> None:
        for task in (self._pass, self._renewer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._pass = self._renewer = None
        self.queue.clear()

    async def _renewing(self) -> None:
        """The leader's renewer: what the passes scheduled, each when it falls due."""
        await self.book.wait_synced()
        while True:
            try:
                await self.renew_until(None, self._renewed)
            except Exception:
                log.exception("renewal failed")
                await self.sleep(RENEWER_POLL_SECONDS)

    def _ahead(self) -> float:
        """How far ahead a pass schedules renewals: until the next pass may start (a pass
        starts on the Lease's tick once ``intervalSeconds`` have passed), with a tick to
        spare."""
        return self.config.refresh.interval_seconds + 2 * RENEW_SECONDS

    async def _one_pass(self) -> None:
        try:
            await self.book.wait_synced()
            report = await self.scan(ahead=self._ahead())
            renewed, self._renewed = self._renewed, PassReport()
            report.refreshed += renewed.refreshed
            report.recreated += renewed.recreated
            report.failed += renewed.failed
            if report.refreshed or report.recreated or report.collected or report.failed:
                log.info(
                    "refresher: %d refreshed, %d re-created, %d collected, %d failed",
                    len(report.refreshed),
                    len(report.recreated),
                    len(report.collected),
                    len(report.failed),
                )
        except Exception:
            log.exception("refresher pass failed")

    def need_for(self, record: ManagedSecret) -> PullNeed | None:
        """Rebuild the need a managed secret was made for; None if the config changed."""
        entry = self.entries.get(record.entry)
        if entry is None or not record.host:
            return None
        need = PullNeed.make(
            entry,
            record.host,
            prefix=self.config.secret_prefix,
            service_account=record.service_account or "default",
        )
        return need if need.secret_name == record.name else None

    def _settled(self, record: ManagedSecret, now: float) -> bool:
        """In use, fresh, unmarked as unreferenced and its Secret there (its marker seen,
        or on its way)."""
        return (
            record.state == "Ready"
            and record.unreferenced_since is None
            and now < record.refresh_at
            and self.writer.present(record, now)
        )

    def _unmarked_seconds(self) -> float:
        """How long after its claim a record is not marked unreferenced: CLAIM_SECONDS,
        or the grace itself when shorter (a mark held back longer than the grace would
        keep an unused Secret more than twice as long as the operator asked)."""
        return min(CLAIM_SECONDS, self.config.refresh.gc_grace_seconds)

    async def run_once(self) -> PassReport:
        """One pass, renewals included: what is due now is renewed, paced, before it
        returns (the leader's loop instead scans ahead and leaves the renewals to its
        renewer, ``renew_until``)."""
        report = await self.scan()
        await self.renew_until(self.clock(), report)
        return report

    async def scan(self, *, ahead: float = 0.0) -> PassReport:
        """Walk the records: schedule the renewal of each in-use secret falling due within
        ``ahead`` seconds (``queue``, at its own time), re-create, mark, collect and forget
        the rest as they need."""
        report = PassReport()
        now = self.clock()
        by_namespace: dict[str, list[ManagedSecret]] = defaultdict(list)
        for record in self.book.managed():
            by_namespace[record.namespace].append(record)
        for namespace, records in by_namespace.items():
            state = self.book.namespace_state(namespace)
            if state == "gone":
                # Gone, and its Secrets with it.
                for record in records:
                    await self._guarded(record, report, self._forget)
                continue
            if state == "opted-out":
                # Opted out (or excluded since): nothing may be written there any more;
                # the records wait in case it opts in again.
                continue
            for record in records:
                in_use = self.references.referenced(namespace, record.name)
                if (
                    in_use
                    and self._due(record, now + ahead)
                    and (record.refresh_at <= now or self.writer.present(record, now))
                ):
                    # Renewed by the renewer when it falls due, paced.
                    self.queue.schedule(record.key, record.refresh_at, record.expires_at)
                    continue
                if in_use and self._settled(record, now):
                    continue  # the common case, decided without a call or an await
                await self._guarded(record, report, self._keep if in_use else self._collect)
        return report

    @staticmethod
    def _due(record: ManagedSecret, now: float) -> bool:
        return (
            record.state == "Ready"
            and record.unreferenced_since is None
            and now >= record.refresh_at
        )

    async def renew_until(self, until: float | None, report: PassReport) -> None:
        """Renew what the passes scheduled as each falls due, until the clock reads
        ``until`` and none due by then is left (None: for ever): soonest expiry first
        among those due, one at a time through the bucket (renewals.Pace), so many due
        at once (secrets minted together, a leader back after an outage) are written at
        a bounded rate, never in a burst. One whose credential would stop being usable
        before the bucket lets it through goes at once."""
        while True:
            if await self._renew_next(report, until):
                continue
            now = self.clock()
            if until is not None and now >= until:
                return  # nothing due by ``until`` is left
            upcoming = self.queue.next_due()
            target = now + RENEWER_POLL_SECONDS if upcoming is None else upcoming
            if until is not None:
                target = min(target, until)
            await self.sleep(min(max(target - now, 0.0), RENEWER_POLL_SECONDS))

    def _still_due(self, key: tuple[str, str], now: float) -> ManagedSecret | None:
        """The record of a scheduled renewal, if it is still to be renewed: an admission
        may have renewed it meanwhile, its namespace opted out or gone, its pods too."""
        record = self.book.record(*key)
        if (
            record is None
            or not self._due(record, now)
            or self.book.namespace_state(record.namespace) != "opted-in"
            or not self.references.referenced(record.namespace, record.name)
        ):
            return None
        return record

    async def _renew_next(self, report: PassReport, until: float | None) -> bool:
        """Renew the next due secret, if there is one (False: none is due yet)."""
        now = self.clock()
        key = self.queue.pop(now if until is None else min(now, until))
        if key is None:
            return False
        record = self._still_due(key, now)
        if record is None:
            return True
        if urgent(record.expires_at, now):
            self.pace.spend()
        else:
            await self.pace.take()
            record = self._still_due(key, self.clock())
            if record is None:
                return True
        await self._guarded(record, report, self._keep)
        return True

    async def _guarded(
        self,
        record: ManagedSecret,
        report: PassReport,
        handle: Callable[[ManagedSecret, PassReport], Awaitable[None]],
    ) -> None:
        try:
            await handle(record, report)
        except ApiError as e:
            log.warning("refresher could not handle %s/%s: %s", record.namespace, record.name, e)
            report.failed.append(f"{record.namespace}/{record.name}")

    async def _forget(self, record: ManagedSecret, report: PassReport) -> None:
        await self.collector.forget(record)
        report.forgotten.append(f"{record.namespace}/{record.name}")

    async def _keep(self, record: ManagedSecret, report: PassReport) -> None:
        if record.unreferenced_since is not None:
            await self.collector.mark(record, None)
        if record.state != "Ready":
            return  # Foreign: never touched; Claimed: an admission is making it
        now = self.clock()
        due = now >= record.refresh_at
        if not due and self.writer.present(record, now):
            # Fresh, and its marker says the Secret is there, or is on its way (see
            # SecretWriter.just_made): checking now would cost calls for a Secret that is
            # there; a later pass checks it if the marker never comes.
            return
        where = f"{record.namespace}/{record.name}"
        need = self.need_for(record)
        if need is None:
            log.info("%s no longer matches the config; left to expire", where)
            return
        if not due:
            if await self.writer.verify(record):
                return  # there, but was unmarked: verify marked it
            status = await self.writer.refresh(record.namespace, need)
            (report.recreated if status.state == "ready" else report.failed).append(where)
            return
        status = await self.writer.refresh(record.namespace, need)
        (report.refreshed if status.state == "ready" else report.failed).append(where)

    async def _collect(self, record: ManagedSecret, report: PassReport) -> None:
        where = f"{record.namespace}/{record.name}"
        now = self.clock()
        if record.unreferenced_since is None:
            if now - record.claimed_at < self._unmarked_seconds():
                # Claimed moments ago for a pod being admitted, which this replica's
                # pods watch may not show yet: marking now would be cleared on the next
                # pass, two writes for nothing.
                return
            await self.collector.mark(record, now)
            report.marked.append(where)
        elif now - record.unreferenced_since >= self.config.refresh.gc_grace_seconds:
            await self.collector.collect(record)
            report.collected.append(where)


class _Both:
    """One pods watch, several handlers (garbage collection's and healing's)."""

    def __init__(self, handlers: Sequence[Handler[ListedPods]]) -> None:
        self.handlers = tuple(handlers)

    def replace_all(self, listed: ListedPods) -> None:
        for handler in self.handlers:
            handler.replace_all(listed)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        for handler in self.handlers:
            handler.apply(event, obj)
