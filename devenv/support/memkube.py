"""An in-memory stand-in for the few API-server behaviours the secret bookkeeping relies
on, for fast tests of races and of the refresh pass (the end-to-end suite checks the
same against a real kube-apiserver).

What it keeps from the API server: names are unique per namespace (create → 409
AlreadyExists); an update or delete naming a ``metadata.uid`` / ``preconditions.uid``
that is not the object's → 409; an update naming an old ``resourceVersion`` → 409;
a missing object → 404. Every call is counted by name. ``unreachable = True`` stands for
an API server that cannot be reached: every call fails as a refused connection does
(status 0), and ``health`` hears of each call's fate as ``Kube`` reports it.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from webhook.kube.health import ApiHealth
from webhook.kube.objects import KubeAPIError
from webhook.kube.pods import ListedPods


class MemKube:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.markers: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.namespaces: list[dict[str, Any]] = []
        self.evictions: list[tuple[str, str, str]] = []
        #: Pods (namespace, name) whose eviction is answered with this status instead.
        self.eviction_refusals: dict[tuple[str, str], int] = {}
        self.calls: Counter[str] = Counter()
        self._versions = itertools.count(100)
        self.unreachable = False
        self.health = ApiHealth(self.ready)
        self.probes = 0

    async def ready(self) -> bool:
        self.probes += 1
        return not self.unreachable

    def _count(self, call: str) -> None:
        self.calls[call] += 1
        if self.unreachable:
            self.health.failed(0)
            raise KubeAPIError(0, "ClientConnectorError", "Connection refused")
        self.health.succeeded()

    # -- helpers for tests -------------------------------------------------------

    def plant_secret(self, namespace: str, name: str, **metadata: Any) -> dict[str, Any]:
        """A Secret somebody else created (labels and annotations as given)."""
        doc = {
            "metadata": {"name": name, "namespace": namespace, **metadata},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "e30="},
        }
        return self._stamp(self.secrets, (namespace, name), doc, new=True)

    def reference(self, namespace: str, *secret_names: str) -> None:
        """A pod in ``namespace`` that lists these pull secrets."""
        pod = {
            "metadata": {"namespace": namespace, "name": f"pod-{len(self.pods)}"},
            "spec": {"imagePullSecrets": [{"name": n} for n in secret_names]},
        }
        self.pods.append(pod)

    def _stamp(
        self,
        store: dict[tuple[str, str], dict[str, Any]],
        key: tuple[str, str],
        body: Mapping[str, Any],
        *,
        new: bool,
        uid: str = "",
    ) -> dict[str, Any]:
        doc = copy.deepcopy(dict(body))
        meta = doc.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4()) if new else uid
        meta["resourceVersion"] = str(next(self._versions))
        store[key] = doc
        return copy.deepcopy(doc)

    def _update(
        self, store: dict[tuple[str, str], dict[str, Any]], key: tuple[str, str], body: Any
    ) -> dict[str, Any]:
        current = store.get(key)
        if current is None:
            raise KubeAPIError(404, "NotFound", f"{key[1]} not found")
        meta = body.get("metadata") or {}
        if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
            raise KubeAPIError(409, "Conflict", "Precondition failed: UID in precondition")
        version = meta.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise KubeAPIError(409, "Conflict", "the object has been modified")
        return self._stamp(store, key, body, new=False, uid=current["metadata"]["uid"])

    # -- pull secrets ------------------------------------------------------------

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._count("create_secret")
        key = (namespace, body["metadata"]["name"])
        if key in self.secrets:
            raise KubeAPIError(409, "AlreadyExists", f"secrets {key[1]} already exists")
        return self._stamp(self.secrets, key, body, new=True)

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._count("replace_secret")
        return self._update(self.secrets, (namespace, name), body)

    async def check_secret(self, namespace: str, name: str, uid: str) -> None:
        self._count("check_secret")
        current = self.secrets.get((namespace, name))
        if current is None:
            raise KubeAPIError(404, "NotFound", f"{name} not found")
        if current["metadata"]["uid"] != uid:
            raise KubeAPIError(409, "Conflict", "Precondition failed: UID in precondition")

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        self._count("delete_secret")
        current = self.secrets.get((namespace, name))
        if current is None:
            return
        if current["metadata"]["uid"] != uid:
            raise KubeAPIError(409, "Conflict", "Precondition failed: UID in precondition")
        del self.secrets[(namespace, name)]

    # -- records -----------------------------------------------------------------

    async def list_records(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        items = [copy.deepcopy(d) for (ns, _), d in self.records.items() if ns == namespace]
        return items, str(next(self._versions))

    def watch_records(self, namespace: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._no_watch()

    async def get_record(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count("get_record")
        doc = self.records.get((namespace, name))
        return copy.deepcopy(doc) if doc is not None else None

    async def create_record(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._count("create_record")
        key = (namespace, body["metadata"]["name"])
        if key in self.records:
            raise KubeAPIError(409, "AlreadyExists", f"{key[1]} already exists")
        return self._stamp(self.records, key, body, new=True)

    async def replace_record(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._count("replace_record")
        return self._update(self.records, (namespace, name), body)

    async def delete_record(self, namespace: str, name: str, resource_version: str) -> None:
        self._count("delete_record")
        current = self.records.get((namespace, name))
        if current is None:
            return
        if current["metadata"]["resourceVersion"] != resource_version:
            raise KubeAPIError(409, "Conflict", "the object has been modified")
        del self.records[(namespace, name)]

    def delete_secret_as_someone_else(self, namespace: str, name: str) -> None:
        """A user's delete: the garbage collector then removes what the Secret owns."""
        uid = self.secrets.pop((namespace, name))["metadata"]["uid"]
        for key, marker in list(self.markers.items()):
            if any(o.get("uid") == uid for o in marker["metadata"].get("ownerReferences", [])):
                del self.markers[key]

    # -- markers -----------------------------------------------------------------

    async def create_marker(self, namespace: str, body: Mapping[str, Any]) -> None:
        self._count("create_marker")
        key = (namespace, body["metadata"]["name"])
        if key in self.markers:
            raise KubeAPIError(409, "AlreadyExists", f"{key[1]} already exists")
        self._stamp(self.markers, key, body, new=True)

    async def delete_marker(self, namespace: str, name: str) -> None:
        self._count("delete_marker")
        self.markers.pop((namespace, name), None)

    def orphan_markers_of(self, namespace: str, name: str) -> None:
        """``kubectl delete secret --cascade=orphan``: the marker stays, ownerless."""
        self.secrets.pop((namespace, name))
        self.markers[(namespace, name)]["metadata"].pop("ownerReferences", None)

    async def list_markers(self) -> tuple[list[dict[str, Any]], str]:
        return [copy.deepcopy(m) for m in self.markers.values()], str(next(self._versions))

    def watch_markers(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._no_watch()

    # -- leases (leader election) ------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._count("get_lease")
        doc = self.leases.get((namespace, name))
        return copy.deepcopy(doc) if doc is not None else None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._count("create_lease")
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise KubeAPIError(409, "AlreadyExists", f"leases {key[1]} already exists")
        return self._stamp(self.leases, key, body, new=True)

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        self._count("replace_lease")
        return self._update(self.leases, (namespace, name), body)

    # -- the rest ----------------------------------------------------------------

    async def list_namespaces(self) -> tuple[list[dict[str, Any]], str]:
        return copy.deepcopy(self.namespaces), str(next(self._versions))

    def watch_namespaces(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._no_watch()

    async def list_pods(self) -> tuple[ListedPods, str]:
        self._count("list_pods")
        return ListedPods.of(copy.deepcopy(self.pods)), str(next(self._versions))

    def watch_pods(self, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._no_watch()

    async def evict_pod(self, namespace: str, name: str, uid: str) -> None:
        self._count("evict_pod")
        status = self.eviction_refusals.get((namespace, name))
        if status is not None:
            raise KubeAPIError(
                status,
                "Refused",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            )
        self.evictions.append((namespace, name, uid))

    async def create_event(
        self,
        namespace: str,
        *,
        involved: Mapping[str, str],
        reason: str,
        message: str,
        event_type: str = "Warning",
    ) -> None:
        self._count("create_event")
        self.events.append(
            {
                "namespace": namespace,
                "involved": dict(involved),
                "reason": reason,
                "message": message,
                "event_type": event_type,
            }
        )

    @staticmethod
    async def _no_watch() -> AsyncIterator[dict[str, Any]]:
        raise AssertionError("the tests drive the indexes directly")
        yield {}  # pragma: no cover
