"""The webhook's records, the markers owned by the pull secrets, and Namespaces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from webhook.kube.base import CORE, KubeBase
from webhook.kube.client import resource_path
from webhook.kube.objects import (
    GROUP,
    INJECT_LABEL,
    MANAGED_BY_SELECTOR,
    MARKER_PLURAL,
    PLURAL,
    VERSION,
)

OWN = f"/apis/{GROUP}/{VERSION}"

# What a LIST keeps of each item: only the fields its watch's handler reads, so that
# a page's worth of full objects is all the memory a list of many objects needs
# (pods: webhook.kube.pods.ListedPods).


def _namespace_view(namespace: Mapping[str, Any]) -> dict[str, Any]:
    meta = namespace.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = namespace.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "labels": {INJECT_LABEL: labels[INJECT_LABEL]} if INJECT_LABEL in labels else {},
        },
        "status": {"phase": status.get("phase")},
    }


def _marker_view(marker: Mapping[str, Any]) -> dict[str, Any]:
    meta = marker.get("metadata") or {}
    return {
        "metadata": {
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "ownerReferences": meta.get("ownerReferences") or [],
        }
    }


def _record_view(record: Mapping[str, Any]) -> dict[str, Any]:
    meta = record.get("metadata") or {}
    return {
        "metadata": {"name": meta.get("name"), "resourceVersion": meta.get("resourceVersion")},
        "spec": record.get("spec"),
        "status": record.get("status"),
    }


class RecordCalls(KubeBase):
    """Records and markers (the webhook's own resources) and Namespaces."""

    # -- the webhook's records of them (records.py) ------------------------------

    async def list_records(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        return await self._list(
            "list_namespaced_custom_object",
            resource_path(OWN, PLURAL, namespace=namespace),
            keep=_record_view,
        )

    def watch_records(self, namespace: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            "list_namespaced_custom_object",
            resource_path(OWN, PLURAL, namespace=namespace),
            resource_version=resource_version,
        )

    async def get_record(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            "get_namespaced_custom_object",
            "GET",
            resource_path(OWN, PLURAL, namespace=namespace, name=name),
        )
        return result

    async def create_record(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call(
            "create_namespaced_custom_object",
            "POST",
            resource_path(OWN, PLURAL, namespace=namespace),
            body=body,
        )

    async def replace_record(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update; ``body.metadata.resourceVersion`` makes it conditional (409 on a race)."""
        return await self._call(
            "replace_namespaced_custom_object",
            "PUT",
            resource_path(OWN, PLURAL, namespace=namespace, name=name),
            body=body,
        )

    async def delete_record(self, namespace: str, name: str, resource_version: str) -> None:
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"resourceVersion": resource_version},
        }
        await self._optional(
            "delete_namespaced_custom_object",
            "DELETE",
            resource_path(OWN, PLURAL, namespace=namespace, name=name),
            body=body,
        )

    # -- markers owned by the pull secrets (records.marker_object) ---------------

    async def create_marker(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call(
            "create_namespaced_custom_object",
            "POST",
            resource_path(OWN, MARKER_PLURAL, namespace=namespace),
            body=body,
        )

    async def delete_marker(self, namespace: str, name: str) -> None:
        await self._optional(
            "delete_namespaced_custom_object",
            "DELETE",
            resource_path(OWN, MARKER_PLURAL, namespace=namespace, name=name),
        )

    async def list_markers(self) -> tuple[list[dict[str, Any]], str]:
        return await self._list(
            "list_cluster_custom_object",
            resource_path(OWN, MARKER_PLURAL),
            params={"labelSelector": MANAGED_BY_SELECTOR},
            keep=_marker_view,
        )

    def watch_markers(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            "list_cluster_custom_object",
            resource_path(OWN, MARKER_PLURAL),
            params={"labelSelector": MANAGED_BY_SELECTOR},
            resource_version=resource_version,
        )

    # -- namespaces --------------------------------------------------------------

    async def list_namespaces(self) -> tuple[list[dict[str, Any]], str]:
        return await self._list(
            "list_namespace", resource_path(CORE, "namespaces"), keep=_namespace_view
        )

    def watch_namespaces(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            "list_namespace", resource_path(CORE, "namespaces"), resource_version=resource_version
        )
