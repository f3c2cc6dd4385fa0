"""The race-safe writer of pull secrets: every Secret, record and marker the webhook writes
for a need is written here, by admissions and the refresher alike.

It mints a credential (through the credential cache, single-flight per key) and writes
the secret without ever reading one:

1. claim the name by creating its record (a second replica gets 409 and follows the
   record instead);
2. create the Secret; 409 AlreadyExists means the name is taken by a Secret the webhook
   did not create: the record says Foreign and the Secret is never used, changed or
   deleted;
3. record the Secret's UID and expiry, and make its marker. Every later write names that
   UID, so a Secret deleted since is re-created and one replaced by someone else is left
   alone (Foreign). This bookkeeping follows a new Secret's create without the admission
   waiting for it: the Secret exists once its create answers, and this replica holds its
   UID until the record says Ready (``_unrecorded``; a failed write is retried in the
   background). Another replica still follows the claim until the record turns Ready.

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
#: While another replica holds a fresh claim, look at its record (in the watch's copy)
#: again this often.
CLAIM_POLL_SECONDS = 0.05
#: ... and asks the API server for it when the records watch has said nothing at all for
#: this long (it may have stalled). A watch that keeps delivering other records' events
#: is merely late: a read would only add to the load that makes it late (in a cold
#: storm, hundreds of reads of ~0.8 s each; bench/README.md).
CLAIM_RELOAD_SECONDS = 1.0
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

    def just_made(self, record: ManagedSecret, now: float) -> bool:
        """A Ready record claimed less than CLAIM_SECONDS ago whose marker was not seen
        going: its maker made the Secret before writing Ready and makes the marker right
        after, so a marker missing from this replica's watch is still on its way, however
        late a busy API server's watch brings it. Checking the Secret meanwhile would cost
        a patch, and the marker deleted and made again."""
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
        for _ in range(WRITE_ATTEMPTS):
            now = self.clock()
            record = self.records.get(namespace, name)
            try:
                made = self._unrecorded.get((namespace, name))
                if made is not None:
                    if record is not None and record.state == "Claimed":
                        if (namespace, name) in self._bookkeeping:
                            # This replica made the Secret moments ago and is recording
                            # it: it exists, and it is ours.
                            return NeedStatus("ready")
                        return await self._record_made(record, *made)  # a retry
                    del self._unrecorded[(namespace, name)]  # recorded, Foreign or gone
                if record is None:
                    try:
                        record = await self.save(new_record(namespace, need, now), create=True)
                    except ConflictError:
                        await self._claimed_elsewhere(namespace, name)
                        continue
                    return await self._create(record, need, credential)
                if record.state == "Foreign":
                    return NeedStatus("foreign")
                if record.state == "Claimed":
                    if now - record.claimed_at < CLAIM_SECONDS:
                        await self._claim_settles(record)  # another replica is at it
                        continue
                    record = await self.save(record.claimed(now))  # its claimer died
                    return await self._create(record, need, credential)
                if not record.secret_uid:  # never write without a UID to hold it to
                    record = await self.save(record.claimed(now))
                    return await self._create(record, need, credential)
                if not self.present(record, now) and not await self.verify(record):
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
        fraction = self.store.current.refresh.fraction
        body = desired_secret(record.namespace, need, credential, fraction)
        try:
            doc = await self.kube.create_secret(record.namespace, body)
        except ConflictError:
            await self._mark_foreign(record)
            return NeedStatus("foreign")
        self.metrics.secret_writes.labels("create", "ok").inc()
        log.info("created pull secret %s/%s for %s", *record.key, need.host)
        self._unrecorded[record.key] = (doc, credential)
        self._keep_books(record, need, doc, credential)
        return NeedStatus("ready")

    def _keep_books(
        self, record: ManagedSecret, need: PullNeed, doc: dict[str, Any], credential: Credential
    ) -> None:
        """Record the Secret just created as Ready and make its marker, in the background:
        the admission that made it is answered at once."""
        key = record.key
        task = self.spawn(self._books(record, need, doc, credential))
        self._bookkeeping[key] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._bookkeeping.get(key) is finished:
                del self._bookkeeping[key]

        task.add_done_callback(done)

    async def _books(
        self, record: ManagedSecret, need: PullNeed, doc: dict[str, Any], credential: Credential
    ) -> None:
        try:
            await self._record_made(record, doc, credential)
        except ApiError as e:
            # The Secret stays this replica's (``_unrecorded``); the background retry
            # records its UID (``write``), the claim's CLAIM_SECONDS notwithstanding.
            self.metrics.secret_writes.labels("write", "error").inc()
            log.warning("cannot record pull secret %s/%s: %s", *record.key, e)
            status = NeedStatus(
                "pending",
                f"record write failed: {e.status} {e.reason}",
                api_unavailable=self._api_down(e),
            )
            self.on_pending(record.namespace, need, status)

    async def drain(self) -> None:
        """Wait (at most BOOKKEEPING_DRAIN_SECONDS) for the bookkeeping of Secrets just
        created."""
        pending = list(self._bookkeeping.values())
        if pending:
            await asyncio.wait(pending, timeout=BOOKKEEPING_DRAIN_SECONDS)

    async def _record_made(
        self, record: ManagedSecret, doc: dict[str, Any], credential: Credential
    ) -> NeedStatus:
        """Record the Secret this replica created as Ready, and make its marker."""
        # The record and the marker at once: neither needs the other.
        uid = str((doc.get("metadata") or {}).get("uid", ""))
        await asyncio.gather(
            self._save_ready(record, doc, credential),
            self.mark_secret(record.namespace, record.name, uid),
        )
        if self._unrecorded.get(record.key, (None,))[0] is doc:  # not a newer Secret's
            del self._unrecorded[record.key]
        return NeedStatus("ready")

    async def _renew(
        self, record: ManagedSecret, need: PullNeed, credential: Credential
    ) -> NeedStatus:
        fraction = self.store.current.refresh.fraction
        body = desired_secret(record.namespace, need, credential, fraction)
        body["metadata"]["uid"] = record.secret_uid  # only ever the Secret we created
        try:
            doc = await self.kube.replace_secret(record.namespace, record.name, body)
        except NotFoundError:  # deleted by someone: make it again
            log.info("pull secret %s/%s was deleted; re-creating it", *record.key)
            return await self._create(record, need, credential)
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

    async def _claim_settles(self, claimed: ManagedSecret) -> None:
        """Wait until another replica's claim moves on (the record changes in the
        records watch's copy: a local look-up every CLAIM_POLL_SECONDS), asking the API
        server only after CLAIM_RELOAD_SECONDS without news, and only when the watch
        delivered nothing else either. (Asking at once, as every waiting replica would
        for every name being made, adds reads to a cold start's writes.)"""
        deadline = time.monotonic() + CLAIM_RELOAD_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            current = self.records.get(claimed.namespace, claimed.name)
            if current is None or current.resource_version != claimed.resource_version:
                return
        if self.records.silent_for() >= CLAIM_RELOAD_SECONDS:
            await self._reload(claimed.namespace, claimed.name)

    async def _claimed_elsewhere(self, namespace: str, name: str) -> None:
        """Our claim met a record this replica's watch has not shown yet (another replica
        claimed the name moments ago): wait for the watch to bring it (its event is
        already on its way: that create came before ours), and read it only if it has
        not come within CLAIM_RELOAD_SECONDS. (Reading at once cost a read per Secret in
        a cold storm, ~0.5 s each on a busy API server.)"""
        deadline = time.monotonic() + CLAIM_RELOAD_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(CLAIM_POLL_SECONDS)
            if self.records.get(namespace, name) is not None:
                return
        await self._reload(namespace, name)

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

    async def _mark_foreign(self, record: ManagedSecret) -> None:
        log.warning(
            "Secret %s/%s was not created by the webhook: it is left alone and not used",
            *record.key,
        )
        try:
            await self.save(record.foreign())
        except ConflictError:
            await self._reload(record.namespace, record.name)

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
