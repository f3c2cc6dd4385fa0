"""ServiceAccounts: their annotations and TokenRequests for their tokens."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.kube.base import CORE, KubeBase
from webhook.kube.client import resource_path


class AccountCalls(KubeBase):
    """ServiceAccounts and TokenRequests (``credentials.base.ServiceAccountTokens``)."""

    # -- service accounts --------------------------------------------------------

    async def token(
        self, namespace: str, service_account: str, audience: str, expiration_seconds: int
    ) -> str:
        """TokenRequest for a service account (``credentials.base.ServiceAccountTokens``)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": expiration_seconds},
        }
        doc = await self._call(
            "create_namespaced_service_account_token",
            "POST",
            resource_path(CORE, "serviceaccounts", namespace=namespace, name=service_account)
            + "/token",
            body=body,
        )
        token: str = doc["status"]["token"]
        return token

    async def service_account_annotations(
        self, namespace: str, name: str
    ) -> Mapping[str, str] | None:
        doc = await self._optional(
            "read_namespaced_service_account",
            "GET",
            resource_path(CORE, "serviceaccounts", namespace=namespace, name=name),
        )
        if doc is None:
            return None
        annotations: Mapping[str, str] = doc.get("metadata", {}).get("annotations") or {}
        return annotations
