"""Token buckets per namespace: what a caller can make the webhook do in one namespace, per
minute, whatever names it invents.

Anything that reaches the webhook's port can send reviews (SECURITY.md). Deduplicating by
the names a review carries (a secret's, a ServiceAccount's) bounds nothing: a forger
invents a fresh name per review. A bucket per namespace does: at most ``burst`` at once,
then ``per_minute`` a minute, whatever the names. Pure (the clock is given).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class NamespaceRate:
    """``take(namespace)`` is True while the namespace's bucket has a token left."""

    def __init__(
        self,
        per_minute: float,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """namespace → (tokens, when last counted)."""

    def take(self, namespace: str) -> bool:
        now = self.clock()
        tokens, then = self._buckets.get(namespace, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[namespace] = (tokens, now)
            return False
        self._buckets[namespace] = (tokens - 1.0, now)
        return True

    def forget(self, namespace: str) -> None:
        """The namespace is gone (only namespaces that opted in ever get a bucket)."""
        self._buckets.pop(namespace, None)

    def __len__(self) -> int:
        return len(self._buckets)
