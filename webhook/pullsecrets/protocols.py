"""What the pull-secret bookkeeping asks of Kubernetes and of the credential cache, one
narrow Protocol per concern: each part takes only the calls it makes.

``webhook.kube.calls.Kube`` implements them against the API server; the tests' in-memory
Kubernetes (``devenv/support/memkube.py``) implements them too, so write races, claims,
foreign Secrets and the refresh pass have fast tests beside the end-to-end ones. Every
failure is a ``webhook.kube.errors.ApiError`` of the class its status names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from webhook.admission.needs import PullNeed
from webhook.credentials.base import Credential

Listed = tuple[list[dict[str, Any]], str]
"""A LIST's items and its resourceVersion (where a watch starts)."""


class CredentialSource(Protocol):
    """Where pull secrets' credentials come from (``webhook.credentials.CredentialCache``):
    a credential for the need, or ``RegistryAuthError``."""

    async def get(self, need: PullNeed, namespace: str) -> Credential: ...


class SecretApi(Protocol):
    """Pull secrets: written, never read. Every write after the first names the UID the
    API server gave the Secret, so a Secret replaced by someone else is never touched."""

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def check_secret(self, namespace: str, name: str, uid: str) -> None: ...

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None: ...


class RecordApi(Protocol):
    """The webhook's records (ManagedPullSecret) in its own namespace, each write
    conditional on the version it read."""

    async def get_record(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_record(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_record(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def delete_record(self, namespace: str, name: str, resource_version: str) -> None: ...


class MarkerApi(Protocol):
    """Markers (PullSecretMarker), each owned by its Secret."""

    async def create_marker(self, namespace: str, body: Mapping[str, Any]) -> None: ...

    async def delete_marker(self, namespace: str, name: str) -> None: ...


class WriterApi(SecretApi, RecordApi, MarkerApi, Protocol):
    """All the writer (``webhook.pullsecrets.writer``) asks of Kubernetes."""


class EventApi(Protocol):
    """Events: what an operator reads with ``kubectl describe`` (secrets not made in time,
    pods healed)."""

    async def create_event(
        self,
        namespace: str,
        *,
        involved: Mapping[str, str],
        reason: str,
        message: str,
        event_type: str = "Warning",
    ) -> None: ...


class WatchApi(Protocol):
    """The lists and watches that keep the hot path's indexes: records, markers, and the
    namespaces (which opted in)."""

    async def list_records(self, namespace: str) -> Listed: ...

    def watch_records(
        self, namespace: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]: ...

    async def list_markers(self) -> Listed: ...

    def watch_markers(self, resource_version: str) -> AsyncIterator[dict[str, Any]]: ...

    async def list_namespaces(self) -> Listed: ...

    def watch_namespaces(self, resource_version: str) -> AsyncIterator[dict[str, Any]]: ...


class PullSecretApi(WriterApi, WatchApi, EventApi, Protocol):
    """All the pull-secret manager and the parts it makes ask of Kubernetes."""
