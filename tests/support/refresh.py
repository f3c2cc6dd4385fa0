"""Where a cached credential's refresh point lies, seen only through ``CredentialCache.get``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from webhook.admission.needs import PullNeed
from webhook.credentials.cache import CredentialCache


class SettableClock(Protocol):
    now: float


async def assert_refreshes_at(
    cache: CredentialCache,
    need: PullNeed,
    namespace: str,
    clock: SettableClock,
    exchanges: Callable[[], int],
    at: float,
) -> None:
    """The credential cached for ``need`` is served as is up to the last instant before
    ``at`` and exchanged at ``at`` exactly: the refresh point is ``at``, to the float.
    ``exchanges`` counts what the cache asked of its source (a provider's fetches, the
    emulator's calls). Leaves the clock at ``at`` and the cache holding the new credential."""
    before = exchanges()
    clock.now = math.nextafter(at, -math.inf)
    await cache.get(need, namespace)
    assert exchanges() == before, f"exchanged before the refresh point {at}"
    clock.now = at
    await cache.get(need, namespace)
    assert exchanges() == before + 1, f"no exchange at the refresh point {at}"
