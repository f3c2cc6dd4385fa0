"""The few Kubernetes calls the webhook makes (kubernetes-asyncio), on plain dicts.

Objects are sent and received as JSON dicts (``_preload_content=False``): the
webhook reads a handful of fields and never needs the generated models.
Failures raise ``KubeAPIError`` carrying the HTTP status (0: unreachable).
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, overload

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from webhook.apihealth import ApiHealth, unavailable
from webhook.kubeapi import (
    BODY_LIMIT,
    GROUP,
    INJECT_LABEL,
    MANAGED_BY_SELECTOR,
    MARKER_PLURAL,
    PLURAL,
    VERSION,
    KubeAPIError,
    SecretData,
)
from webhook.rfc3339 import now_rfc3339

log = logging.getLogger(__name__)

#: A watch is re-opened at least this often (the API server ends it at a random time
#: between its --min-request-timeout and twice that anyway; 300 s keeps it explicit).
WATCH_SECONDS = 300


#: Items per page of a list. client-go's reflector pages with 500; a fifth of that keeps
#: what a (re)list of 100,000 pods holds at once to a few MB (full pods parsed from JSON,
#: four lists at a time), at the price of more, cheap, requests (the API server serves
#: them from its watch cache) when a replica starts or a watch falls too far behind.
LIST_PAGE = 100


# What a LIST keeps of each item: only the fields its watch's handler reads, so that
# a page's worth of full objects is all the memory a list of many objects needs.


class PodRefs(Sequence[Mapping[str, Any]]):
    """Listed pods as (namespace, name, pull secret names) rows, read back as minimal
    pod objects: ~150 bytes a pod where even a reduced object takes ~1 KB, so that
    listing 100,000 pods does not take 100 MB. Namespaces and secret names are interned,
    equal name tuples shared."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, str, tuple[str, ...]]] = []
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        refs = (pod.get("spec") or {}).get("imagePullSecrets") or []
        names = tuple(
            sorted({sys.intern(r["name"]) for r in refs if isinstance(r.get("name"), str)})
        )
        namespace, name = meta.get("namespace"), meta.get("name")
        if names and isinstance(namespace, str) and isinstance(name, str):
            names = self._shared.setdefault(names, names)
            self._rows.append((sys.intern(namespace), name, names))

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        if isinstance(index, slice):
            return [self._pod(row) for row in self._rows[index]]
        return self._pod(self._rows[index])

    @staticmethod
    def _pod(row: tuple[str, str, tuple[str, ...]]) -> Mapping[str, Any]:
        namespace, name, names = row
        return {
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"imagePullSecrets": [{"name": n} for n in names]},
        }


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


def as_api_error(e: BaseException) -> KubeAPIError:
    """The error contract of ``webhook.kubeapi`` for whatever the client raised."""
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
        message = body[:BODY_LIMIT].decode("utf-8", "replace")
    raise KubeAPIError(status, str(reason or ""), message)


async def connect(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from a kubeconfig file, or the in-cluster service account."""
    if kubeconfig:
        return await config.new_client_from_config(config_file=kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Kube:
    """Pull secrets (written, never read), the webhook's records, Namespaces, credential
    Secrets, ServiceAccounts, TokenRequests, Events, Pods and Leases."""

    def __init__(
        self, api: client.ApiClient, *, on_request: Callable[[str], None] = lambda call: None
    ) -> None:
        """``on_request`` hears the name of every call sent (``watch <list call>`` for a
        watch), so the load the webhook puts on the API server can be measured.
        ``health`` hears whether each call reached the API server."""
        self.api = api
        self._on_request = on_request
        self.health = ApiHealth(self.ready)
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def close(self) -> None:
        await self.health.close()
        await self.api.close()

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        self._on_request(method.__name__)
        try:
            resp = await method(*args, _preload_content=False, **kwargs)
            body = await resp.read()
            _raise_for_status(resp.status, resp.reason, body)
        except KubeAPIError as e:
            self._heard(e.status)
            raise
        except (ApiException, TimeoutError, OSError, aiohttp.ClientError) as e:
            error = as_api_error(e)
            self._heard(error.status)
            raise error from e
        self._heard(resp.status)
        return json.loads(body) if body else {}

    def _heard(self, status: int) -> None:
        if unavailable(status):
            self.health.failed(status)
        elif 200 <= status < 300:
            self.health.succeeded()
        # Other answers (403, 404, 409...) are not taken as its return: an API server
        # still starting answers some requests before it is ready for them.

    async def ready(self) -> bool:
        """Does the API server say it is ready (``GET /readyz``)? Not counted as a
        call: it only runs while the API server is unavailable (``ApiHealth``). Where
        the webhook may not read /readyz (a 401 or 403), any such answer will do."""
        try:
            resp: Any = await self.api.call_api(
                "/readyz",
                "GET",
                header_params={"Accept": "text/plain"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=2,
            )
            await resp.read()
        except (ApiException, TimeoutError, OSError, aiohttp.ClientError):
            return False
        return bool(200 <= resp.status < 300 or resp.status in (401, 403))

    async def _optional(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self._call(method, *args, **kwargs)
        except KubeAPIError as e:
            if e.status == 404:
                return None
            raise

    async def _pages(
        self, method: Any, *args: Any, each: Callable[[Mapping[str, Any]], None], **kwargs: Any
    ) -> str:
        """Hand every item of a LIST to ``each``, a page of LIST_PAGE items at a time (so
        no response holds them all); returns its resourceVersion (where a watch starts)."""
        token = ""
        while True:
            doc = await self._call(
                method, *args, limit=LIST_PAGE, _continue=token or None, **kwargs
            )
            for item in doc.get("items") or []:
                each(item)
            meta = doc.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return str(meta.get("resourceVersion", ""))

    async def _list(
        self,
        method: Any,
        *args: Any,
        keep: Callable[[Mapping[str, Any]], dict[str, Any]],
        **kwargs: Any,
    ) -> tuple[list[dict[str, Any]], str]:
        """A LIST's items, each reduced by ``keep``, and its resourceVersion."""
        items: list[dict[str, Any]] = []
        version = await self._pages(
            method, *args, each=lambda item: items.append(keep(item)), **kwargs
        )
        return items, version

    async def _watch(
        self, method: Any, *args: Any, resource_version: str, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from ``resource_version`` until the server ends
        the watch; every failure is a KubeAPIError (status 0 when the stream broke)."""
        self._on_request(f"watch {method.__name__}")
        try:
            resp: Any = await method(
                *args,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                **kwargs,
            )
        except (ApiException, TimeoutError, OSError, aiohttp.ClientError) as e:
            error = as_api_error(e)
            self._heard(error.status)
            raise error from e
        try:
            if not 200 <= resp.status < 300:
                self._heard(resp.status)
                _raise_for_status(resp.status, resp.reason, await resp.read())
            self._heard(resp.status)
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError) as e:
            error = as_api_error(e)
            self._heard(error.status)
            raise error from e
        finally:
            resp.release()

    # -- pull secrets: written, never read ---------------------------------------
    #
    # The webhook's identity has no get, list or watch on Secrets. Every write after
    # the first carries the UID the API server gave the Secret at creation: a Secret
    # deleted since answers 404, one replaced by somebody else 409 (a UID
    # precondition), so the webhook never overwrites what it did not create.

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.core.create_namespaced_secret, namespace, body
        )
        return result

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update; ``body.metadata.uid`` makes it conditional on the Secret being ours."""
        result: dict[str, Any] = await self._call(
            self.core.replace_namespaced_secret, name, namespace, body
        )
        return result

    async def check_secret(self, namespace: str, name: str, uid: str) -> None:
        """Raise 404 if the Secret is gone, 409 if it is not the one with ``uid``.

        A patch that changes nothing but names the UID: the API server checks the UID
        as a precondition and, the object being unchanged, writes nothing to etcd."""
        body = {"metadata": {"uid": uid}}
        await self._call(self.core.patch_namespaced_secret, name, namespace, body)

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete the Secret with ``uid`` (409 if the name now holds another); gone is fine."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        await self._optional(self.core.delete_namespaced_secret, name, namespace, body=body)

    # -- the webhook's records of them (records.py) ------------------------------

    async def list_records(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        return await self._list(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            keep=_record_view,
        )

    def watch_records(self, namespace: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            resource_version=resource_version,
        )

    async def get_record(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
        return result

    async def create_record(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, body
        )
        return result

    async def replace_record(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Update; ``body.metadata.resourceVersion`` makes it conditional (409 on a race)."""
        result: dict[str, Any] = await self._call(
            self.custom.replace_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
        )
        return result

    async def delete_record(self, namespace: str, name: str, resource_version: str) -> None:
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"resourceVersion": resource_version},
        }
        await self._optional(
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body=body,
        )

    # -- markers owned by the pull secrets (records.marker_object) ---------------

    async def create_marker(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call(
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            MARKER_PLURAL,
            body,
        )

    async def delete_marker(self, namespace: str, name: str) -> None:
        await self._optional(
            self.custom.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            MARKER_PLURAL,
            name,
        )

    async def list_markers(self) -> tuple[list[dict[str, Any]], str]:
        return await self._list(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            MARKER_PLURAL,
            label_selector=MANAGED_BY_SELECTOR,
            keep=_marker_view,
        )

    def watch_markers(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            MARKER_PLURAL,
            label_selector=MANAGED_BY_SELECTOR,
            resource_version=resource_version,
        )

    # -- namespaces --------------------------------------------------------------

    async def list_namespaces(self) -> tuple[list[dict[str, Any]], str]:
        return await self._list(self.core.list_namespace, keep=_namespace_view)

    def watch_namespaces(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(self.core.list_namespace, resource_version=resource_version)

    # -- credential Secrets the config names (a Role with resourceNames) ---------

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._optional(
            self.core.read_namespaced_secret, name, namespace
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

    async def list_pods(self) -> tuple[PodRefs, str]:
        """Every pod that lists pull secrets, reduced to what garbage collection reads
        (namespace, name, the secrets' names)."""
        pods = PodRefs()
        version = await self._pages(self.core.list_pod_for_all_namespaces, each=pods.add)
        return pods, version

    def watch_pods(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(self.core.list_pod_for_all_namespaces, resource_version=resource_version)

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
