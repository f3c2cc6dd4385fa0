"""What every Kubernetes call of the webhook goes through (``webhook.kube.calls.Kube``
is made of the calls by resource: ``secrets``, ``records``, ``accounts``, ``podcalls``,
``events``, ``leases``), on plain JSON dicts (``webhook.kube.client``).

Failures raise the ``webhook.kube.errors.ApiError`` its HTTP status names
(``NotFoundError``, ``ConflictError``, ...; ``UnreachableError``: no answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from typing_extensions import Unpack

from webhook.kube.client import (
    CORE_API,
    TRANSPORT_ERRORS,
    ApiClient,
    Payload,
    raise_for_status,
    transport_error,
)
from webhook.kube.errors import ApiError, ForbiddenError, NotFoundError, UnauthorizedError
from webhook.kube.health import ApiHealth

#: A watch is re-opened at least this often (the API server ends it at a random time
#: between its --min-request-timeout and twice that anyway; 300 s keeps it explicit).
WATCH_SECONDS = 300
#: How long past WATCH_SECONDS a watch that went silent is given before it is dropped.
WATCH_GRACE_SECONDS = 30


#: Items per page of a list. client-go's reflector pages with 500; a fifth of that keeps
#: what a (re)list of 100,000 pods holds at once to a few MB (full pods parsed from JSON,
#: four lists at a time), at the price of more, cheap, requests (the API server serves
#: them from its watch cache) when a replica starts or a watch falls too far behind.
LIST_PAGE = 100

CORE = CORE_API


class KubeBase:
    """The requests, lists and watches the calls are made of; counted and told to ``health``."""

    def __init__(
        self, api: ApiClient, *, on_request: Callable[[str], None] = lambda call: None
    ) -> None:
        """``on_request`` hears the name of every call sent (``watch <list call>`` for a
        watch), so the load the webhook puts on the API server can be measured.
        ``health`` hears whether each call reached the API server."""
        self.api = api
        self._on_request = on_request
        self.health = ApiHealth(self.ready)

    async def close(self) -> None:
        await self.health.close()
        await self.api.close()

    async def _call(
        self, name: str, method: str, path: str, **payload: Unpack[Payload]
    ) -> dict[str, Any]:
        self._on_request(name)
        try:
            doc = await self.api.call(method, path, **payload)
        except ApiError as e:
            self._failed(e)
            raise
        self.health.succeeded()
        return doc

    def _failed(self, error: ApiError) -> None:
        if error.unavailable:
            self.health.failed(error.status)
        # Other failures (403, 404, 409...) are not taken as its return: an API server
        # still starting answers some requests before it is ready for them.

    async def ready(self) -> bool:
        """Does the API server say it is ready (``GET /readyz``)? Not counted as a
        call: it only runs while the API server is unavailable (``ApiHealth``). Where
        the webhook may not read /readyz (a 401 or 403), any such answer will do."""
        try:
            raise_for_status(
                await self.api.request("GET", "/readyz", accept="text/plain", seconds=2)
            )
        except (UnauthorizedError, ForbiddenError):
            return True
        except ApiError:
            return False
        return True

    async def _optional(
        self, name: str, method: str, path: str, **payload: Unpack[Payload]
    ) -> dict[str, Any] | None:
        try:
            return await self._call(name, method, path, **payload)
        except NotFoundError:
            return None

    async def _pages(
        self,
        name: str,
        path: str,
        *,
        each: Callable[[Mapping[str, Any]], None],
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """Hand every item of a LIST to ``each``, a page of LIST_PAGE items at a time (so
        no response holds them all); returns its resourceVersion (where a watch starts)."""
        token = ""
        while True:
            doc = await self._call(
                name,
                "GET",
                path,
                params={**(params or {}), "limit": LIST_PAGE, "continue": token or None},
            )
            for item in doc.get("items") or []:
                each(item)
            meta = doc.get("metadata") or {}
            token = str(meta.get("continue") or "")
            if not token:
                return str(meta.get("resourceVersion", ""))

    async def _list(
        self,
        name: str,
        path: str,
        *,
        keep: Callable[[Mapping[str, Any]], dict[str, Any]],
        params: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """A LIST's items, each reduced by ``keep``, and its resourceVersion."""
        items: list[dict[str, Any]] = []
        version = await self._pages(
            name, path, params=params, each=lambda item: items.append(keep(item))
        )
        return items, version

    async def _watch(
        self,
        name: str,
        path: str,
        *,
        resource_version: str,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({type, object}) from ``resource_version`` until the server ends
        the watch; every failure is an ApiError (UnreachableError when the stream broke)."""
        self._on_request(f"watch {name}")
        query = {
            **(params or {}),
            "watch": True,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": WATCH_SECONDS,
        }
        try:
            async with self.api.stream(
                path, params=query, seconds=WATCH_SECONDS + WATCH_GRACE_SECONDS
            ) as resp:
                self.health.succeeded()
                async for line in resp.content:
                    if line.strip():
                        yield orjson.loads(line)
        except ApiError as e:
            self._failed(e)
            raise
        except (*TRANSPORT_ERRORS, ValueError) as e:
            error = transport_error(e)
            self._failed(error)
            raise error from e

    # -- pull secrets: written, never read ---------------------------------------
    #
    # The webhook's identity has no get, list or watch on Secrets. Every write after
    # the first carries the UID the API server gave the Secret at creation: a Secret
    # deleted since answers 404, one replaced by somebody else 409 (a UID
    # precondition), so the webhook never overwrites what it did not create.
