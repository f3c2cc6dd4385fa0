"""The few Kubernetes calls the webhook makes, on plain JSON dicts (``webhook.kube.client``).

The webhook reads a handful of fields of what it gets and sends what it builds; every
call has its path here. Failures raise the ``webhook.kube.errors.ApiError`` its HTTP
status names (``NotFoundError``, ``ConflictError``, ...; ``UnreachableError``: no answer).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from typing_extensions import Unpack

from webhook.kube.client import (
    CORE_API,
    MERGE_PATCH,
    TRANSPORT_ERRORS,
    ApiClient,
    Payload,
    connect,
    raise_for_status,
    resource_path,
    transport_error,
)
from webhook.kube.errors import ApiError, ForbiddenError, NotFoundError, UnauthorizedError
from webhook.kube.health import ApiHealth
from webhook.kube.objects import (
    GROUP,
    INJECT_LABEL,
    MANAGED_BY_SELECTOR,
    MARKER_PLURAL,
    PLURAL,
    VERSION,
    SecretData,
)
from webhook.kube.pods import ListedPods
from webhook.kube.rfc3339 import now_rfc3339
from webhook.telemetry import redact

log = logging.getLogger(__name__)

__all__ = ["LIST_PAGE", "WATCH_SECONDS", "Kube", "connect"]

#: A watch is re-opened at least this often (the API server ends it at a random time
#: between its --min-request-timeout and twice that anyway; 300 s keeps it explicit).
WATCH_SECONDS = 300
#: How long past WATCH_SECONDS a watch that went silent is given before it is dropped.
WATCH_GRACE_SECONDS = 30


#: Items per page of a list. client-go's reflector pages with 500; a fifth of that keeps
#: what a (re)list of 100,000 pods holds at once to a few MB (full pods parsed from JSON,
#: four lists at a time), at the price of more, cheap, requests (the API server serves
#: them from its watch cache) when a replica starts or a watch falls too far behind.
LIST_PAGE = 100


# What a LIST keeps of each item: only the fields its watch's handler reads, so that
# a page's worth of full objects is all the memory a list of many objects needs
# (pods: webhook.kube.pods.ListedPods).


CORE = CORE_API
#: Who the webhook's Events say reported them (``kubectl describe`` shows it).
EVENT_COMPONENT = "pull-secret-webhook"
OWN = f"/apis/{GROUP}/{VERSION}"
COORDINATION = "/apis/coordination.k8s.io/v1"


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


class Kube:
    """Pull secrets (written, never read), the webhook's records, Namespaces, credential
    Secrets, ServiceAccounts, TokenRequests, Events, Pods and Leases."""

    def __init__(
        self, api: ApiClient, *, on_request: Callable[[str], None] = lambda call: None
    ) -> None:
        """``on_request`` hears the name of every call sent (``watch <list call>`` for a
        watch), so the load the webhook puts on the API server can be measured.
        ``health`` hears whether each call reached the API server."""
        self.api = api
        self._on_request = on_request
        self.health = ApiHealth(self.ready)

    async def close(self) -> None:
        await self.health.close()
        await self.api.close()

    async def _call(
        self, name: str, method: str, path: str, **payload: Unpack[Payload]
    ) -> dict[str, Any]:
        self._on_request(name)
        try:
            doc = await self.api.call(method, path, **payload)
        except ApiError as e:
            self._failed(e)
            raise
        self.health.succeeded()
        return doc

    def _failed(self, error: ApiError) -> None:
        if error.unavailable:
            self.health.failed(error.status)
        # Other failures (403, 404, 409...) are not taken as its return: an API server
        # still starting answers some requests before it is ready for them.

    async def ready(self) -> bool:
        """Does the API server say it is ready (``GET /readyz``)? Not counted as a
        call: it only runs while the API server is unavailable (``ApiHealth``). Where
        the webhook may not read /readyz (a 401 or 403), any such answer will do."""
        try:
            raise_for_status(
                await self.api.request("GET", "/readyz", accept="text/plain", seconds=2)
            )
        except (UnauthorizedError, ForbiddenError):
            return True
        except ApiError:
            return False
        return True

    async def _optional(
        self, name: str, method: str, path: str, **payload: Unpack[Payload]
    ) -> dict[str, Any] | None:
        try:
            return await self._call(name, method, path, **payload)
        except NotFoundError:
            return None

    async def _pages(
        self,
        name: str,
        path: str,
        *,
        each: Callable[[Mapping[str, Any]], None],
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """Hand every item of a LIST to ``each``, a page of LIST_PAGE items at a time (so
        no response holds them all); returns its resourceVersion (where a watch starts)."""
        token = ""
        while True:
            doc = await self._call(
                name,
                "GET",
                path,
                params={**(params or {}), "limit": LIST_PAGE, "continue": token or None},
            )
            for item in doc.get("items") or []:
                each(item)
            meta = doc.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return str(meta.get("resourceVersion", ""))

    async def _list(
        self,
        name: str,
        path: str,
        *,
        keep: Callable[[Mapping[str, Any]], dict[str, Any]],
        params: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """A LIST's items, each reduced by ``keep``, and its resourceVersion."""
        items: list[dict[str, Any]] = []
        version = await self._pages(
            name, path, params=params, each=lambda item: items.append(keep(item))
        )
        return items, version

    async def _watch(
        self,
        name: str,
        path: str,
        *,
        resource_version: str,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from ``resource_version`` until the server ends
        the watch; every failure is an ApiError (UnreachableError when the stream broke)."""
        self._on_request(f"watch {name}")
        query = {
            **(params or {}),
            "watch": True,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": WATCH_SECONDS,
        }
        try:
            async with self.api.stream(
                path, params=query, seconds=WATCH_SECONDS + WATCH_GRACE_SECONDS
            ) as resp:
                self.health.succeeded()
                async for line in resp.content:
                    if line.strip():
                        yield orjson.loads(line)
        except ApiError as e:
            self._failed(e)
            raise
        except (*TRANSPORT_ERRORS, ValueError) as e:
            error = transport_error(e)
            self._failed(error)
            raise error from e

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

    async def create_event(
        self,
        namespace: str,
        *,
        involved: Mapping[str, str],
        reason: str,
        message: str,
        event_type: str = "Warning",
    ) -> None:
        now = now_rfc3339()
        name = (involved.get("name") or "pod").rstrip("-")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": redact.scrub(message)[:1024],
            "type": event_type,
            "source": {"component": EVENT_COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": EVENT_COMPONENT,
        }
        await self._call(
            "create_namespaced_event",
            "POST",
            resource_path(CORE, "events", namespace=namespace),
            body=body,
        )

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
