"""Pods: listed and watched for garbage collection and self-healing, evicted to heal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from webhook.kube.base import CORE, KubeBase
from webhook.kube.client import resource_path
from webhook.kube.pods import ListedPods


class PodCalls(KubeBase):
    """Pods: lists, watches and evictions."""

    # -- pods and events ---------------------------------------------------------

    async def list_pods(self) -> tuple[ListedPods, str]:
        """Every pod that lists pull secrets, reduced to what garbage collection reads
        (namespace, name, the secrets' names), and every pod that fails to pull an
        image, reduced to what self-healing reads."""
        pods = ListedPods()
        version = await self._pages(
            "list_pod_for_all_namespaces", resource_path(CORE, "pods"), each=pods.add
        )
        return pods, version

    def watch_pods(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            "list_pod_for_all_namespaces",
            resource_path(CORE, "pods"),
            resource_version=resource_version,
        )

    async def evict_pod(self, namespace: str, name: str, uid: str) -> None:
        """Ask for the pod with ``uid`` to be evicted (``policy/v1`` Eviction): the API
        server refuses with 429 while a PodDisruptionBudget forbids it, 404 or 409 when
        the pod is gone or the name now holds another pod."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"preconditions": {"uid": uid}},
        }
        await self._call(
            "create_namespaced_pod_eviction",
            "POST",
            resource_path(CORE, "pods", namespace=namespace, name=name) + "/eviction",
            body=body,
        )
