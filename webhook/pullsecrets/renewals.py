"""When each managed secret is renewed, and how fast the leader renews them.

Secrets minted together (a storm of new namespaces, one credential serving them all)
would otherwise all fall due at the same instant, ``refresh.fraction`` of their
credential's lifetime later, and the leader would rewrite every one of them at once:
two API writes each (the Secret, then its record), thousands in a burst that the API
server's other clients queue behind. Two things prevent that:

- ``renew_at``: each secret's renewal time is moved by its own share of the refresh
  window, so renewals are spread across it whatever the mint times were;
- ``Pace`` and ``DueQueue``: the leader renews each secret when it falls due, one at
  a time through a token bucket that lets one renewal through every ``1 / rate``
  seconds (no batches: a pass schedules what falls due before the next one, and the
  renewals go out at their own times), soonest expiry first when several wait, so its
  write rate stays under a bound even when many fall due together (a restart after an
  outage, a refresh window shorter than the spread).

Pure (the clock and the sleep are given).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
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

#: The leader renews at most this many secrets per second: each renewal is two writes
#: (the Secret, then its record), so 50 writes/s. Why this number:
#:
#: - What 30,000 secrets need. A shared credential is renewed every ``fraction`` of its
#:   lifetime, and each of its secrets once per renewal. The shortest tokens the webhook
#:   handles live 1 hour (Artifact Registry access tokens, the ``generic`` kind's nominal
#:   lifetime; an ACR scoped token lives about 75 minutes): at the default fraction 0.5,
#:   30,000 of them need 16.7 renewals/s in steady state. Minted in one storm, they all
#:   fall due from 30 minutes on (spread over the next 14.5) and must all be renewed
#:   before the last 5 minutes (``URGENT_SECONDS``) of their usable 59: 24 minutes for
#:   30,000, at least 20.8 a second. At 25 a second they take 20 minutes, with 4 to
#:   spare; at 20 the last 1,200 would be left to the override, written unpaced.
#:   (3-hour ACR tokens need 5.6 a second in steady state, 12-hour ECR tokens 1.4: the
#:   bound only ever paces their first waves.)
#: - What a small control plane can spare. The webhook's requests are a
#:   ServiceAccount's, which API Priority and Fairness puts at the ``workload-low``
#:   level, sharing the API server's default 600 seats (``--max-requests-inflight`` 400
#:   + ``--max-mutating-requests-inflight`` 200) with every controller and user. A
#:   renewal's write takes 5-20 ms, so 50 writes/s hold one seat on average, and with
#:   the burst of one below never more than two at once. It is kube-scheduler's default
#:   client rate (50 QPS), and a sixth or less of what a 2-core control plane writes
#:   when it has to (170-390 pods created a second on the benchmark machine,
#:   bench/README.md). ``bench/renewals.py`` measures what it costs other clients' reads
#:   there, against a plain client writing as fast.
RENEWALS_PER_SECOND = 25.0

#: Renewals the bucket lets through back to back after a quiet spell: one. Renewals
#: go out one every ``1 / RENEWALS_PER_SECOND`` seconds even when hundreds are due, so
#: the API server never sees a batch of them (a burst of 10 made the other clients'
#: reads queue behind 20 writes at once).
RENEWAL_BURST = 1

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


class DueQueue:
    """The renewals the leader has scheduled, by key (``namespace``, ``name``): each
    waits for its own due time, then, among those due, the soonest to expire goes first.

    A pass of the refresher schedules what falls due before the next pass; the leader's
    renewer takes them one at a time, so renewals go out when each falls due (spread as
    ``renew_at`` placed them), not in a batch at the start of each pass."""

    def __init__(self) -> None:
        self._waiting: list[tuple[float, float, tuple[str, str]]] = []  # (due, expiry, key)
        self._due: list[tuple[float, tuple[str, str]]] = []  # (expiry, key)
        self._queued: dict[tuple[str, str], float] = {}  # key -> due

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._queued

    def schedule(self, key: tuple[str, str], due: float, expires_at: float) -> None:
        """Renew ``key`` at ``due``. A key already queued keeps its place (a later pass
        sees the same record until it is renewed)."""
        if key in self._queued:
            return
        self._queued[key] = due
        heapq.heappush(self._waiting, (due, expires_at, key))

    def next_due(self) -> float | None:
        """When the next renewal falls due (now or earlier if one is due already)."""
        if self._due:
            return float("-inf")
        return self._waiting[0][0] if self._waiting else None

    def pop(self, now: float) -> tuple[str, str] | None:
        """The due key that expires soonest, or None when none is due at ``now``."""
        while self._waiting and self._waiting[0][0] <= now:
            _, expires_at, key = heapq.heappop(self._waiting)
            heapq.heappush(self._due, (expires_at, key))
        if not self._due:
            return None
        _, key = heapq.heappop(self._due)
        del self._queued[key]
        return key

    def clear(self) -> None:
        self._waiting.clear()
        self._due.clear()
        self._queued.clear()
