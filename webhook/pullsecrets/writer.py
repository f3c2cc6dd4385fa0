"""The race-safe writer of pull secrets: every Secret, record and marker the webhook writes
for a need is written here, by admissions and the refresher alike.

It mints a credential (through the credential cache, single-flight per key) and writes
the secret without ever reading one. A new Secret costs the admission one write:

1. create the Secret. The API server lets exactly one create of a name succeed, so the
   create is the race between replicas: 201 makes the Secret this replica's, and the
   admission is answered at once;
2. then, without the admission waiting: record the Secret's UID and expiry (the record,
   created Ready) and make its marker. Until the record says Ready, this replica holds the
   UID (``_unrecorded``; a failed write is retried in the background). Every later write
   names that UID, so a Secret deleted since is re-created and one replaced by someone
   else is left alone (Foreign);
3. 409 AlreadyExists: the name holds a Secret already, and only a record written by the
   replica whose create succeeded can say it is the webhook's. The replica waits for that
   record in its records watch (``_record_moves``) and follows it; none coming, the
   Secret is one the webhook did not create (planted, or left by a replica that died
   before recording it): the record says Foreign and it is never used, changed or
   deleted. While it waits, an admission that runs out of budget does not name the
   Secret (``unproven``).

A record that calls the name Foreign, or names another Secret, is written over only by a
replica holding a 201 for the Secret now there (checked by UID first): a Secret of that
name made later means this one was deleted before it.

One write per (namespace, secret) runs at a time: an admission, a background retry and
the refresher that need the same secret share it (``start``). The Secret's shape is
``secret.py``'s, the record's ``records.py``'s; when a renewal falls due is
``renewals.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from webhook.admission.decision import NeedStatus
from webhook.admission.needs import PullNeed
from webhook.config.store import ConfigStore
from webhook.credentials.base import Credential, RegistryAuthError
from webhook.kube.errors import ApiError, ConflictError, InvalidError, NotFoundError
from webhook.kube.health import ApiHealth
from webhook.pullsecrets.protocols import CredentialSource, WriterApi
from webhook.pullsecrets.ratelimit import NamespaceRate
from webhook.pullsecrets.records import (
    CLAIM_SECONDS,
    ManagedSecret,
    Markers,
    RecordIndex,
    marker_object,
    record_name,
)
from webhook.pullsecrets.renewals import renew_at
from webhook.pullsecrets.secret import desired_secret
from webhook.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: Attempts at a write that keeps losing races to other replicas before giving up
#: for this admission (the background retry and the refresher carry on).
WRITE_ATTEMPTS = 5
#: While waiting for another replica's record (its claim, or the record of a Secret whose
#: create beat ours), the records watch wakes the writer as it brings that record; the
#: writer also looks at least this often (for the watch's silence, its deadlines).
CLAIM_POLL_SECONDS = 0.05
#: ... and asks the API server for it when the records watch has said nothing at all for
#: this long (it may have stalled). A watch that keeps delivering other records' events
#: is merely late: a read would only add to the load that makes it late (in a cold
#: storm, hundreds of reads of ~0.8 s each; bench/README.md).
CLAIM_RELOAD_SECONDS = 1.0
#: After a 409 on a Secret's create, how long the record of whoever made it is waited for
#: before the Secret is called Foreign. The replica that made it records it right after
#: its create answers: tens of ms on a calm API server, ~1 s on average in a saturated
#: one (bench/README.md). A Foreign verdict reached too early is written over by the
#: replica that made the Secret, once its record lands; meanwhile no pod is given it.
FOLLOW_SECONDS = 5.0
#: New pull secrets started per namespace per minute (each is a ServiceAccount read and,
#: when it exists, a TokenRequest, a record, the Secret and its marker). A namespace
#: needs one per registry entry and identity its pods use: a handful, a few dozen with
#: per-pod identity. Beyond it they are made by the background retries a minute later,
#: and a forged flood of invented names costs the API server at most this much.
NEW_SECRETS_PER_NAMESPACE_MINUTE = 30
#: A replica shutting down waits this long for the bookkeeping of the Secrets it has just
#: made (their Ready writes and markers) before cancelling it: a Ready write cut off
#: leaves a claim that another replica takes over after CLAIM_SECONDS, meets the
#: Secret's 409 and records as Foreign. A few round trips, well inside the Deployment's
#: grace period (30 s, of which SHUTDOWN_DELAY and the admissions' drain take ~15 s).
BOOKKEEPING_DRAIN_SECONDS = 5.0


class Writing(Protocol):
    """The writer as admissions, background retries and the refresher use it."""

    def start(self, namespace: str, need: PullNeed) -> asyncio.Task[NeedStatus]:
        """Make the need's secret fresh; joins a write of it already running."""
        ...

    async def refresh(self, namespace: str, need: PullNeed) -> NeedStatus:
        """``start``, awaited to its end (a caller cancelled leaves the write running)."""
        ...

    async def verify(self, record: ManagedSecret) -> bool:
        """Is the Secret of a Ready record still the one the webhook created?"""
        ...

    def present(self, record: ManagedSecret, now: float) -> bool:
        """Is the record's Secret known to be there (its marker seen), or made so recently
        that its marker is still on its way?"""
        ...

    def unproven(self, namespace: str, name: str) -> bool:
        """Does the name hold a Secret whose maker is not known yet (a 409 on its create,
        no record so far)? An admission must not name it."""
        ...


class RecordsMissing(NotFoundError):
    """The API server does not know the ManagedPullSecret resource (CRD not installed)."""


def new_record(namespace: str, need: PullNeed, now: float) -> ManagedSecret:
    """The claim on the need's secret name in ``namespace``, made at ``now``."""
    return ManagedSecret(
        namespace=namespace,
        name=need.secret_name,
        entry=need.entry.name,
        host=need.host,
        identity=need.identity.key,
        service_account=need.identity.service_account,
        claimed_at=now,
    )


class SecretWriter:
    """Writes pull secrets, their records and markers under the rules above."""

    def __init__(
        self,
        store: ConfigStore,
        kube: WriterApi,
        cache: CredentialSource,
        records: RecordIndex,
        markers: Markers,
        metrics: Metrics,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        on_pending: Callable[[str, PullNeed, NeedStatus], None] = lambda *_: None,
        clock: Callable[[], float] = time.time,
        health: ApiHealth | None = None,
    ) -> None:
        """``records`` and ``markers`` are the indexes the watches keep (the writer puts
        what it wrote there at once); ``spawn`` runs a write as a task its owner cancels
        at shutdown; ``on_pending`` hears of each write that ended "pending" (to retry
        it in the background)."""
        self.store = store
        self.kube = kube
        self.cache = cache
        self.records = records
        self.markers = markers
        self.metrics = metrics
        self.spawn = spawn
        self.on_pending = on_pending
        self.clock = clock
        self.health = health
        self.new_secret_rate = NamespaceRate(NEW_SECRETS_PER_NAMESPACE_MINUTE)
        self._inflight: dict[tuple[str, str], asyncio.Task[NeedStatus]] = {}
        #: Secrets this replica created whose record is not Ready yet (the API server
        #: failed that write): the created Secret and its credential, so that the next
        #: attempt records its UID. Creating again would meet the Secret's own 409 and
        #: take the webhook's Secret for a planted one.
        self._unrecorded: dict[tuple[str, str], tuple[dict[str, Any], Credential]] = {}
        #: The bookkeeping of Secrets just created (record Ready, marker), running after
        #: the admission that made them was answered.
        self._bookkeeping: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: Names whose create met 409 and whose record this replica is waiting for.
        self._unproven: set[tuple[str, str]] = set()

    # -- the Writing interface ---------------------------------------------------

    def start(self, namespace: str, need: PullNeed) -> asyncio.Task[NeedStatus]:
        key = (namespace, need.secret_name)
        task = self._inflight.get(key)
        if task is None or task.done():
            task = self.spawn(self._ensure_one(namespace, need))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, need, t))
        return task

    async def refresh(self, namespace: str, need: PullNeed) -> NeedStatus:
        return await asyncio.shield(self.start(namespace, need))

    async def verify(self, record: ManagedSecret) -> bool:
        """A deleted Secret is forgotten (the next write re-creates it), a replaced one
        marked Foreign; one still there gets its marker back."""
        try:
            await self.kube.check_secret(record.namespace, record.name, record.secret_uid)
            await self.mark_secret(record.namespace, record.name, record.secret_uid)
            return True
        except NotFoundError:
            log.info("pull secret %s/%s was deleted; re-creating it", *record.key)
            self._unrecorded.pop(record.key, None)  # what we made is gone with it
            self.records.put(record.claimed(0.0))  # locally: the claim is free to retake
            return False
        except (ConflictError, InvalidError):
            await self._mark_foreign(record)
            return False

    def present(self, record: ManagedSecret, now: float) -> bool:
        return self.markers.marked(record) or self.just_made(record, now)

    def unproven(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._unproven

    def just_made(self, record: ManagedSecret, now: float) -> bool:
        """A Ready record whose Secret was made (``claimed_at``) less than CLAIM_SECONDS
        ago and whose marker was not seen going: its maker writes the record and the
        marker at once after the create, so a marker missing from this replica's watch is
        still on its way, however late a busy API server's watch brings it. Checking the
        Secret meanwhile would cost a patch, and the marker deleted and made again."""
        return now - record.claimed_at < CLAIM_SECONDS and not self.markers.lost(record)

    # -- one write, from credential to record --------------------------------------

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
            self.on_pending(key[0], need, status)

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

    async def write(self, namespace: str, need: PullNeed, credential: Credential) -> NeedStatus:
        """Create or renew the secret unless the cluster already has one as fresh."""
        name = need.secret_name
        key = (namespace, name)
        for _ in range(WRITE_ATTEMPTS):
            now = self.clock()
            record = self.records.get(namespace, name)
            try:
                made = self._unrecorded.get(key)
                if made is not None:
                    doc, made_with = made
                    if not _records(record, _uid(doc)):
                        if key in self._bookkeeping:
                            # This replica made the Secret moments ago and is recording
                            # it: it exists, and it is ours.
                            return NeedStatus("ready")
                        status = await self._record_made(namespace, need, doc, made_with)
                        if status is not None:  # a retry of the bookkeeping
                            return status
                        continue  # ours is gone: look again
                    del self._unrecorded[key]  # recorded
                if record is None:
                    status = await self._create(namespace, need, credential, None)
                elif record.state == "Foreign":
                    return NeedStatus("foreign")
                elif record.state == "Claimed" and now - record.claimed_at < CLAIM_SECONDS:
                    # A replica of an earlier version claims before it creates: wait for
                    # its record to move on (the loop asks again after the wait).
                    await self._record_moves(namespace, name, record, CLAIM_RELOAD_SECONDS)
                    continue
                elif record.state == "Claimed" or not record.secret_uid:
                    # An abandoned claim, or a Secret found deleted (``verify``).
                    status = await self._create(namespace, need, credential, record)
                elif not self.present(record, now) and not await self.verify(record):
                    continue  # deleted (re-created next round) or replaced (Foreign)
                elif record.usable(now) and (
                    record.expires_at >= credential.expires_at or now < record.refresh_at
                ):
                    # Fresh, whoever wrote it: another replica's credential a few ms older
                    # than ours is as good, and writing ours over it would only be a
                    # second write. (A replica that began before that Secret was made, or
                    # after, minted its own; either way the Secret is renewed when due.)
                    return NeedStatus("ready")
                else:
                    status = await self._renew(record, need, credential)
                if status is not None:
                    return status
            except ConflictError:
                # A record changed under us (another replica): look again.
                await self._reload(namespace, name)
        return NeedStatus("pending", "lost repeated write races")

    async def _create(
        self,
        namespace: str,
        need: PullNeed,
        credential: Credential,
        record: ManagedSecret | None,
    ) -> NeedStatus | None:
        """Create the Secret: the admission's one write. None: the name turned out to be
        another replica's Secret, whose record has come (look again, and follow it)."""
        fraction = self.store.current.refresh.fraction
        body = desired_secret(namespace, need, credential, fraction)
        try:
            doc = await self.kube.create_secret(namespace, body)
        except ConflictError:
            self.metrics.secret_writes.labels("create", "taken").inc()
            return await self._taken(namespace, need, record)
        self.metrics.secret_writes.labels("create", "ok").inc()
        log.info("created pull secret %s/%s for %s", namespace, need.secret_name, need.host)
        self._unrecorded[(namespace, need.secret_name)] = (doc, credential)
        self._keep_books(namespace, need, doc, credential)
        return NeedStatus("ready")

    async def _taken(
        self, namespace: str, need: PullNeed, record: ManagedSecret | None
    ) -> NeedStatus | None:
        """Our create met a Secret of that name. Its maker, if a replica, records it right
        after its create: follow that record when it comes (None: look again). Without
        one, the Secret is not the webhook's: Foreign."""
        key = (namespace, need.secret_name)
        self._unproven.add(key)
        try:
            if await self._record_moves(namespace, need.secret_name, record, FOLLOW_SECONDS):
                return None
            current = await self._reload(namespace, need.secret_name)
            if _moved(record, current):
                return None
            # Unchanged: the record we knew (as the API server has it), or still none.
            base = current if current is not None else new_record(namespace, need, self.clock())
            if not await self._mark_foreign(base, create=current is None):
                return None  # the record moved on meanwhile: look again
            return NeedStatus("foreign")
        finally:
            self._unproven.discard(key)

    async def _record_moves(
        self, namespace: str, name: str, known: ManagedSecret | None, at_most: float
    ) -> bool:
        """Wait up to ``at_most`` seconds for the name's record to move on from ``known``
        (None: to appear) in the records watch's copy, woken as the watch brings it. The
        API server is asked only when the watch has said nothing at all for
        CLAIM_RELOAD_SECONDS (it may have stalled; one that keeps delivering other
        records' events is merely late, and a read would only add to the load that makes
        it late: in a cold storm, hundreds of reads of ~0.8 s each). Did it move?"""
        begun = read = time.monotonic()
        while True:
            await self.records.wait_change(namespace, name, CLAIM_POLL_SECONDS)
            if _moved(known, self.records.get(namespace, name)):
                return True
            now = time.monotonic()
            if (
                now - read >= CLAIM_RELOAD_SECONDS
                and self.records.silent_for() >= CLAIM_RELOAD_SECONDS
            ):
                read = now
                if _moved(known, await self._reload(namespace, name)):
                    return True
            if now - begun >= at_most:
                return False

    def _keep_books(
        self, namespace: str, need: PullNeed, doc: dict[str, Any], credential: Credential
    ) -> None:
        """Record the Secret just created as Ready and make its marker, in the background:
        the admission that made it is answered at once."""
        key = (namespace, need.secret_name)
        task = self.spawn(self._books(namespace, need, doc, credential))
        self._bookkeeping[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._bookkeeping.get(key) is finished:
                del self._bookkeeping[key]

        task.add_done_callback(done)

    async def _books(
        self, namespace: str, need: PullNeed, doc: dict[str, Any], credential: Credential
    ) -> None:
        try:
            await self._record_made(namespace, need, doc, credential)
        except ApiError as e:
            # The Secret stays this replica's (``_unrecorded``); the background retry
            # records its UID (``write``).
            self.metrics.secret_writes.labels("write", "error").inc()
            log.warning("cannot record pull secret %s/%s: %s", namespace, need.secret_name, e)
            status = NeedStatus(
                "pending",
                f"record write failed: {e.status} {e.reason}",
                api_unavailable=self._api_down(e),
            )
            self.on_pending(namespace, need, status)

    async def drain(self) -> None:
        """Wait (at most BOOKKEEPING_DRAIN_SECONDS) for the bookkeeping of Secrets just
        created."""
        pending = list(self._bookkeeping.values())
        if pending:
            await asyncio.wait(pending, timeout=BOOKKEEPING_DRAIN_SECONDS)

    async def _record_made(
        self, namespace: str, need: PullNeed, doc: dict[str, Any], credential: Credential
    ) -> NeedStatus | None:
        """Record the Secret this replica created as Ready, and make its marker. None: the
        Secret is gone already (deleted, or replaced), so there is nothing to record."""
        key = (namespace, need.secret_name)
        uid = _uid(doc)
        # The record and the marker at once: neither needs the other.
        recorded, _ = await asyncio.gather(
            self._record_new(namespace, need, uid, credential),
            self.mark_secret(namespace, need.secret_name, uid),
        )
        if self._unrecorded.get(key, (None,))[0] is doc:  # not a newer Secret's
            del self._unrecorded[key]
        return NeedStatus("ready") if recorded else None

    async def _record_new(
        self, namespace: str, need: PullNeed, uid: str, credential: Credential
    ) -> bool:
        """Create the record of a Secret this replica made (``uid``), Ready; or write it
        over a record of that name another replica left: an abandoned claim, a Secret
        found deleted, or a Foreign verdict reached while this record was on its way. A
        record that names another Secret, or says Foreign, is written over only once ours
        is checked to be still there. False: ours is gone."""
        name = need.secret_name
        now = self.clock()
        fraction = self.store.current.refresh.fraction
        due = renew_at(credential, fraction, namespace, name)
        current = self.records.get(namespace, name)
        checked = False
        for _ in range(WRITE_ATTEMPTS):
            if _records(current, uid):
                return True
            if (
                not checked
                and current is not None
                and (current.state == "Foreign" or current.secret_uid)
            ):
                if not await self._still_ours(namespace, name, uid):
                    return False
                checked = True
            base = current or new_record(namespace, need, now)
            ready = base.claimed(now).ready(uid, credential.expires_at, due, now)
            try:
                await self.save(ready, create=current is None)
                return True
            except ConflictError:
                current = await self._reload(namespace, name)
        raise ConflictError(409, "Conflict", f"record of {namespace}/{name} kept changing")

    async def _still_ours(self, namespace: str, name: str, uid: str) -> bool:
        """Is the Secret of that name still the one this replica created (``uid``)?"""
        try:
            await self.kube.check_secret(namespace, name, uid)
            return True
        except (NotFoundError, ConflictError, InvalidError):
            log.info("pull secret %s/%s went before it was recorded", namespace, name)
            return False

    async def _renew(
        self, record: ManagedSecret, need: PullNeed, credential: Credential
    ) -> NeedStatus | None:
        fraction = self.store.current.refresh.fraction
        body = desired_secret(record.namespace, need, credential, fraction)
        body["metadata"]["uid"] = record.secret_uid  # only ever the Secret we created
        try:
            doc = await self.kube.replace_secret(record.namespace, record.name, body)
        except NotFoundError:  # deleted by someone: make it again
            log.info("pull secret %s/%s was deleted; re-creating it", *record.key)
            return await self._create(record.namespace, need, credential, record)
        except (ConflictError, InvalidError):
            # The name now holds somebody else's Secret, or someone took the label off
            # ours (the write policy then refuses it as Invalid, a 422, told apart from a
            # refusal of the webhook's rights, a 403): either way no longer ours.
            await self._mark_foreign(record)
            return NeedStatus("foreign")
        self.metrics.secret_writes.labels("update", "ok").inc()
        log.info("refreshed pull secret %s/%s for %s", *record.key, need.host)
        await self._save_ready(record, doc, credential)
        return NeedStatus("ready")

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
        fraction = self.store.current.refresh.fraction
        # The Secret was written just now (create or replace): that is when it was renewed.
        # Each Secret at its own place in the refresh window: those minted together do
        # not all fall due together (webhook.pullsecrets.renewals).
        due = renew_at(credential, fraction, record.namespace, record.name)
        ready = record.ready(uid, credential.expires_at, due, self.clock())
        for _ in range(WRITE_ATTEMPTS):
            try:
                await self.save(ready)
                break
            except ConflictError:
                # Another replica moved the record on (a claim takeover, a mark): the
                # Secret we wrote is what counts, so write our state over its version.
                current = await self._reload(record.namespace, record.name)
                if current is None:
                    break
                ready = current.ready(uid, ready.expires_at, ready.refresh_at, ready.renewed_at)
        return uid

    async def _mark_foreign(self, record: ManagedSecret, *, create: bool = False) -> bool:
        """Record the name as Foreign; False if the record changed meanwhile (reloaded)."""
        log.warning(
            "Secret %s/%s was not created by the webhook: it is left alone and not used",
            *record.key,
        )
        try:
            await self.save(record.foreign(), create=create)
            return True
        except ConflictError:
            await self._reload(record.namespace, record.name)
            return False

    # -- records -----------------------------------------------------------------

    async def save(self, record: ManagedSecret, *, create: bool = False) -> ManagedSecret:
        """Write a record (conditional on its resourceVersion) and index what came back."""
        home = self.store.current.namespace
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
        home = self.store.current.namespace
        doc = await self.kube.get_record(home, record_name(namespace, name))
        record = ManagedSecret.from_object(doc) if doc is not None else None
        if record is None:
            self.records.remove(namespace, name)
        else:
            self.records.put(record)
        return record


def _uid(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("uid", ""))


def _records(record: ManagedSecret | None, uid: str) -> bool:
    """Does ``record`` say Ready for the Secret ``uid``?"""
    return record is not None and record.state == "Ready" and record.secret_uid == uid


def _moved(known: ManagedSecret | None, current: ManagedSecret | None) -> bool:
    """Is ``current`` another version of the record than ``known`` (None: none)?"""
    if known is None or current is None:
        return known is not current
    return current.resource_version != known.resource_version
