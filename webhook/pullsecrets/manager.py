"""Pull secrets in the cluster: make sure a fresh one exists for each need, fast.

``PullSecretManager`` is the server's ``SecretSource``. Its hot path (every
needed secret known fresh) makes no network call: it answers from two local
copies kept by watches, the webhook's own records of the secrets it manages
(``records.py``) and the set of namespaces that opted in (``namespaces.py``).

Otherwise it mints a credential (through the credential cache, single-flight
per key) and writes the secret without ever reading one:

1. claim the name by creating its record (a second replica gets 409 and follows
   the record instead);
2. create the Secret; 409 AlreadyExists means the name is taken by a Secret the
   webhook did not create: the record says Foreign and the Secret is never used,
   changed or deleted;
3. record the Secret's UID and expiry. Every later write names that UID, so a
   Secret deleted since is re-created and one replaced by someone else is left
   alone (Foreign).

Nothing is minted or written for a namespace that has not opted in, whoever
sends the review. What an admission could not finish in time goes on in the
background (``retries.py``); the Secret's shape is ``secret.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from webhook.admission.decision import NeedStatus, Outcome
from webhook.admission.needs import PullNeed
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials.base import Credential, RegistryAuthError
from webhook.kube.errors import ApiError, ConflictError, InvalidError, NotFoundError
from webhook.kube.health import ApiHealth
from webhook.kube.informer import Informer
from webhook.pullsecrets.namespaces import NamespaceIndex
from webhook.pullsecrets.protocols import CredentialSource, PullSecretApi
from webhook.pullsecrets.ratelimit import NamespaceRate
from webhook.pullsecrets.records import (
    ManagedSecret,
    Markers,
    RecordIndex,
    marker_object,
    record_name,
)
from webhook.pullsecrets.renewals import renew_at
from webhook.pullsecrets.retries import BackgroundRetries
from webhook.pullsecrets.secret import desired_secret
from webhook.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: Attempts at a write that keeps losing races to other replicas before giving up
#: for this admission (the background retry and the refresher carry on).
WRITE_ATTEMPTS = 5
#: How long another replica's claim on a name is honoured before it is taken over (the
#: claimer creates the Secret right after claiming; a longer silence means it died).
CLAIM_SECONDS = 30.0
#: While another replica holds a fresh claim, look at its record (in the watch's copy)
#: again this often.
CLAIM_POLL_SECONDS = 0.05
#: ... and asks the API server for it when the watch has said nothing for this long.
CLAIM_RELOAD_SECONDS = 1.0
#: One Warning Event per (namespace, secret) per minute at most, so a Deployment of
#: hundreds of replicas during an outage does not flood the namespace's events.
EVENT_INTERVAL = 60.0
#: ... and at most this many Events per namespace per minute whatever the names: a
#: forged review names any secret (a fresh ServiceAccount per review, in per-pod mode),
#: so only a bound per namespace bounds the writes. Ten say all an operator needs.
EVENTS_PER_NAMESPACE_MINUTE = 10
#: New pull secrets started per namespace per minute (each is a ServiceAccount read and,
#: when it exists, a TokenRequest, a record, the Secret and its marker). A namespace
#: needs one per registry entry and identity its pods use: a handful, a few dozen with
#: per-pod identity. Beyond it they are made by the background retries a minute later,
#: and a forged flood of invented names costs the API server at most this much.
NEW_SECRETS_PER_NAMESPACE_MINUTE = 30
#: A pod needs one pull secret per registry (and identity) its images come from; real
#: pods name a handful. More than this in one review is refused work, not served: one
#: forged review must not fan out into thousands of exchanges, writes and retries.
MAX_NEEDS_PER_POD = 16
#: Refused reviews are logged at most once per namespace per minute (a forged flood
#: must not flood the logs either); the metric counts every one.
REFUSAL_LOG_INTERVAL = 60.0


class RecordsMissing(NotFoundError):
    """The API server does not know the ManagedPullSecret resource (CRD not installed)."""


def new_record(namespace: str, need: PullNeed, now: float) -> ManagedSecret:
    return ManagedSecret(
        namespace=namespace,
        name=need.secret_name,
        entry=need.entry.name,
        host=need.host,
        identity=need.identity.key,
        service_account=need.identity.service_account,
        claimed_at=now,
    )


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
        it, retries wait out their back-off. ``store`` is where reloads go: every setting is
        read from it where it is used."""
        self.store = store
        self.kube = kube
        self.health = health
        self.cache = cache
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.records = RecordIndex()
        self.markers = Markers()
        self.namespaces = NamespaceIndex(
            lambda: self.store.current.never_injected, on_deleted=self._namespace_gone
        )
        self._inflight: dict[tuple[str, str], asyncio.Task[NeedStatus]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.retries = BackgroundRetries(
            self._start,
            still_wanted=lambda namespace: self.namespaces.refusal(namespace) is None,
            spawn=self._spawn,
            health=health,
        )
        self._last_event: dict[tuple[str, str], float] = {}
        self.event_rate = NamespaceRate(EVENTS_PER_NAMESPACE_MINUTE)
        self.new_secret_rate = NamespaceRate(NEW_SECRETS_PER_NAMESPACE_MINUTE)
        self._last_refusal: dict[str, float] = {}
        home = self.config.namespace  # restart-only (webhook.config.schema.RESTART_ONLY)
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

    @property
    def config(self) -> Config:
        """The config in use now."""
        return self.store.current

    # -- what the background upkeep reads (webhook.upkeep.refresher.SecretBook) ---------------

    def managed(self) -> Iterable[ManagedSecret]:
        """Every record of a pull secret this install manages (from the watch)."""
        return self.records.records()

    def namespace_exists(self, namespace: str) -> bool:
        return self.namespaces.exists(namespace)

    def opted_in(self, namespace: str) -> bool:
        """May pull secrets be written there (labelled, not excluded, not terminating)?"""
        return namespace in self.namespaces

    def marked(self, record: ManagedSecret) -> bool:
        """Is the record's Secret known to exist (its marker seen by the watch)?"""
        return self.markers.marked(record)

    async def start(self) -> None:
        for informer in self._informers:
            informer.start()

    def not_ready_reason(self) -> str | None:
        waiting = [i.what for i in self._informers if not i.synced.is_set()]
        return f"{' and '.join(waiting)} not listed yet" if waiting else None

    async def wait_synced(self) -> None:
        for informer in self._informers:
            await informer.synced.wait()

    async def close(self) -> None:
        for informer in self._informers:
            await informer.close()
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _namespace_gone(self, namespace: str) -> None:
        """Its Secrets went with it; so must the records, at once: a namespace of the same
        name made later must not inherit them (every replica tries; 404s are fine)."""
        self.event_rate.forget(namespace)
        self.new_secret_rate.forget(namespace)
        gone = [r for r in self.records.records() if r.namespace == namespace]
        for record in gone:
            self.records.remove(record.namespace, record.name)
            self._spawn(self._forget_quietly(record))

    async def _forget_quietly(self, record: ManagedSecret) -> None:
        try:
            await self.kube.delete_record(
                self.config.namespace, record.object_name, record.resource_version
            )
        except (NotFoundError, ConflictError):
            pass  # gone already, or changed since (another replica forgot it first)
        except ApiError as e:
            log.warning("cannot forget %s/%s: %s", *_where(record), e)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the SecretSource --------------------------------------------------------

    async def ensure(
        self, namespace: str, needs: Sequence[PullNeed], *, budget: float, dry_run: bool
    ) -> Outcome:
        refusal = self.namespaces.refusal(namespace)
        if refusal is not None:
            self._log_refusal(namespace, refusal)
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
                    self._start(namespace, need)  # renew in the background; no wait
            elif not dry_run:
                waiting[need.secret_name] = self._start(namespace, need)
        if waiting:
            done, _ = await asyncio.wait(waiting.values(), timeout=budget)
            for name, task in waiting.items():
                if task in done:
                    status = task.result()
                else:
                    status = NeedStatus("pending", f"not ready within {budget:g}s")
                if status.state != "ready":
                    statuses[name] = status
                if status.state == "pending":
                    self._record_event(namespace, name, status.message)
        return Outcome(statuses)

    def _log_refusal(self, namespace: str, reason: str) -> None:
        now = self.clock()
        if now - self._last_refusal.get(namespace, -REFUSAL_LOG_INTERVAL) < REFUSAL_LOG_INTERVAL:
            return
        if len(self._last_refusal) > 10_000:  # forged reviews may name endless namespaces
            self._last_refusal.clear()
        self._last_refusal[namespace] = now
        log.warning("review for namespace %.63r refused: %s; nothing written", namespace, reason)

    async def refresh(self, namespace: str, need: PullNeed) -> NeedStatus:
        """Renew one secret now (joins an admission already making it)."""
        return await asyncio.shield(self._start(namespace, need))

    async def verify(self, record: ManagedSecret) -> bool:
        """Is the Secret of a Ready record still the one the webhook created? A deleted
        one is forgotten (the next write re-creates it), a replaced one marked Foreign;
        one still there gets its marker back."""
        try:
            await self.kube.check_secret(record.namespace, record.name, record.secret_uid)
            await self.mark_secret(record.namespace, record.name, record.secret_uid)
            return True
        except NotFoundError:
            log.info("pull secret %s/%s was deleted; re-creating it", *_where(record))
            self.records.put(record.claimed(0.0))  # locally: the claim is free to retake
            return False
        except (ConflictError, InvalidError):
            await self._mark_foreign(record)
            return False

    def _start(self, namespace: str, need: PullNeed) -> asyncio.Task[NeedStatus]:
        """One write per (namespace, secret) at a time; later callers join it."""
        key = (namespace, need.secret_name)
        task = self._inflight.get(key)
        if task is None or task.done():
            task = self._spawn(self._ensure_one(namespace, need))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, need, t))
        return task

    def _finished(
        self, key: tuple[str, str], need: PullNeed, task: asyncio.Task[NeedStatus]
    ) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("making %s/%s failed unexpectedly", *key, exc_info=error)
            return
        status = task.result()
        if status.state == "pending":
            self.retries.offer(key[0], need, status)

    async def _ensure_one(self, namespace: str, need: PullNeed) -> NeedStatus:
        if self.records.get(namespace, need.secret_name) is None and not (
            self.new_secret_rate.take(namespace)
        ):
            return NeedStatus("pending", "too many new pull secrets in this namespace")
        try:
            credential = await self.cache.get(need, namespace)
        except RegistryAuthError as e:
            log.warning("no credential for %s in %s: %s", need.host, namespace, e)
            # A credential read from the API server (a Secret, a TokenRequest) that could
            # not reach it waits for the API server, not for the registry.
            cause = e.__cause__
            down = isinstance(cause, ApiError) and self._api_down(cause)
            return NeedStatus("pending", f"{e.step} {e.code}".strip(), api_unavailable=down)
        try:
            return await self.write(namespace, need, credential)
        except RecordsMissing as e:
            log.error("cannot record pull secrets: %s is not installed", e)
            return NeedStatus("pending", "the ManagedPullSecret CRD is not installed")
        except ApiError as e:
            self.metrics.secret_writes.labels("write", "error").inc()
            log.warning("cannot write Secret %s/%s: %s", namespace, need.secret_name, e)
            return NeedStatus(
                "pending",
                f"Secret write failed: {e.status} {e.reason}",
                api_unavailable=self._api_down(e),
            )

    def _api_down(self, error: ApiError) -> bool:
        """Did ``error`` come from an API server unavailable, or just back and still
        settling (one just restarted may refuse what it allows a moment later)?"""
        return error.unavailable or (self.health is not None and self.health.settling)

    # -- writing -----------------------------------------------------------------

    async def write(
        self,
        namespace: str,
        need: PullNeed,
        credential: Credential,
    ) -> NeedStatus:
        """Create or renew the secret unless the cluster already has one as fresh."""
        name = need.secret_name
        for _ in range(WRITE_ATTEMPTS):
            now = self.clock()
            record = self.records.get(namespace, name)
            try:
                if record is None:
                    record = await self._save(new_record(namespace, need, now), create=True)
                    return await self._create(record, need, credential)
                if record.state == "Foreign":
                    return NeedStatus("foreign")
                if record.state == "Claimed":
                    if now - record.claimed_at < CLAIM_SECONDS:
                        await self._claim_settles(record)  # another replica is at it
                        continue
                    record = await self._save(record.claimed(now))  # its claimer died
                    return await self._create(record, need, credential)
                if not record.secret_uid:  # never write without a UID to hold it to
                    record = await self._save(record.claimed(now))
                    return await self._create(record, need, credential)
                if (
                    not self.markers.marked(record)
                    and not self.just_made(record, now)
                    and not await self.verify(record)
                ):
                    continue  # deleted (re-created next round) or replaced (Foreign)
                if record.usable(now) and (
                    record.expires_at >= credential.expires_at or now < record.refresh_at
                ):
                    # Fresh, whoever wrote it: another replica's credential a few ms older
                    # than ours is as good, and writing ours over it would only be a
                    # second write. (A replica that began before that Secret was made, or
                    # after, minted its own; either way the Secret is renewed when due.)
                    return NeedStatus("ready")
                return await self._renew(record, need, credential)
            except ConflictError:
                # A record changed under us (another replica): look again.
                await self._reload(namespace, name)
        return NeedStatus("pending", "lost repeated write races")

    async def _create(
        self, record: ManagedSecret, need: PullNeed, credential: Credential
    ) -> NeedStatus:
        body = desired_secret(record.namespace, need, credential, self.config.refresh.fraction)
        try:
            doc = await self.kube.create_secret(record.namespace, body)
        except ConflictError:
            await self._mark_foreign(record)
            return NeedStatus("foreign")
        self.metrics.secret_writes.labels("create", "ok").inc()
        log.info("created pull secret %s/%s for %s", *_where(record), need.host)
        # The record and the marker at once: neither needs the other, and an admission
        # waits for both.
        uid = str((doc.get("metadata") or {}).get("uid", ""))
        await asyncio.gather(
            self._save_ready(record, doc, credential),
            self.mark_secret(record.namespace, record.name, uid),
        )
        return NeedStatus("ready")

    async def _renew(
        self, record: ManagedSecret, need: PullNeed, credential: Credential
    ) -> NeedStatus:
        body = desired_secret(record.namespace, need, credential, self.config.refresh.fraction)
        body["metadata"]["uid"] = record.secret_uid  # only ever the Secret we created
        try:
            doc = await self.kube.replace_secret(record.namespace, record.name, body)
        except NotFoundError:  # deleted by someone: make it again
            log.info("pull secret %s/%s was deleted; re-creating it", *_where(record))
            return await self._create(record, need, credential)
        except (ConflictError, InvalidError):
            # The name now holds somebody else's Secret, or someone took the label off
            # ours (the write policy then refuses it as Invalid, a 422, told apart from a
            # refusal of the webhook's rights, a 403): either way no longer ours.
            await self._mark_foreign(record)
            return NeedStatus("foreign")
        self.metrics.secret_writes.labels("update", "ok").inc()
        log.info("refreshed pull secret %s/%s for %s", *_where(record), need.host)
        await self._save_ready(record, doc, credential)
        return NeedStatus("ready")

    async def _claim_settles(self, claimed: ManagedSecret) -> None:
        """Wait until another replica's claim moves on (the record changes in the
        records watch's copy: a local look-up every CLAIM_POLL_SECONDS), asking the API
        server only after CLAIM_RELOAD_SECONDS without news. (Asking at once, as every
        waiting replica would for every name being made, adds reads to a cold start's
        writes.)"""
        deadline = time.monotonic() + CLAIM_RELOAD_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            current = self.records.get(claimed.namespace, claimed.name)
            if current is None or current.resource_version != claimed.resource_version:
                return
        await self._reload(claimed.namespace, claimed.name)

    def just_made(self, record: ManagedSecret, now: float) -> bool:
        """A Ready record claimed less than CLAIM_SECONDS ago whose marker was not seen
        going: its maker made the Secret before writing Ready and makes the marker right
        after, so a marker missing from this replica's watch is still on its way, however
        late a busy API server's watch brings it. Checking the Secret meanwhile would cost
        a patch, and the marker deleted and made again."""
        return now - record.claimed_at < CLAIM_SECONDS and not self.markers.lost(record)

    async def mark_secret(self, namespace: str, name: str, uid: str) -> bool:
        """Create the marker the Secret owns (records.marker_object). Without one, the
        Secret is checked (one call) whenever it is needed, until one can be made."""
        body = marker_object(namespace, name, uid)
        try:
            try:
                await self.kube.create_marker(namespace, body)
            except ConflictError:
                # A marker left from an earlier Secret of that name (its owner deleted
                # with --cascade=orphan): replace it.
                await self.kube.delete_marker(namespace, name)
                await self.kube.create_marker(namespace, body)
        except ApiError as e:
            log.warning("cannot mark pull secret %s/%s: %s", namespace, name, e)
            return False
        self.markers.add(namespace, name, uid)
        return True

    async def _save_ready(
        self, record: ManagedSecret, secret: dict[str, Any], credential: Credential
    ) -> str:
        """Record the Secret as Ready; returns its UID."""
        uid = str((secret.get("metadata") or {}).get("uid", ""))
        fraction = self.config.refresh.fraction
        # The Secret was written just now (create or replace): that is when it was renewed.
        # Each Secret at its own place in the refresh window: those minted together do
        # not all fall due together (webhook.pullsecrets.renewals).
        due = renew_at(credential, fraction, record.namespace, record.name)
        ready = record.ready(uid, credential.expires_at, due, self.clock())
        for _ in range(WRITE_ATTEMPTS):
            try:
                await self._save(ready)
                break
            except ConflictError:
                # Another replica moved the record on (a claim takeover, a mark): the
                # Secret we wrote is what counts, so write our state over its version.
                current = await self._reload(record.namespace, record.name)
                if current is None:
                    break
                ready = current.ready(uid, ready.expires_at, ready.refresh_at, ready.renewed_at)
        return uid

    async def _mark_foreign(self, record: ManagedSecret) -> None:
        log.warning(
            "Secret %s/%s was not created by the webhook: it is left alone and not used",
            *_where(record),
        )
        try:
            await self._save(record.foreign())
        except ConflictError:
            await self._reload(record.namespace, record.name)

    async def _save(self, record: ManagedSecret, *, create: bool = False) -> ManagedSecret:
        """Write a record (conditional on its resourceVersion) and index what came back."""
        home = self.config.namespace
        body = record.to_object(home)
        if create:
            try:
                doc = await self.kube.create_record(home, body)
            except NotFoundError as e:  # the resource type itself is missing
                raise RecordsMissing(404, "NotFound", "the ManagedPullSecret CRD") from e
        else:
            doc = await self.kube.replace_record(home, record.object_name, body)
        saved = ManagedSecret.from_object(doc) or record
        self.records.put(saved)
        return saved

    async def _reload(self, namespace: str, name: str) -> ManagedSecret | None:
        doc = await self.kube.get_record(self.config.namespace, record_name(namespace, name))
        record = ManagedSecret.from_object(doc) if doc is not None else None
        if record is None:
            self.records.remove(namespace, name)
        else:
            self.records.put(record)
        return record

    async def forget(self, record: ManagedSecret) -> None:
        """Delete a record (its Secret, if any, is already gone or not the webhook's)."""
        await self.kube.delete_record(
            self.config.namespace, record.object_name, record.resource_version
        )
        self.records.remove(record.namespace, record.name)

    async def collect(self, record: ManagedSecret) -> None:
        """Delete an unreferenced Secret the webhook created, then its record."""
        if record.state == "Ready":
            try:
                await self.kube.delete_secret(record.namespace, record.name, record.secret_uid)
            except ConflictError:
                log.warning("%s/%s now holds another Secret: not deleted", *_where(record))
            else:
                self.metrics.secret_writes.labels("delete", "ok").inc()
                log.info("deleted unreferenced pull secret %s/%s", *_where(record))
        await self.forget(record)

    async def mark(self, record: ManagedSecret, since: float | None) -> None:
        """Set or clear the time since which no pod references the record's Secret."""
        await self._save(record.marked(since))

    # -- events ------------------------------------------------------------------

    def _record_event(self, namespace: str, name: str, message: str) -> None:
        key = (namespace, name)
        now = self.clock()
        if now - self._last_event.get(key, -EVENT_INTERVAL) < EVENT_INTERVAL:
            return
        if not self.event_rate.take(namespace):
            return
        if len(self._last_event) > 10_000:  # names a forger invented: forget the old ones
            self._last_event = {
                k: v for k, v in self._last_event.items() if now - v < EVENT_INTERVAL
            }
        self._last_event[key] = now
        text = f"pull secret {name} not ready at admission ({message}); retrying in background"
        self._spawn(self._event(namespace, name, text))

    async def _event(self, namespace: str, name: str, message: str) -> None:
        try:
            await self.kube.create_event(
                namespace,
                involved={
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "namespace": namespace,
                    "name": name,
                },
                reason="PullSecretNotReady",
                message=message,
            )
        except ApiError as e:
            log.warning("cannot record Event in %s: %s", namespace, e)


def _where(record: ManagedSecret) -> tuple[str, str]:
    return record.namespace, record.name
