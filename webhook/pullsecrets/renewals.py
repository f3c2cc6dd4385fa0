"""When each managed secret is renewed, and how fast the leader renews them.

Secrets minted together (a storm of new namespaces, one credential serving them all)
would otherwise all fall due at the same instant, ``refresh.fraction`` of their
credential's lifetime later, and the leader would rewrite every one of them at once:
two API writes each (the Secret, then its record), thousands in a burst that the API
server's other clients queue behind. Two things prevent that:

- ``renew_at``: each secret's renewal time is moved by its own share of the refresh
  window, so renewals are spread across it whatever the mint times were;
- ``Pace``: the leader's renewals go through one token bucket, soonest expiry first, so
  its write rate stays under a bound even when many fall due together (a restart after
  an outage, a refresh window shorter than the spread).

Pure (the clock and the sleep are given).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

from webhook.credentials.base import EXPIRY_MARGIN, Credential

#: The share of the refresh window (from ``refresh.fraction`` of the lifetime to the
#: expiry margin) renewals are spread over. The other half is headroom: a renewal that
#: fails, or waits behind the write bound, still has at least half the window left
#: before its credential stops working. With the default fraction 0.5, a 3-hour ACR
#: token's secrets renew between 1 h 30 and 2 h 15 after it was issued, a 12-hour ECR
#: token's between 6 h and 9 h.
JITTER_SHARE = 0.5

#: The leader renews at most this many secrets per second (each renewal is two writes:
#: the Secret, then its record; so 20 writes/s). Why this number: the webhook's
#: requests are a ServiceAccount's, which API Priority and Fairness puts at the
#: ``workload-low`` level, sharing the API server's default 600 seats
#: (``--max-requests-inflight`` 400 + ``--max-mutating-requests-inflight`` 200) with
#: every controller and user. A write takes 5-20 ms on a healthy API server, so 20
#: writes/s holds under half a seat on average: well under 1% of the 200 mutating seats,
#: and about the write rate of one busy controller (client-go's default client QPS is
#: 5, burst 10; kube-controller-manager runs at 20 QPS). It renews 30,000 secrets in
#: 50 minutes, inside the 45-minute-plus spread of a 3-hour token's window with its
#: headroom; what does not fit is caught by ``URGENT_SECONDS``.
RENEWALS_PER_SECOND = 10.0

#: Renewals the bucket lets through back to back after a quiet spell: one second's worth.
RENEWAL_BURST = 10

#: A secret whose credential stops being usable (its expiry less EXPIRY_MARGIN) within
#: this many seconds is renewed without waiting for the bucket: the bound never pushes
#: a renewal past expiry. Five minutes covers several refresher passes and an exchange's
#: retries (``credentials.cache.EXCHANGE_BUDGET``, 30 s).
URGENT_SECONDS = 300.0


def spread(namespace: str, name: str) -> float:
    """A secret's place in the refresh window, in [0, 1): the first 64 bits of the
    SHA-256 of ``namespace/name``, so uniform over many secrets.

    Deterministic rather than drawn at mint time: the secret keeps its place renewal
    after renewal (the waves never re-form by chance), two replicas writing the same
    record compute the same time, and a restart reshuffles nothing."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def renew_at(credential: Credential, fraction: float, namespace: str, name: str) -> float:
    """When the Secret ``namespace/name`` holding ``credential`` is due: ``fraction`` of
    the credential's lifetime, plus its own share of JITTER_SHARE of what is left before
    the expiry margin."""
    start = credential.refresh_at(fraction)
    window = max(credential.expires_at - EXPIRY_MARGIN - start, 0.0)
    return start + JITTER_SHARE * window * spread(namespace, name)


def urgent(expires_at: float, now: float) -> bool:
    """Would waiting for the bucket risk this credential's usable end?"""
    return expires_at - EXPIRY_MARGIN - now <= URGENT_SECONDS


class Pace:
    """A token bucket: ``take`` waits until a renewal may go (``rate`` per second after
    ``burst`` at once); ``spend`` counts one that went without waiting (urgent)."""

    def __init__(
        self,
        rate: float = RENEWALS_PER_SECOND,
        burst: int = RENEWAL_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(burst)
        self._then = clock()

    def _fill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._then) * self.rate)
        self._then = now

    async def take(self) -> None:
        self._fill()
        if self._tokens < 1.0:
            await self.sleep((1.0 - self._tokens) / self.rate)
            self._fill()
            # That sleep was for this token: a clock coarser than the wait (a float
            # far from zero) must not make it wait again.
            self._tokens = max(self._tokens, 1.0)
        self._tokens -= 1.0

    def spend(self) -> None:
        """An urgent renewal went without waiting: it uses a token if one is there, but
        leaves no debt (a debt would hold back the renewals behind it, whose credentials
        expire soonest after it, for as long as the urgent ones took)."""
        self._fill()
        self._tokens = max(self._tokens - 1.0, 0.0)
