"""Pull secrets in the cluster: make sure a fresh one exists for each need, fast.

``PullSecretManager`` is the server's ``SecretSource``. It keeps an index of the
managed secrets of every namespace, filled by a list+watch of the secrets the
webhook labelled, so that the hot path (every needed secret known fresh) makes
no network call at all. Otherwise it mints a credential (through the
credential cache, single-flight per key) and writes the secret, resolving races
through the API server: create → AlreadyExists → read → update with
resourceVersion → Conflict → read again. An older credential never replaces a
fresher one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook.admission import NeedStatus, Outcome
from webhook.config import Config
from webhook.credentials.base import Credential, RegistryAuthError
from webhook.credentials.cache import CredentialCache
from webhook.kube import Kube, KubeAPIError, from_rfc3339, to_rfc3339
from webhook.metrics import Metrics
from webhook.needs import PullNeed

log = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "pull-secret-webhook"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGER}"
REGISTRY_LABEL = "pull-secret-webhook/registry"
ANN_EXPIRES = "pull-secret-webhook/expires-at"
ANN_REFRESH = "pull-secret-webhook/refresh-at"
ANN_HOST = "pull-secret-webhook/host"
ANN_IDENTITY = "pull-secret-webhook/identity"
ANN_SERVICE_ACCOUNT = "pull-secret-webhook/service-account"
ANN_UNREFERENCED = "pull-secret-webhook/unreferenced-since"
DOCKERCONFIGJSON = ".dockerconfigjson"

#: A secret whose credential has less than this left is treated as missing: a pull
#: that starts with it must still authenticate its last layer request.
EXPIRY_MARGIN = 60.0
#: Attempts at a write that keeps losing races to other replicas before giving up
#: for this admission (the background retry and the refresher carry on).
WRITE_ATTEMPTS = 5
#: One Warning Event per (namespace, secret) per minute at most, so a Deployment of
#: hundreds of replicas during an outage does not flood the namespace's events.
EVENT_INTERVAL = 60.0
#: Back-off after the managed-secret watch fails, before listing again.
WATCH_RETRY_SECONDS = 2.0
#: A secret that could not be made at admission is retried in the background, first
#: after 5 s (the kubelet's first image pull retry comes ~10 s after the failure) and
#: then backing off to every 5 minutes (the kubelet's own maximum pull back-off), for
#: an hour; a new pod needing it starts the cycle again.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
RETRY_GIVE_UP_SECONDS = 3600.0


@dataclass(frozen=True)
class SecretRecord:
    """What the index knows of one Secret in a namespace."""

    namespace: str
    name: str
    managed: bool
    expires_at: float = 0.0
    refresh_at: float = 0.0
    host: str = ""
    entry: str = ""
    identity: str = ""
    service_account: str = ""
    unreferenced_since: float | None = None
    resource_version: str = ""

    @classmethod
    def from_secret(cls, doc: Mapping[str, Any]) -> SecretRecord:
        meta = doc.get("metadata") or {}
        labels = meta.get("labels") or {}
        ann = meta.get("annotations") or {}
        managed = labels.get(MANAGED_BY) == MANAGER
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            managed=managed,
            expires_at=from_rfc3339(ann.get(ANN_EXPIRES, "")) or 0.0,
            refresh_at=from_rfc3339(ann.get(ANN_REFRESH, "")) or 0.0,
            host=ann.get(ANN_HOST, ""),
            entry=labels.get(REGISTRY_LABEL, ""),
            identity=ann.get(ANN_IDENTITY, ""),
            service_account=ann.get(ANN_SERVICE_ACCOUNT, ""),
            unreferenced_since=from_rfc3339(ann[ANN_UNREFERENCED])
            if ANN_UNREFERENCED in ann
            else None,
            resource_version=meta.get("resourceVersion", ""),
        )

    def usable(self, now: float) -> bool:
        return self.managed and self.expires_at - EXPIRY_MARGIN > now


def dockerconfigjson(host: str, credential: Credential) -> bytes:
    auth = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
    doc = {
        "auths": {
            host: {"username": credential.username, "password": credential.password, "auth": auth}
        }
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def desired_secret(
    namespace: str, need: PullNeed, credential: Credential, fraction: float
) -> dict[str, Any]:
    annotations = {
        ANN_EXPIRES: to_rfc3339(credential.expires_at),
        ANN_REFRESH: to_rfc3339(credential.refresh_at(fraction)),
        ANN_HOST: need.host,
        ANN_IDENTITY: need.identity.key,
    }
    if need.identity.service_account:
        annotations[ANN_SERVICE_ACCOUNT] = need.identity.service_account
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": need.secret_name,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGER, REGISTRY_LABEL: need.entry.name},
            "annotations": annotations,
        },
        "data": {
            DOCKERCONFIGJSON: base64.b64encode(dockerconfigjson(need.host, credential)).decode()
        },
    }


class SecretIndex:
    """Managed secrets by (namespace, name), kept current by a watch and by our writes."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], SecretRecord] = {}

    def get(self, namespace: str, name: str) -> SecretRecord | None:
        return self._records.get((namespace, name))

    def put(self, record: SecretRecord) -> None:
        key = (record.namespace, record.name)
        old = self._records.get(key)
        # A watch event may arrive after our own newer write: keep the newer version.
        if (
            old
            and old.resource_version
            and record.resource_version
            and _rv(old.resource_version) > _rv(record.resource_version)
        ):
            return
        self._records[key] = record

    def remove(self, namespace: str, name: str) -> None:
        self._records.pop((namespace, name), None)

    def replace_all(self, records: Sequence[SecretRecord]) -> None:
        self._records = {(r.namespace, r.name): r for r in records}

    def records(self) -> list[SecretRecord]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


def _rv(version: str) -> int:
    # resourceVersions are opaque strings; etcd-backed ones are integers, which is all
    # we compare (anything else counts as "unknown, take the newest event").
    try:
        return int(version)
    except ValueError:
        return -1


class PullSecretManager:
    """The webhook's ``SecretSource``: ensure fresh pull secrets, in the budget."""

    def __init__(
        self,
        config: Config,
        kube: Kube,
        cache: CredentialCache,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.kube = kube
        self.cache = cache
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.index = SecretIndex()
        self._inflight: dict[tuple[str, str], asyncio.Task[NeedStatus]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._last_event: dict[tuple[str, str], float] = {}
        self._retrying: set[tuple[str, str]] = set()
        self._synced = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._watch_task = asyncio.create_task(self._watch_loop())

    def not_ready_reason(self) -> str | None:
        return None if self._synced.is_set() else "managed secrets not listed yet"

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def close(self) -> None:
        tasks = [t for t in (self._watch_task, *self._background) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the SecretSource --------------------------------------------------------

    async def ensure(
        self, namespace: str, needs: Sequence[PullNeed], *, budget: float, dry_run: bool
    ) -> Outcome:
        now = self.clock()
        statuses: dict[str, NeedStatus] = {}
        waiting: dict[str, asyncio.Task[NeedStatus]] = {}
        for need in needs:
            record = self.index.get(namespace, need.secret_name)
            if record is not None and not record.managed:
                statuses[need.secret_name] = NeedStatus("foreign")
            elif record is not None and record.usable(now):
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

    async def refresh(self, namespace: str, need: PullNeed) -> NeedStatus:
        """Renew one secret now (joins an admission already making it)."""
        return await asyncio.shield(self._start(namespace, need))

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
        if task.result().state == "pending" and key not in self._retrying:
            self._retrying.add(key)
            self._spawn(self._retry(key, need))

    async def _retry(self, key: tuple[str, str], need: PullNeed) -> None:
        """Keep trying to make a secret an admission could not, so the kubelet's next
        pull retry finds it."""
        namespace = key[0]
        delay = RETRY_FIRST_SECONDS
        give_up = time.monotonic() + RETRY_GIVE_UP_SECONDS
        try:
            while time.monotonic() < give_up:
                await asyncio.sleep(delay)
                status = await self._start(namespace, need)
                if status.state != "pending":
                    log.info("pull secret %s/%s made after a retry", namespace, need.secret_name)
                    return
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            log.warning("gave up making %s/%s for now", namespace, need.secret_name)
        finally:
            self._retrying.discard(key)

    async def _ensure_one(self, namespace: str, need: PullNeed) -> NeedStatus:
        try:
            credential = await self.cache.get(need, namespace)
        except RegistryAuthError as e:
            log.warning("no credential for %s in %s: %s", need.host, namespace, e)
            return NeedStatus("pending", f"{e.step} {e.code}".strip())
        try:
            return await self.write(namespace, need, credential)
        except KubeAPIError as e:
            self.metrics.secret_writes.labels("write", "error").inc()
            log.warning("cannot write Secret %s/%s: %s", namespace, need.secret_name, e)
            return NeedStatus("pending", f"Secret write failed: {e.status} {e.reason}")

    async def write(self, namespace: str, need: PullNeed, credential: Credential) -> NeedStatus:
        """Create or update the secret unless the cluster already has one as fresh."""
        body = desired_secret(namespace, need, credential, self.config.refresh.fraction)
        name = need.secret_name
        for _ in range(WRITE_ATTEMPTS):
            existing = self.index.get(namespace, name)
            try:
                if existing is None:
                    doc = await self.kube.create_secret(namespace, body)
                    self.metrics.secret_writes.labels("create", "ok").inc()
                    log.info("created pull secret %s/%s for %s", namespace, name, need.host)
                else:
                    if not existing.managed:
                        log.warning(
                            "Secret %s/%s exists and is not managed by the webhook: left alone",
                            namespace,
                            name,
                        )
                        return NeedStatus("foreign")
                    if existing.expires_at >= credential.expires_at and existing.usable(
                        self.clock()
                    ):
                        return NeedStatus("ready")  # another writer got there first
                    body["metadata"]["resourceVersion"] = existing.resource_version
                    doc = await self.kube.replace_secret(namespace, name, body)
                    self.metrics.secret_writes.labels("update", "ok").inc()
                    log.info("refreshed pull secret %s/%s for %s", namespace, name, need.host)
                self.index.put(SecretRecord.from_secret(doc))
                return NeedStatus("ready")
            except KubeAPIError as e:
                if e.status not in (409, 404):
                    raise
                # 409: created or updated by someone else since we looked; 404: deleted.
                fresh = await self.kube.get_secret(namespace, name)
                if fresh is None:
                    self.index.remove(namespace, name)
                else:
                    self.index.put(SecretRecord.from_secret(fresh))
        return NeedStatus("pending", "lost repeated write races")

    def _record_event(self, namespace: str, name: str, message: str) -> None:
        key = (namespace, name)
        now = self.clock()
        if now - self._last_event.get(key, -EVENT_INTERVAL) < EVENT_INTERVAL:
            return
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
        except KubeAPIError as e:
            log.warning("cannot record Event in %s: %s", namespace, e)

    # -- the watch ---------------------------------------------------------------

    async def _watch_loop(self) -> None:
        while True:
            try:
                items, version = await self.kube.list_secrets(MANAGED_SELECTOR)
                self.index.replace_all([SecretRecord.from_secret(i) for i in items])
                self.metrics.managed_secrets.set(len(self.index))
                self._synced.set()
                while True:
                    version = await self._watch_once(version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("watch of managed secrets failed, listing again: %s", e)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _watch_once(self, version: str) -> str:
        async for event in self.kube.watch_secrets(MANAGED_SELECTOR, version):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                raise KubeAPIError(int(obj.get("code", 0)), obj.get("reason", ""), "watch")
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind == "BOOKMARK":
                continue
            record = SecretRecord.from_secret(obj)
            if kind == "DELETED":
                self.index.remove(record.namespace, record.name)
            else:
                self.index.put(record)
            self.metrics.managed_secrets.set(len(self.index))
        return version
