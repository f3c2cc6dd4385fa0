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
from collections.abc import Mapping, Sequence
from typing import Any


class References:
    """Pods' references to pull secrets named ``<prefix>-…``, counted per secret."""

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}-"
        self._by_pod: dict[tuple[str, str], tuple[str, ...]] = {}
        self._counts: Counter[tuple[str, str]] = Counter()

    def referenced(self, namespace: str, secret: str) -> bool:
        return self._counts[(namespace, secret)] > 0

    def __len__(self) -> int:
        """How many pods reference at least one such secret."""
        return len(self._by_pod)

    # -- the informer's handler --------------------------------------------------

    def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self._by_pod.clear()
        self._counts.clear()
        for pod in objects:
            self.apply("ADDED", pod)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        key = _pod_key(obj)
        if key is None:
            return
        names = () if event == "DELETED" else self._names(obj)
        old = self._by_pod.pop(key, ())
        for name in old:
            self._counts[(key[0], name)] -= 1
            if self._counts[(key[0], name)] <= 0:
                del self._counts[(key[0], name)]
        if names:
            self._by_pod[key] = names
            for name in names:
                self._counts[(key[0], name)] += 1

    def _names(self, pod: Mapping[str, Any]) -> tuple[str, ...]:
        spec = pod.get("spec")
        refs = spec.get("imagePullSecrets") if isinstance(spec, Mapping) else None
        if not isinstance(refs, list):
            return ()
        names = {
            ref["name"]
            for ref in refs
            if isinstance(ref, Mapping)
            and isinstance(ref.get("name"), str)
            and ref["name"].startswith(self._prefix)
        }
        return tuple(sorted(names))


def _pod_key(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    return namespace, name
