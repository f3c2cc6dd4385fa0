"""Which namespaces the webhook may write pull secrets in, from a watch of Namespaces.

The API server only calls the webhook for namespaces its namespaceSelector
matches, but anything that can reach the webhook's port can send it a review
for any namespace. So before anything is minted or written, the webhook checks
itself that the namespace exists, carries the opt-in label, is not being
deleted and is not excluded. The check is a set lookup: the sets are filled by a
watch of Namespaces (names and that one label are all that is kept).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from webhook.kube.objects import INJECT_LABEL, INJECT_VALUE

NamespaceState = Literal["gone", "opted-out", "opted-in"]
"""gone: the namespace does not exist (its Secrets went with it); opted-out: nothing may
be written there (not labelled, excluded, or terminating); opted-in: pull secrets are."""


class NamespaceIndex:
    """Which namespaces exist, and which of them may be given pull secrets."""

    def __init__(
        self,
        excluded: Iterable[str] | Callable[[], frozenset[str]],
        *,
        on_deleted: Callable[[str], None] = lambda name: None,
    ) -> None:
        """``excluded`` is asked at each lookup when it is a callable (the config in use:
        a reload that excludes a namespace applies to the next admission). ``on_deleted``
        hears the name of each namespace that goes away."""
        if callable(excluded):
            self._excluded = excluded
        else:
            fixed = frozenset(excluded)
            self._excluded = lambda: fixed
        self._on_deleted = on_deleted
        self._existing: set[str] = set()
        self._opted_in: set[str] = set()
        """Labelled and not terminating; the exclusions are applied at lookup."""

    @property
    def excluded(self) -> frozenset[str]:
        return self._excluded()

    def refusal(self, namespace: str) -> str | None:
        """None when pull secrets may be written in ``namespace``; otherwise why not."""
        excluded = namespace in self._excluded()
        if namespace in self._opted_in and not excluded:
            return None
        if excluded:
            return "namespace is excluded"
        if namespace not in self._existing:
            return "namespace does not exist"
        return "namespace has not opted in (or is being deleted)"

    def state(self, namespace: str) -> NamespaceState:
        if namespace not in self._existing:
            return "gone"
        return "opted-in" if namespace in self else "opted-out"

    def __contains__(self, namespace: object) -> bool:
        return namespace in self._opted_in and namespace not in self._excluded()

    def __len__(self) -> int:
        return len(self._opted_in - self._excluded())

    # -- the informer's handler --------------------------------------------------

    def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self._existing = {n for n in map(_name, objects) if n}
        self._opted_in = {n for n in map(self._eligible, objects) if n}

    def apply(self, event: str, obj: Mapping[str, Any]) -> None:
        name = _name(obj)
        if not name:
            return
        if event == "DELETED":
            self._existing.discard(name)
            self._opted_in.discard(name)
            self._on_deleted(name)
            return
        self._existing.add(name)
        if self._eligible(obj):
            self._opted_in.add(name)
        else:
            self._opted_in.discard(name)

    def _eligible(self, obj: Mapping[str, Any]) -> str:
        name = _name(obj)
        meta = obj.get("metadata")
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        status = obj.get("status")
        terminating = isinstance(status, Mapping) and status.get("phase") == "Terminating"
        if (
            not name
            or terminating
            or not isinstance(labels, Mapping)
            or labels.get(INJECT_LABEL) != INJECT_VALUE
        ):
            return ""
        return name


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    # Interned: the same string as the other watches' copies of the namespace's name.
    return sys.intern(name) if isinstance(name, str) else ""
