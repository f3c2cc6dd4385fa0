"""Secrets: the pull secrets the webhook writes (never reads) and the credential Secrets
the config names, which it reads.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from webhook.kube.base import CORE, KubeBase
from webhook.kube.client import MERGE_PATCH, resource_path
from webhook.kube.objects import SecretData


class SecretCalls(KubeBase):
    """Pull secrets (written, never read) and credential Secrets (read by name)."""

    # -- pull secrets: written, never read ---------------------------------------
    #
    # The webhook's identity has no get, list or watch on Secrets. Every write after
    # the first carries the UID the API server gave the Secret at creation: a Secret
    # deleted since answers 404, one replaced by somebody else 409 (a UID
    # precondition), so the webhook never overwrites what it did not create.

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call(
            "create_namespaced_secret",
            "POST",
            resource_path(CORE, "secrets", namespace=namespace),
            body=body,
        )

    async def dry_run_create_secret(self, namespace: str, body: Mapping[str, Any]) -> None:
        """A create the API server runs through admission (its policies included) and
        then discards (``dryRun=All``): nothing is stored. An ApiError if refused."""
        await self._call(
            "create_namespaced_secret_dry_run",
            "POST",
            resource_path(CORE, "secrets", namespace=namespace),
            params={"dryRun": "All"},
            body=body,
        )

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update; ``body.metadata.uid`` makes it conditional on the Secret being ours."""
        return await self._call(
            "replace_namespaced_secret",
            "PUT",
            resource_path(CORE, "secrets", namespace=namespace, name=name),
            body=body,
        )

    async def check_secret(self, namespace: str, name: str, uid: str) -> None:
        """Raise 404 if the Secret is gone, 409 if it is not the one with ``uid``.

        A patch that changes nothing but names the UID: the API server checks the UID
        as a precondition and, the object being unchanged, writes nothing to etcd."""
        await self._call(
            "patch_namespaced_secret",
            "PATCH",
            resource_path(CORE, "secrets", namespace=namespace, name=name),
            body={"metadata": {"uid": uid}},
            content_type=MERGE_PATCH,
        )

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Secret with ``uid`` (409 if the name now holds another); gone is fine."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        await self._optional(
            "delete_namespaced_secret",
            "DELETE",
            resource_path(CORE, "secrets", namespace=namespace, name=name),
            body=body,
        )

    # -- credential Secrets the config names (a Role with resourceNames) ---------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            "read_namespaced_secret",
            "GET",
            resource_path(CORE, "secrets", namespace=namespace, name=name),
        )
        return result

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        """``credentials.base.SecretReader``: decoded data of a credentials Secret."""
        doc = await self.get_secret(namespace, name)
        if doc is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
        return SecretData(data=data, resource_version=doc["metadata"].get("resourceVersion", ""))
