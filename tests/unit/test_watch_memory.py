"""What the watches keep: LISTs a page at a time, each item reduced to what its handler
reads; pod references counted per secret with as little kept per pod as possible."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import pytest

from webhook.kube import informer as informer_module
from webhook.kube.base import LIST_PAGE
from webhook.kube.calls import Kube
from webhook.kube.client import ApiClient
from webhook.kube.informer import Informer
from webhook.kube.objects import INJECT_LABEL
from webhook.kube.pods import ListedPods, PodRef
from webhook.kube.records import _marker_view
from webhook.pullsecrets.namespaces import NamespaceIndex
from webhook.pullsecrets.records import Markers, marker_object
from webhook.telemetry import memory
from webhook.upkeep.references import References


class PagedNamespaces:
    """The API server's namespace list as it pages it: ``limit`` items, then a token."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.asked: list[dict[str, Any]] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        assert (method, path) == ("GET", "/api/v1/namespaces")
        params = kwargs["params"]
        self.asked.append(params)
        start = int(params.get("continue") or 0)
        end = start + params["limit"]
        items = [
            {
                "metadata": {
                    "name": n,
                    "uid": "u",
                    "labels": {INJECT_LABEL: "enabled", "team": "x"},
                    "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}],
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for n in self.names[start:end]
        ]
        meta = {
            "resourceVersion": "42",
            **({"continue": str(end)} if end < len(self.names) else {}),
        }
        return {"items": items, "metadata": meta}


async def test_a_list_is_read_a_page_at_a_time_and_keeps_only_what_the_handler_reads() -> None:
    names = [f"ns-{i}" for i in range(LIST_PAGE * 2 + 3)]
    api = PagedNamespaces(names)
    calls: list[str] = []
    kube = Kube(cast(ApiClient, api), on_request=calls.append)
    items, version = await kube.list_namespaces()
    assert version == "42"
    assert [a.get("continue") for a in api.asked] == [None, str(LIST_PAGE), str(2 * LIST_PAGE)]
    assert all(a["limit"] == LIST_PAGE for a in api.asked)
    assert calls == ["list_namespace"] * 3
    assert [i["metadata"]["name"] for i in items] == names
    assert items[0] == {
        "metadata": {"name": "ns-0", "labels": {INJECT_LABEL: "enabled"}},
        "status": {"phase": "Active"},
    }
    index = NamespaceIndex([])
    index.replace_all(items)
    assert "ns-0" in index and len(index) == len(names)


def test_a_marker_keeps_its_owner_through_the_reduction() -> None:
    marker = marker_object("team-a", "psw-a", "uid-1")
    marker["metadata"]["managedFields"] = [{"manager": "webhook"}]
    markers = Markers()
    markers.replace_all([_marker_view(marker)])
    assert markers._owner == {("team-a", "psw-a"): "uid-1"}


def test_references_of_pods_with_several_secrets_are_counted_and_forgotten() -> None:
    refs = References("psw")
    both = {
        "metadata": {"namespace": "team-a", "name": "web-1"},
        "spec": {"imagePullSecrets": [{"name": "psw-b"}, {"name": "psw-a"}, {"name": "psw-a"}]},
    }
    one = {
        "metadata": {"namespace": "team-a", "name": "web-2"},
        "spec": {"imagePullSecrets": [{"name": "psw-a"}]},
    }
    refs.replace_all(ListedPods.of([both, one]))
    assert len(refs) == 2
    assert refs.referenced("team-a", "psw-a") and refs.referenced("team-a", "psw-b")
    refs.apply("DELETED", both)
    assert refs.referenced("team-a", "psw-a") and not refs.referenced("team-a", "psw-b")
    refs.apply("DELETED", one)
    assert not refs.referenced("team-a", "psw-a") and len(refs) == 0
    assert refs._pods == {}  # nothing left behind for a namespace without such pods


def test_listed_pods_are_kept_as_refs_that_garbage_collection_reads_as_they_are() -> None:
    pods = ListedPods()
    pods.add(
        {
            "metadata": {"namespace": "team-a", "name": "web-1", "uid": "u"},
            "spec": {"imagePullSecrets": [{"name": "psw-b"}, {"name": "psw-a"}]},
        }
    )
    pods.add({"metadata": {"namespace": "team-a", "name": "plain"}, "spec": {}})
    pods.add(
        {
            "metadata": {"namespace": "team-a", "name": "web-2"},
            "spec": {"imagePullSecrets": [{"name": "psw-a"}, {"name": "psw-b"}]},
        }
    )
    assert len(pods) == 2  # a pod without pull secrets is not kept
    assert pods.refs[0] == PodRef("team-a", "web-1", ("psw-a", "psw-b"))
    assert pods.refs[0].secrets is pods.refs[1].secrets  # equal name lists shared
    refs = References("psw")
    refs.replace_all(pods)
    assert len(refs) == 2 and refs.referenced("team-a", "psw-b")
    # Read as they are: the listed tuple itself, not a copy rebuilt from a pod object.
    assert refs._pods["team-a"]["web-1"] is pods.refs[0].secrets


class Listed(list[dict[str, Any]]):
    """A list that can be watched for its end (a plain list takes no weak reference)."""


async def test_an_informer_does_not_hold_its_list_while_it_watches() -> None:
    listed = Listed({"metadata": {"name": f"ns-{i}"}} for i in range(3))
    gone = weakref.ref(listed)
    kept: list[str] = []
    watching = asyncio.Event()

    class Handler:
        def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
            kept[:] = [o["metadata"]["name"] for o in objects]

        def apply(self, event: str, obj: Mapping[str, Any]) -> None:
            raise AssertionError("no event is sent")

    async def lister() -> tuple[Sequence[Mapping[str, Any]], str]:
        nonlocal listed
        handed, listed = listed, Listed()
        return handed, "1"

    async def watcher(version: str) -> AsyncIterator[dict[str, Any]]:
        watching.set()
        await asyncio.Event().wait()  # a watch with nothing to say, for as long as it runs
        yield {}

    informer = Informer("namespaces", lister, watcher, Handler())
    informer.start()
    try:
        await asyncio.wait_for(watching.wait(), 5)
        gc.collect()
        assert kept == ["ns-0", "ns-1", "ns-2"]
        assert gone() is None, "the listed objects are still held while the watch runs"
    finally:
        await informer.close()


async def test_an_informer_gives_what_its_list_cost_back_to_the_system_once_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []
    watching = asyncio.Event()

    class Handler:
        def replace_all(self, objects: Sequence[Mapping[str, Any]]) -> None:
            order.append("handled")

        def apply(self, event: str, obj: Mapping[str, Any]) -> None:
            raise AssertionError("no event is sent")

    async def lister() -> tuple[Sequence[Mapping[str, Any]], str]:
        return [{"metadata": {"name": "ns-0"}}], "1"

    async def watcher(version: str) -> AsyncIterator[dict[str, Any]]:
        order.append("watching")
        watching.set()
        await asyncio.Event().wait()
        yield {}

    monkeypatch.setattr(informer_module, "release_freed", lambda: order.append("released"))
    informer = Informer("namespaces", lister, watcher, Handler())
    informer.start()
    try:
        await asyncio.wait_for(watching.wait(), 5)
        assert order == ["handled", "released", "watching"]
    finally:
        await informer.close()


def test_freed_memory_is_given_back_where_glibc_can() -> None:
    # This machine's libc is glibc: malloc_trim is found and answers (1: memory was
    # released, 0: there was none to release).
    assert memory.MALLOC_TRIM is not None
    assert memory.MALLOC_TRIM(0) in (0, 1)
    memory.release_freed()
