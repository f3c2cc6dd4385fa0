"""The few Kubernetes calls the webhook makes (kubernetes-asyncio), on plain dicts.

Objects are sent and received as JSON dicts (``_preload_content=False``): the
webhook reads a handful of fields and never needs the generated models.
Failures raise ``KubeAPIError`` carrying the HTTP status (0: unreachable).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from webhook.credentials.base import SecretData

log = logging.getLogger(__name__)

#: Remote error bodies are cut before they reach a message or a log line.
_BODY_LIMIT = 300
#: A watch is re-opened at least this often (the API server ends it at a random time
#: between its --min-request-timeout and twice that anyway; 300 s keeps it explicit).
WATCH_SECONDS = 300


class KubeAPIError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"Kubernetes API {status} {reason}: {message[:_BODY_LIMIT]}".rstrip(": "))


def _error(e: BaseException) -> KubeAPIError:
    if isinstance(e, ApiException):
        message = ""
        try:
            message = json.loads(e.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = str(e.body or "")
        return KubeAPIError(int(e.status or 0), str(e.reason or ""), message)
    return KubeAPIError(0, type(e).__name__, str(e))


def _raise_for_status(status: int, reason: str | None, body: bytes) -> None:
    """Without ``_preload_content`` the client hands back every response as is, errors
    included: the status is ours to check."""
    if 200 <= status < 300:
        return
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body[:_BODY_LIMIT].decode("utf-8", "replace")
    raise KubeAPIError(status, str(reason or ""), message)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except (TypeError, ValueError):
            return None


async def connect(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from a kubeconfig file, or the in-cluster service account."""
    if kubeconfig:
        return await config.new_client_from_config(config_file=kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Kube:
    """Secrets, ServiceAccounts, TokenRequests, Events, Pods and Leases."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            resp = await method(*args, _preload_content=False, **kwargs)
            body = await resp.read()
        except ApiException as e:
            raise _error(e) from e
        except (TimeoutError, OSError) as e:
            raise _error(e) from e
        _raise_for_status(resp.status, resp.reason, body)
        return json.loads(body) if body else {}

    async def _optional(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._call(method, *args, **kwargs)
        except KubeAPIError as e:
            if e.status == 404:
                return None
            raise

    # -- secrets -----------------------------------------------------------------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            self.core.read_namespaced_secret, name, namespace
        )
        return result

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.core.create_namespaced_secret, namespace, body
        )
        return result

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update; ``body.metadata.resourceVersion`` makes it conditional (409 on a race)."""
        result: dict[str, Any] = await self._call(
            self.core.replace_namespaced_secret, name, namespace, body
        )
        return result

    async def patch_secret_metadata(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        await self._call(self.core.patch_namespaced_secret, name, namespace, body)

    async def delete_secret(self, namespace: str, name: str, resource_version: str = "") -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        await self._optional(self.core.delete_namespaced_secret, name, namespace, body=body)

    async def list_secrets(self, label_selector: str) -> tuple[list[dict[str, Any]], str]:
        """Managed secrets of every namespace, and the list's resourceVersion."""
        doc = await self._call(
            self.core.list_secret_for_all_namespaces, label_selector=label_selector
        )
        return list(doc.get("items") or []), str(doc.get("metadata", {}).get("resourceVersion", ""))

    async def watch_secrets(
        self, label_selector: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from ``resource_version`` until the server ends it."""
        try:
            resp: Any = await self.core.list_secret_for_all_namespaces(
                label_selector=label_selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
            )
        except ApiException as e:
            raise _error(e) from e
        if not 200 <= resp.status < 300:
            body = await resp.read()
            resp.release()
            _raise_for_status(resp.status, resp.reason, body)
        try:
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)
        finally:
            resp.release()

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        """``credentials.base.SecretReader``: decoded data of a credentials Secret."""
        doc = await self.get_secret(namespace, name)
        if doc is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
        return SecretData(data=data, resource_version=doc["metadata"].get("resourceVersion", ""))

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
            self.core.create_namespaced_service_account_token, service_account, namespace, body
        )
        token: str = doc["status"]["token"]
        return token

    async def service_account_annotations(
        self, namespace: str, name: str
    ) -> Mapping[str, str] | None:
        doc = await self._optional(self.core.read_namespaced_service_account, name, namespace)
        if doc is None:
            return None
        annotations: Mapping[str, str] = doc.get("metadata", {}).get("annotations") or {}
        return annotations

    # -- pods and events ---------------------------------------------------------

    async def list_pods(self, namespace: str) -> list[dict[str, Any]]:
        doc = await self._call(self.core.list_namespaced_pod, namespace)
        return list(doc.get("items") or [])

    async def create_event(
        self,
        namespace: str,
        *,
        involved: Mapping[str, str],
        reason: str,
        message: str,
        event_type: str = "Warning",
        component: str = "pull-secret-webhook",
    ) -> None:
        now = now_rfc3339()
        name = (involved.get("name") or "pod").rstrip("-")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
        }
        await self._call(self.core.create_namespaced_event, namespace, body)

    # -- leases ------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            self.coordination.read_namespaced_lease, name, namespace
        )
        return result

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.coordination.create_namespaced_lease, namespace, body
        )
        return result

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.coordination.replace_namespaced_lease, name, namespace, body
        )
        return result
