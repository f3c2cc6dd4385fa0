"""Leases: leader election's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.kube.base import KubeBase
from webhook.kube.client import resource_path

COORDINATION = "/apis/coordination.k8s.io/v1"


class LeaseCalls(KubeBase):
    """Leases: read, created and replaced."""

    # -- leases ------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            "read_namespaced_lease",
            "GET",
            resource_path(COORDINATION, "leases", namespace=namespace, name=name),
        )
        return result

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call(
            "create_namespaced_lease",
            "POST",
            resource_path(COORDINATION, "leases", namespace=namespace),
            body=body,
        )

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._call(
            "replace_namespaced_lease",
            "PUT",
            resource_path(COORDINATION, "leases", namespace=namespace, name=name),
            body=body,
        )
