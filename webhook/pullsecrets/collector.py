"""Garbage collection of pull secrets: what the refresher decides to mark, delete or
forget, and the records of a namespace that went, written under the writer's rules (every
Secret deletion names the UID the webhook's record holds; every record write is
conditional on its version)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from webhook.config.store import ConfigStore
from webhook.kube.errors import ApiError, ConflictError, NotFoundError
from webhook.pullsecrets.protocols import RecordApi, SecretApi
from webhook.pullsecrets.records import ManagedSecret, RecordIndex
from webhook.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


class RecordSaving(Protocol):
    """How a record is written (``webhook.pullsecrets.writer.SecretWriter.save``)."""

    async def save(self, record: ManagedSecret, *, create: bool = False) -> ManagedSecret: ...


class CollectorApi(SecretApi, RecordApi, Protocol):
    """All the collector asks of Kubernetes."""


class Collecting(Protocol):
    """The collector as the refresher uses it."""

    async def mark(self, record: ManagedSecret, since: float | None) -> None:
        """Set or clear the time since which no pod references the record's Secret."""
        ...

    async def collect(self, record: ManagedSecret) -> None:
        """Delete an unreferenced Secret the webhook created, then its record."""
        ...

    async def forget(self, record: ManagedSecret) -> None:
        """Delete a record (its Secret, if any, is already gone or not the webhook's)."""
        ...


class SecretCollector:
    def __init__(
        self,
        store: ConfigStore,
        kube: CollectorApi,
        records: RecordIndex,
        writer: RecordSaving,
        metrics: Metrics,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.store = store
        self.kube = kube
        self.records = records
        self.writer = writer
        self.metrics = metrics
        self.spawn = spawn

    async def mark(self, record: ManagedSecret, since: float | None) -> None:
        await self.writer.save(record.marked(since))

    async def collect(self, record: ManagedSecret) -> None:
        if record.state == "Ready":
            try:
                await self.kube.delete_secret(record.namespace, record.name, record.secret_uid)
            except ConflictError:
                log.warning("%s/%s now holds another Secret: not deleted", *record.key)
            else:
                self.metrics.secret_writes.labels("delete", "ok").inc()
                log.info("deleted unreferenced pull secret %s/%s", *record.key)
        await self.forget(record)

    async def forget(self, record: ManagedSecret) -> None:
        await self.kube.delete_record(
            self.store.current.namespace, record.object_name, record.resource_version
        )
        self.records.remove(record.namespace, record.name)

    def namespace_gone(self, namespace: str) -> None:
        """Its Secrets went with it; so must the records, at once: a namespace of the same
        name made later must not inherit them (every replica tries; 404s are fine)."""
        gone = [r for r in self.records.records() if r.namespace == namespace]
        for record in gone:
            self.records.remove(record.namespace, record.name)
            self.spawn(self._forget_quietly(record))

    async def _forget_quietly(self, record: ManagedSecret) -> None:
        try:
            await self.kube.delete_record(
                self.store.current.namespace, record.object_name, record.resource_version
            )
        except (NotFoundError, ConflictError):
            pass  # gone already, or changed since (another replica forgot it first)
        except ApiError as e:
            log.warning("cannot forget %s/%s: %s", *record.key, e)
