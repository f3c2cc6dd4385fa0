"""What an admission tells operators besides its answer: a Warning Event on a pull secret
not made in time, and a log line for a review refused for its namespace. Both are bounded
per namespace, since a forged review may name any secret and any namespace."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from webhook.kube.errors import ApiError
from webhook.pullsecrets.protocols import EventApi
from webhook.pullsecrets.ratelimit import NamespaceRate

log = logging.getLogger(__name__)

#: One Warning Event per (namespace, secret) per minute at most, so a Deployment of
#: hundreds of replicas during an outage does not flood the namespace's events.
EVENT_INTERVAL = 60.0
#: ... and at most this many Events per namespace per minute whatever the names: a
#: forged review names any secret (a fresh ServiceAccount per review, in per-pod mode),
#: so only a bound per namespace bounds the writes. Ten say all an operator needs.
EVENTS_PER_NAMESPACE_MINUTE = 10
#: Refused reviews are logged at most once per namespace per minute (a forged flood
#: must not flood the logs either); the metric counts every one.
REFUSAL_LOG_INTERVAL = 60.0
#: Names remembered for the bounds above before the old ones are forgotten: forged
#: reviews may name endless namespaces and secrets.
REMEMBERED = 10_000


async def post_event(
    kube: EventApi,
    namespace: str,
    involved: Mapping[str, str],
    reason: str,
    message: str,
    *,
    event_type: str = "Warning",
) -> None:
    """Create an Event; a failure is logged, never raised (an Event is a courtesy)."""
    try:
        await kube.create_event(
            namespace, involved=involved, reason=reason, message=message, event_type=event_type
        )
    except ApiError as e:
        where = f"{involved.get('kind', '').lower()} {namespace}/{involved.get('name', '')}"
        log.warning("cannot record Event on %s: %s", where, e)


class AdmissionNotices:
    def __init__(
        self,
        kube: EventApi,
        *,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.spawn = spawn
        self.clock = clock
        self.event_rate = NamespaceRate(EVENTS_PER_NAMESPACE_MINUTE)
        self._last_event: dict[tuple[str, str], float] = {}
        self._last_refusal: dict[str, float] = {}

    def refused(self, namespace: str, reason: str) -> None:
        """A review for ``namespace`` was refused for ``reason`` (nothing written)."""
        now = self.clock()
        if now - self._last_refusal.get(namespace, -REFUSAL_LOG_INTERVAL) < REFUSAL_LOG_INTERVAL:
            return
        if len(self._last_refusal) > REMEMBERED:
            self._last_refusal.clear()
        self._last_refusal[namespace] = now
        log.warning("review for namespace %.63r refused: %s; nothing written", namespace, reason)

    def not_ready(self, namespace: str, name: str, message: str) -> None:
        """The pull secret ``name`` was not ready at admission (a Warning Event on it)."""
        key = (namespace, name)
        now = self.clock()
        if now - self._last_event.get(key, -EVENT_INTERVAL) < EVENT_INTERVAL:
            return
        if not self.event_rate.take(namespace):
            return
        if len(self._last_event) > REMEMBERED:  # names a forger invented: forget the old
            self._last_event = {
                k: v for k, v in self._last_event.items() if now - v < EVENT_INTERVAL
            }
        self._last_event[key] = now
        involved = {"kind": "Secret", "apiVersion": "v1", "namespace": namespace, "name": name}
        text = f"pull secret {name} not ready at admission ({message}); retrying in background"
        self.spawn(post_event(self.kube, namespace, involved, "PullSecretNotReady", text))

    def forget(self, namespace: str) -> None:
        """The namespace went: its bound starts afresh if one of that name comes back."""
        self.event_rate.forget(namespace)
