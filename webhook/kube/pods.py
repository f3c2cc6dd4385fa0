"""What the webhook keeps of the cluster's pods, in one representation from list to use.

Garbage collection reads which pull secrets each pod lists (a ``PodRef``); self-healing
reads the pods that fail to pull an image (``podstatus.pull_failure_view``). A list of
100,000 pods is kept as those refs, ~150 bytes a pod where even a reduced object takes
~1 KB, and the watch's events are read into the same refs (``pod_ref``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from webhook.kube.podstatus import pull_failure_view


class PodRef(NamedTuple):
    """A pod by namespace and name, and the pull secrets it lists (sorted, interned)."""

    namespace: str
    name: str
    secrets: tuple[str, ...]


def pod_ref(pod: Mapping[str, Any]) -> PodRef | None:
    """The pod's ref (no secrets: an empty tuple); None without a namespace and name."""
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    spec = pod.get("spec")
    refs = spec.get("imagePullSecrets") if isinstance(spec, Mapping) else None
    secrets = (
        tuple(
            sorted(
                {
                    sys.intern(r["name"])
                    for r in refs
                    if isinstance(r, Mapping) and isinstance(r.get("name"), str)
                }
            )
        )
        if isinstance(refs, list)
        else ()
    )
    return PodRef(sys.intern(namespace), name, secrets)


class ListedPods:
    """A list of pods as kept: the refs of those that list pull secrets, and the pods that
    fail to pull, reduced for self-healing (they are few). Equal secret tuples are shared.
    A pod that does neither is not kept."""

    def __init__(self) -> None:
        self.refs: list[PodRef] = []
        self.failing: list[dict[str, Any]] = []
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}

    @classmethod
    def of(cls, pods: Iterable[Mapping[str, Any]]) -> ListedPods:
        listed = cls()
        for pod in pods:
            listed.add(pod)
        return listed

    def add(self, pod: Mapping[str, Any]) -> None:
        failing = pull_failure_view(pod)
        if failing is not None:
            self.failing.append(failing)
            return
        ref = pod_ref(pod)
        if ref is not None and ref.secrets:
            secrets = self._shared.setdefault(ref.secrets, ref.secrets)
            self.refs.append(ref._replace(secrets=secrets))

    def all_refs(self) -> Iterator[PodRef]:
        """The refs of every pod kept, the failing ones' included."""
        yield from self.refs
        for pod in self.failing:
            ref = pod_ref(pod)
            if ref is not None:
                yield ref

    def __len__(self) -> int:
        return len(self.refs) + len(self.failing)
