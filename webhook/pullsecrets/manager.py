"""Pull secrets at admission: make sure a fresh one exists for each need, fast.

``PullSecretManager`` is the server's ``SecretSource``. Its hot path (every needed secret
known fresh) makes no network call: it answers from local copies kept by watches, the
webhook's own records of the secrets it manages and the markers their Secrets own
(``records.py``), and the namespaces that opted in (``namespaces.py``). A secret missing
or due goes to the writer (``writer.py``), whose work an admission waits for up to its
budget; what is not finished by then goes on in the background (``retries.py``).

Nothing is minted or written for a namespace that has not opted in, whoever sends the
review. The manager also makes the parts the background upkeep works with: the writer and
the garbage collector (``collector.py``), over the same indexes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from webhook.admission.decision import ALL_READY, NeedStatus, Outcome
from webhook.admission.needs import PullNeed
from webhook.config.store import ConfigStore
from webhook.kube.health import ApiHealth
from webhook.kube.informer import Informer
from webhook.pullsecrets.collector import SecretCollector
from webhook.pullsecrets.namespaces import NamespaceIndex, NamespaceState
from webhook.pullsecrets.notices import AdmissionNotices
from webhook.pullsecrets.protocols import CredentialSource, PullSecretApi
from webhook.pullsecrets.records import ManagedSecret, Markers, RecordIndex
from webhook.pullsecrets.retries import BackgroundRetries
from webhook.pullsecrets.writer import SecretWriter
from webhook.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: A pod needs one pull secret per registry (and identity) its images come from; real
#: pods name a handful. More than this in one review is refused work, not served: one
#: forged review must not fan out into thousands of exchanges, writes and retries.
MAX_NEEDS_PER_POD = 16


class PullSecretManager:
    """The webhook's ``SecretSource``: ensure fresh pull secrets, in the budget."""

    def __init__(
        self,
        store: ConfigStore,
        kube: PullSecretApi,
        cache: CredentialSource,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        health: ApiHealth | None = None,
    ) -> None:
        """``health`` says when the API server answers again (``kube.health``); without
        it, retries wait out their back-off. ``store`` is where reloads go: every
        setting is read from it where it is used."""
        self.store = store
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.records = RecordIndex()
        self.markers = Markers()
        self.namespaces = NamespaceIndex(
            lambda: self.store.current.never_injected, on_deleted=self._namespace_gone
        )
        self._background: set[asyncio.Task[Any]] = set()
        self.writer = SecretWriter(
            self.store,
            kube,
            cache,
            self.records,
            self.markers,
            self.metrics,
            spawn=self._spawn,
            on_pending=lambda namespace, need, status: self.retries.offer(namespace, need, status),
            clock=clock,
            health=health,
        )
        self.retries = BackgroundRetries(
            self.writer.start,
            still_wanted=lambda namespace: self.namespaces.refusal(namespace) is None,
            spawn=self._spawn,
            health=health,
        )
        self.collector = SecretCollector(
            self.store, kube, self.records, self.writer, self.metrics, spawn=self._spawn
        )
        self.notices = AdmissionNotices(kube, spawn=self._spawn, clock=clock)
        home = self.store.current.namespace  # restart-only (webhook.config.schema.RESTART_ONLY)
        self._informers = (
            Informer(
                "pull secret records",
                lambda: kube.list_records(home),
                lambda version: kube.watch_records(home, version),
                self.records,
                on_change=lambda: self.metrics.managed_secrets.set(len(self.records)),
                health=health,
            ),
            Informer(
                "namespaces",
                lambda: kube.list_namespaces(),
                lambda version: kube.watch_namespaces(version),
                self.namespaces,
                health=health,
            ),
            Informer(
                "pull secret markers",
                lambda: kube.list_markers(),
                lambda version: kube.watch_markers(version),
                self.markers,
                health=health,
            ),
        )

    # -- the SecretSource --------------------------------------------------------

    async def ensure(
        self, namespace: str, needs: Sequence[PullNeed], *, budget: float, dry_run: bool
    ) -> Outcome:
        refusal = self.namespaces.refusal(namespace)
        if refusal is not None:
            self.notices.refused(namespace, refusal)
            return Outcome(refused=refusal)
        now = self.clock()
        statuses: dict[str, NeedStatus] = {}
        waiting: dict[str, asyncio.Task[NeedStatus]] = {}
        if len(needs) > MAX_NEEDS_PER_POD:
            excess = NeedStatus("pending", f"more than {MAX_NEEDS_PER_POD} registries in one pod")
            statuses.update((n.secret_name, excess) for n in needs[MAX_NEEDS_PER_POD:])
            needs = needs[:MAX_NEEDS_PER_POD]
        for need in needs:
            record = self.records.get(namespace, need.secret_name)
            if record is not None and record.state == "Foreign":
                statuses[need.secret_name] = NeedStatus("foreign")
            elif record is not None and record.usable(now) and self.markers.marked(record):
                if now >= record.refresh_at and not dry_run:
                    self.writer.start(namespace, need)  # renew in the background; no wait
            elif not dry_run:
                waiting[need.secret_name] = self.writer.start(namespace, need)
        if waiting:
            done, _ = await asyncio.wait(waiting.values(), timeout=budget)
            for name, task in waiting.items():
                if task in done:
                    status = task.result()
                elif self.writer.unproven(namespace, name):
                    # A Secret of that name exists and no record says the webhook made
                    # it (yet): never name it in a pod on a guess.
                    status = NeedStatus("foreign", "not known to be the webhook's yet")
                else:
                    status = NeedStatus("pending", f"not ready within {budget:g}s")
                if status.state != "ready":
                    statuses[name] = status
                if status.state == "pending":
                    self.notices.not_ready(namespace, name, status.message)
        return Outcome(statuses) if statuses else ALL_READY

    # -- what the background upkeep reads (webhook.upkeep.refresher.SecretBook) ---------

    def managed(self) -> Iterable[ManagedSecret]:
        """Every record of a pull secret this install manages (from the watch)."""
        return self.records.records()

    def record(self, namespace: str, name: str) -> ManagedSecret | None:
        """The record of one pull secret, as the watch and this replica's writes keep it."""
        return self.records.get(namespace, name)

    def namespace_state(self, namespace: str) -> NamespaceState:
        return self.namespaces.state(namespace)

    def opted_in(self, namespace: str) -> bool:
        """May pull secrets be written there (labelled, not excluded, not terminating)?"""
        return namespace in self.namespaces

    async def wait_synced(self) -> None:
        for informer in self._informers:
            await informer.synced.wait()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def not_ready_reason(self) -> str | None:
        waiting = [i.what for i in self._informers if not i.synced.is_set()]
        return f"{' and '.join(waiting)} not listed yet" if waiting else None

    async def close(self) -> None:
        await self.writer.drain()  # Ready writes and markers of Secrets just made
        for informer in self._informers:
            await informer.close()
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _namespace_gone(self, namespace: str) -> None:
        self.notices.forget(namespace)
        self.writer.new_secret_rate.forget(namespace)
        self.collector.namespace_gone(namespace)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
