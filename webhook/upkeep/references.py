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

import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

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

    def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self._pods = {}
        self._counts = Counter()
        for pod in objects:
            self.apply("ADDED", pod)

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        key = _pod_key(obj)
        if key is None:
            return
        namespace, pod = key
        names = None if event == "DELETED" else self._names(obj)
        pods = self._pods.get(namespace)
        old = pods.pop(pod, None) if pods is not None else None
        for name in _each(old):
            self._counts[(namespace, name)] -= 1
            if self._counts[(namespace, name)] <= 0:
                del self._counts[(namespace, name)]
        if names:
            namespace = sys.intern(namespace)
            if pods is None:
                pods = self._pods[namespace] = {}
            pods[pod] = names
            for name in _each(names):
                self._counts[(namespace, name)] += 1
        elif pods is not None and not pods:
            del self._pods[namespace]

    def _names(self, pod: Mapping[str, Any]) -> Names | None:
        spec = pod.get("spec")
        refs = spec.get("imagePullSecrets") if isinstance(spec, Mapping) else None
        if not isinstance(refs, list):
            return None
        names = sorted(
            {
                sys.intern(ref["name"])
                for ref in refs
                if isinstance(ref, Mapping)
                and isinstance(ref.get("name"), str)
                and ref["name"].startswith(self._prefix)
            }
        )
        if not names:
            return None
        return names[0] if len(names) == 1 else tuple(names)


def _each(names: Names | None) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else names


def _pod_key(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    return namespace, name
