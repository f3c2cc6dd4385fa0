"""Which pull secrets some pod still references, from a watch of Pods.

Garbage collection keeps a managed Secret while any pod lists it in
``spec.imagePullSecrets``. Rather than listing every managed namespace's pods
on every pass (load on the API server that grows with the namespace count and
time), the leader keeps a count per (namespace, secret) from one cluster-wide
watch of Pods: the API server sends only what changes. Only names with the
webhook's secret prefix are kept, so memory follows the pods that use the
webhook's secrets, not all pods.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from webhook.kube.pods import ListedPods, PodRef, pod_ref

#: What one pod references: one name (the common case) or several, sorted.
Names = str | tuple[str, ...]


class References:
    """Pods' references to pull secrets named ``<prefix>-…``, counted per secret.

    Kept small, as it may follow 100,000 pods: per namespace, each pod's name and what
    it references; namespace and secret names are interned (one string however many
    pods repeat them), a single reference is kept as the name itself."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._prefix = f"{prefix}-"
        self._pods: dict[str, dict[str, Names]] = {}
        self._counts: Counter[tuple[str, str]] = Counter()

    def referenced(self, namespace: str, secret: str) -> bool:
        return self._counts[(namespace, secret)] > 0

    def __len__(self) -> int:
        """How many pods reference at least one such secret."""
        return sum(map(len, self._pods.values()))

    # -- the informer's handler --------------------------------------------------

    def replace_all(self, listed: ListedPods) -> None:
        self._pods = {}
        self._counts = Counter()
        for ref in listed.all_refs():
            self._put(ref, deleted=False)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        ref = pod_ref(obj)
        if ref is not None:
            self._put(ref, deleted=event == "DELETED")

    def _put(self, ref: PodRef, *, deleted: bool) -> None:
        namespace, pod = ref.namespace, ref.name
        names = None if deleted else self._names(ref.secrets)
        pods = self._pods.get(namespace)
        old = pods.pop(pod, None) if pods is not None else None
        for name in _each(old):
            self._counts[(namespace, name)] -= 1
            if self._counts[(namespace, name)] <= 0:
                del self._counts[(namespace, name)]
        if names:
            if pods is None:
                pods = self._pods[namespace] = {}
            pods[pod] = names
            for name in _each(names):
                self._counts[(namespace, name)] += 1
        elif pods is not None and not pods:
            del self._pods[namespace]

    def _names(self, secrets: tuple[str, ...]) -> Names | None:
        """Those of the webhook's prefix (``secrets`` are sorted and interned)."""
        names = (
            secrets  # the common case: kept as given, a tuple shared by the listed pods
            if all(n.startswith(self._prefix) for n in secrets)
            else tuple(n for n in secrets if n.startswith(self._prefix))
        )
        if not names:
            return None
        return names[0] if len(names) == 1 else names


def _each(names: Names | None) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else names
