"""List, then watch, for as long as the process lives: a local copy of some objects.

The same protocol client-go's reflector follows: LIST gives the objects and a
resourceVersion; WATCH from there streams ADDED/MODIFIED/DELETED events (and
BOOKMARKs that only move the version on); when the watch ends it is reopened from
the last version seen, and when that version is too old (410 Gone) or anything
fails, the loop lists again. The handler sees the whole list, then every event.

While the API server is unavailable, the back-off before listing again ends early when
it answers again (``ApiHealth``): the copy converges within about a second of its
return, whatever the back-off had grown to.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from webhook.kube.errors import ApiError, GoneError
from webhook.kube.health import ApiHealth, jittered
from webhook.telemetry.memory import release_freed

log = logging.getLogger(__name__)

#: Back-off after a failed list or watch, before listing again. Short, so that the
#: local copy converges within seconds of an API server coming back.
RETRY_SECONDS = 1.0
#: Longest back-off while the API server stays unreachable.
RETRY_MAX_SECONDS = 8.0
#: Woken by the API server's return, each watch lists again within this many seconds
#: (spread at random: every replica's watches do not list in the same instant).
RECOVERY_SPREAD_SECONDS = 0.5


Objects = Sequence[Mapping[str, Any]]
"""What most lists hand their handler: the objects, each reduced to what it reads."""
Listed = TypeVar("Listed")
Taken = TypeVar("Taken", contravariant=True)


class Handler(Protocol[Taken]):
    """Takes a whole list (``replace_all``), then each watch event (``apply``)."""

    def replace_all(self, listed: Taken) -> None: ...

    def apply(self, event: str, obj: Mapping[str, Any]) -> None: ...


Watcher = Callable[[str], AsyncIterator[dict[str, Any]]]


class Informer(Generic[Listed]):
    """Keeps ``handler`` in step with what ``lister``/``watcher`` return; ``Listed`` is
    what the list hands the handler (``Objects``, or a kept form such as
    ``webhook.kube.pods.ListedPods``)."""

    def __init__(
        self,
        what: str,
        lister: Callable[[], Awaitable[tuple[Listed, str]]],
        watcher: Watcher,
        handler: Handler[Listed],
        *,
        on_change: Callable[[], None] = lambda: None,
        health: ApiHealth | None = None,
    ) -> None:
        self.what = what
        self._health = health
        self._list = lister
        self._watch = watcher
        self._handler = handler
        self._on_change = on_change
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer {self.what}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        delay = RETRY_SECONDS
        while True:
            try:
                items, version = await self._list()
                self._handler.replace_all(items)
                # The handler kept what it needs. Not held while the watch runs (for
                # years): a listed copy of every pod would double what the watches keep.
                del items
                # Nor what the pages cost to read (their bodies, the parsed objects):
                # freed, but resident until given back.
                release_freed()
                self._on_change()
                self.synced.set()
                delay = RETRY_SECONDS
                while True:
                    version = await self._follow(version)
            except asyncio.CancelledError:
                raise
            except GoneError:
                pass  # our version is too old; list again at once
            except ApiError as e:
                log.warning("watch of %s failed, listing again: %s", self.what, e)
                if self._health is not None and self._health.just_back:
                    # An API server just restarted may refuse (403) a moment longer
                    # than it says it is ready: the outage's back-off is over.
                    delay = RETRY_SECONDS
                woken = await self._back_off(delay)
                delay = RETRY_SECONDS if woken else min(delay * 2, RETRY_MAX_SECONDS)

    async def _back_off(self, delay: float) -> bool:
        """Sleep ``delay``, or until the API server answers again (True)."""
        if self._health is None:
            await asyncio.sleep(delay)
            return False
        if not await self._health.until_recovered(jittered(delay)):
            return False
        await asyncio.sleep(random.uniform(0, RECOVERY_SPREAD_SECONDS))
        return True

    async def _follow(self, version: str) -> str:
        async for event in self._watch(version):
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, Mapping):
                continue
            if kind == "ERROR":
                raise ApiError(int(obj.get("code") or 0), str(obj.get("reason", "")), "watch")
            meta = obj.get("metadata")
            if isinstance(meta, Mapping) and meta.get("resourceVersion"):
                version = str(meta["resourceVersion"])
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._handler.apply(str(kind), obj)
                self._on_change()
        return version
