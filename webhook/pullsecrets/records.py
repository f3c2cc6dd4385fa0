"""The webhook's own record of the pull secrets it manages.

Whether a Secret is the webhook's is decided here, never by a label or an
annotation on the Secret: anyone who can write Secrets in a namespace can set
those. Each managed Secret has one ``ManagedPullSecret`` object (a small
namespaced custom resource) in the webhook's own namespace, where only the
webhook's ServiceAccount (and cluster administrators) may write. The record
holds what the Secret was made for, the UID the API server gave the Secret
when the webhook created it, when its credential was last written, when it
expires and is due for renewal, and since when no pod references it
(`kubectl get managedpullsecrets -A` shows these as columns).

The webhook never reads Secrets (its identity has no get, list or watch on
them): every replica serves its hot path from a watch of these records.

Pure: the objects are built and parsed here; ``kube`` sends them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

from webhook.credentials.base import EXPIRY_MARGIN
from webhook.kube.objects import API_VERSION, KIND, MARKER_KIND
from webhook.kube.rfc3339 import from_rfc3339, to_rfc3339

State: TypeAlias = Literal["Claimed", "Ready", "Foreign"]
STATES: tuple[State, ...] = ("Claimed", "Ready", "Foreign")
#: How long an earlier version's claim on a name is honoured before the Secret is made
#: without it (that claimer created the Secret right after claiming; a longer silence
#: means it died); also how long after its Secret was made (``claimed_at``) a record's
#: missing marker is taken to be still on its way.
CLAIM_SECONDS = 30.0
"""Ready: the webhook created the Secret (UID recorded) and keeps it fresh; the record is
created Ready by the replica whose create of the Secret succeeded. Foreign: a Secret of
that name exists that no replica recorded making; it is never used, changed or deleted.
Claimed: written only by earlier versions, which reserved the name before creating the
Secret."""


def record_name(namespace: str, secret: str) -> str:
    """``<namespace>.<secret>``: namespaces are DNS labels (no dots), secret names are at
    most 63 characters, so this is a unique, valid object name (≤ 127 characters)."""
    return f"{namespace}.{secret}"


@dataclass(frozen=True, slots=True)
class ManagedSecret:
    """One record: a pull secret in ``namespace`` the webhook made (or tried to)."""

    namespace: str
    name: str
    """The Secret's name in ``namespace``."""
    entry: str
    """The registry entry it was made for."""
    host: str
    identity: str
    service_account: str = ""
    state: State = "Claimed"
    secret_uid: str = ""
    """UID of the Secret the webhook created; every later write is conditional on it."""
    expires_at: float = 0.0
    refresh_at: float = 0.0
    renewed_at: float = 0.0
    """When the webhook last (re)wrote the Secret's credential (0: never)."""
    claimed_at: float = 0.0
    unreferenced_since: float | None = None
    resource_version: str = ""
    """Of the record object (optimistic concurrency between replicas)."""

    @property
    def object_name(self) -> str:
        return record_name(self.namespace, self.name)

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, Secret name)."""
        return self.namespace, self.name

    def usable(self, now: float) -> bool:
        return self.state == "Ready" and self.expires_at - EXPIRY_MARGIN > now

    def ready(
        self, uid: str, expires_at: float, refresh_at: float, renewed_at: float
    ) -> ManagedSecret:
        """The Secret ``uid`` holds a credential written at ``renewed_at``."""
        return replace(
            self,
            state="Ready",
            secret_uid=uid,
            expires_at=expires_at,
            refresh_at=refresh_at,
            renewed_at=renewed_at,
        )

    def foreign(self) -> ManagedSecret:
        return replace(
            self, state="Foreign", secret_uid="", expires_at=0.0, refresh_at=0.0, renewed_at=0.0
        )

    def claimed(self, now: float) -> ManagedSecret:
        return replace(self, state="Claimed", secret_uid="", claimed_at=now)

    def marked(self, since: float | None) -> ManagedSecret:
        return replace(self, unreferenced_since=since)

    def to_object(self, webhook_namespace: str) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.state}
        if self.secret_uid:
            status["secretUID"] = self.secret_uid
        if self.expires_at:
            status["expiresAt"] = to_rfc3339(self.expires_at)
        if self.refresh_at:
            status["refreshAt"] = to_rfc3339(self.refresh_at)
        if self.renewed_at:
            status["renewedAt"] = to_rfc3339(self.renewed_at)
        if self.claimed_at:
            status["claimedAt"] = to_rfc3339(self.claimed_at)
        if self.unreferenced_since is not None:
            status["unreferencedSince"] = to_rfc3339(self.unreferenced_since)
        metadata: dict[str, Any] = {
            "name": self.object_name,
            "namespace": webhook_namespace,
            "labels": {"app.kubernetes.io/managed-by": "pull-secret-webhook"},
        }
        if self.resource_version:
            metadata["resourceVersion"] = self.resource_version
        spec = {
            "namespace": self.namespace,
            "secretName": self.name,
            "registry": self.entry,
            "host": self.host,
            "identity": self.identity,
        }
        if self.service_account:
            spec["serviceAccount"] = self.service_account
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": spec,
            "status": status,
        }

    @classmethod
    def from_object(cls, doc: Mapping[str, Any]) -> ManagedSecret | None:
        """Parse a record; None for an object that is not a well-formed record."""
        meta, spec, status = (_mapping(doc.get(k)) for k in ("metadata", "spec", "status"))
        namespace, name = _text(spec, "namespace"), _text(spec, "secretName")
        state = status.get("state")
        if not namespace or not name or state not in STATES:
            return None
        if meta.get("name") != record_name(namespace, name):
            return None  # a record can only speak for the Secret its name says
        since = status.get("unreferencedSince")
        # Interned: namespaces, registries and identities repeat across many records.
        return cls(
            namespace=sys.intern(namespace),
            name=sys.intern(name),
            entry=sys.intern(_text(spec, "registry")),
            host=sys.intern(_text(spec, "host")),
            identity=sys.intern(_text(spec, "identity")),
            service_account=sys.intern(_text(spec, "serviceAccount")),
            state=state,
            secret_uid=_text(status, "secretUID"),
            expires_at=from_rfc3339(_text(status, "expiresAt")) or 0.0,
            refresh_at=from_rfc3339(_text(status, "refreshAt")) or 0.0,
            renewed_at=from_rfc3339(_text(status, "renewedAt")) or 0.0,
            claimed_at=from_rfc3339(_text(status, "claimedAt")) or 0.0,
            unreferenced_since=from_rfc3339(since) if isinstance(since, str) else None,
            resource_version=_text(meta, "resourceVersion"),
        )


def marker_object(namespace: str, secret: str, secret_uid: str) -> dict[str, Any]:
    """A marker owned by the Secret: when anyone deletes the Secret, Kubernetes' garbage
    collector deletes the marker too, and the webhook's watch of markers sees it go. The
    marker carries no authority (the records decide); it only tells that a Secret went."""
    return {
        "apiVersion": API_VERSION,
        "kind": MARKER_KIND,
        "metadata": {
            "name": secret,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "pull-secret-webhook"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": secret_uid}
            ],
        },
    }


def marker_owner(doc: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(namespace, secret name, secret UID or "" when it has no owner any more)."""
    meta = _mapping(doc.get("metadata"))
    namespace, name = _text(meta, "namespace"), _text(meta, "name")
    if not namespace or not name:
        return None
    owners = meta.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else ():
        if (
            isinstance(owner, Mapping)
            and owner.get("kind") == "Secret"
            and owner.get("name") == name
            and isinstance(owner.get("uid"), str)
        ):
            return namespace, name, owner["uid"]
    return namespace, name, ""


class Markers:
    """Which Secret (by UID) each marker is owned by. A Ready record counts as fresh
    only while its Secret's marker is there: a Secret deleted (the garbage collector
    then deletes the marker), deleted with ``--cascade=orphan`` (the marker loses its
    owner) or replaced (a new UID) is noticed from this watch alone.

    Also which markers were seen going (deleted or orphaned) in the last LOST_SECONDS:
    the marker of a Secret made moments ago may simply not have arrived yet, and only
    one seen going says its Secret went."""

    #: How long a marker seen going is remembered: longer than a new Secret's grace for
    #: its marker to arrive (CLAIM_SECONDS).
    LOST_SECONDS = 60.0

    def __init__(self) -> None:
        self._owner: dict[tuple[str, str], str] = {}
        self._lost: dict[tuple[str, str], tuple[str, float]] = {}
        """(namespace, secret) → (the UID its marker was owned by, when it went)."""

    def marked(self, record: ManagedSecret) -> bool:
        uid = self._owner.get((record.namespace, record.name))
        return bool(uid) and uid == record.secret_uid

    def lost(self, record: ManagedSecret) -> bool:
        """Was the marker of this record's Secret seen going (within LOST_SECONDS)?"""
        gone = self._lost.get((record.namespace, record.name))
        return gone is not None and gone[0] == record.secret_uid

    def add(self, namespace: str, secret: str, uid: str) -> None:
        self._owner[(namespace, secret)] = uid
        self._lost.pop((namespace, secret), None)

    def __len__(self) -> int:
        return len(self._owner)

    def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
        before, self._owner = self._owner, {}
        for obj in objects:
            self.apply("ADDED", obj)
        for key, uid in before.items():  # went while no watch was there to say so
            if self._owner.get(key) != uid:
                self._went(key, uid)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        owner = marker_owner(obj)
        if owner is None:
            return
        namespace, name, uid = owner
        key = (namespace, name)
        if event == "DELETED" or not uid:
            had = self._owner.pop(key, None)
            if had:
                self._went(key, had)
        else:
            self._owner[(sys.intern(namespace), sys.intern(name))] = uid
            self._lost.pop(key, None)

    def _went(self, key: tuple[str, str], uid: str) -> None:
        now = time.monotonic()
        self._lost.pop(key, None)  # re-inserted at the end: the dict stays in time order
        self._lost[key] = (uid, now)
        while True:  # forget the oldest beyond LOST_SECONDS (amortised O(1))
            oldest = next(iter(self._lost))
            if now - self._lost[oldest][1] <= self.LOST_SECONDS:
                break
            del self._lost[oldest]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(m: Mapping[str, Any], key: str) -> str:
    value = m.get(key)
    return value if isinstance(value, str) else ""


class RecordIndex:
    """Records by (namespace, secret name), kept current by a watch and by our writes."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], ManagedSecret] = {}
        self._heard = -float("inf")
        """When the watch last delivered anything (``time.monotonic``)."""
        self._waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        """Writers waiting for one record to change (``wait_change``)."""

    async def wait_change(self, namespace: str, name: str, at_most: float) -> None:
        """Return when the record of (namespace, name) is put or removed, or after
        ``at_most`` seconds, whichever comes first."""
        key = (namespace, name)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter, at_most)
        except TimeoutError:
            pass
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[key]

    def _wake(self, key: tuple[str, str]) -> None:
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    def silent_for(self) -> float:
        """Seconds since the watch last delivered a list or an event (inf: never)."""
        return time.monotonic() - self._heard

    def get(self, namespace: str, name: str) -> ManagedSecret | None:
        return self._records.get((namespace, name))

    def put(self, record: ManagedSecret) -> None:
        key = (record.namespace, record.name)
        old = self._records.get(key)
        # A watch event may arrive after our own newer write: keep the newer version.
        if old and _rv(old.resource_version) > _rv(record.resource_version):
            return
        self._records[key] = record
        if self._waiters:
            self._wake(key)

    def remove(self, namespace: str, name: str) -> None:
        self._records.pop((namespace, name), None)
        if self._waiters:
            self._wake((namespace, name))

    def records(self) -> list[ManagedSecret]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    # -- the informer's handler --------------------------------------------------

    def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
        parsed = (ManagedSecret.from_object(o) for o in objects)
        self._records = {(r.namespace, r.name): r for r in parsed if r is not None}
        self._heard = time.monotonic()
        for key in list(self._waiters):
            self._wake(key)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        self._heard = time.monotonic()
        record = ManagedSecret.from_object(obj)
        if record is None:
            return
        if event == "DELETED":
            self.remove(record.namespace, record.name)
        else:
            self.put(record)


def _rv(version: str) -> int:
    # resourceVersions are opaque strings; etcd-backed ones are integers, which is all
    # we compare (anything else counts as "unknown, take the newest event").
    try:
        return int(version)
    except ValueError:
        return -1
