"""The webhook's own view of which namespaces opted in, and the list+watch loop behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from devenv.support.hotpath import opted_in
from webhook.kube.informer import Informer
from webhook.kube.objects import KubeAPIError
from webhook.pullsecrets.namespaces import NamespaceIndex


def namespace(name: str, *, label: str | None = None, phase: str = "Active") -> dict[str, Any]:
    labels = {"pull-secret-webhook/inject": label} if label else {}
    return {"metadata": {"name": name, "labels": labels}, "status": {"phase": phase}}


def test_only_labelled_existing_namespaces_that_are_not_excluded_are_served() -> None:
    index = NamespaceIndex({"kube-system", "pull-secret-webhook"})
    index.replace_all(
        [
            *opted_in("team-a", "kube-system", "pull-secret-webhook"),
            namespace("team-b"),
            namespace("team-c", label="disabled"),
            namespace("team-d", label="enabled", phase="Terminating"),
        ]
    )
    assert index.refusal("team-a") is None
    assert index.refusal("kube-system") == "namespace is excluded"
    assert index.refusal("pull-secret-webhook") == "namespace is excluded"
    assert "not opted in" in (index.refusal("team-b") or "")
    assert "not opted in" in (index.refusal("team-c") or "")
    assert "not opted in" in (index.refusal("team-d") or "")
    assert index.refusal("nowhere") == "namespace does not exist"


def test_events_follow_labels_added_removed_and_namespaces_deleted() -> None:
    index = NamespaceIndex(set())
    index.replace_all([namespace("team-a")])
    index.apply("MODIFIED", namespace("team-a", label="enabled"))
    assert index.refusal("team-a") is None
    index.apply("MODIFIED", namespace("team-a"))
    assert index.refusal("team-a") is not None and index.state("team-a") == "opted-out"
    index.apply("MODIFIED", namespace("team-a", label="enabled"))
    index.apply("DELETED", namespace("team-a", label="enabled"))
    assert index.refusal("team-a") == "namespace does not exist"


async def test_the_informer_lists_follows_events_and_lists_again_when_its_version_expires() -> None:
    index = NamespaceIndex(set())
    lists: list[str] = []
    watched_from: list[str] = []

    async def lister() -> tuple[list[dict[str, Any]], str]:
        lists.append("list")
        if len(lists) == 1:
            return [namespace("team-a", label="enabled")], "10"
        return [namespace("team-a", label="enabled"), namespace("team-b", label="enabled")], "20"

    async def watcher(version: str) -> AsyncIterator[dict[str, Any]]:
        watched_from.append(version)
        if version == "10":
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}}
            yield {"type": "MODIFIED", "object": namespace("team-a")}
            raise KubeAPIError(410, "Gone", "too old")
        await asyncio.sleep(3600)
        yield {}

    informer = Informer("namespaces", lister, watcher, index)
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 1)
        for _ in range(100):
            if len(lists) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await informer.close()
    assert lists == ["list", "list"]
    assert watched_from == ["10", "20"]
    assert index.refusal("team-b") is None  # from the second list
