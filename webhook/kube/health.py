"""Is the API server reachable? Seen from the webhook's own calls, so that work waiting on
it resumes within about a second of its return rather than on a fixed back-off.

Every call reports its result: a transport failure (status 0) or a 502/503/504 marks the
API server unavailable; any answer clears it. While it is unavailable, one probe per
process (``GET /readyz``, which every authenticated identity may read) runs every
``PROBE_FIRST_SECONDS`` backing off to ``PROBE_MAX_SECONDS``, jittered, so the return is
noticed even when nothing else is calling. Watches waiting to list again and background
retries of pull secrets wait on ``until_recovered`` instead of a bare sleep.

Other failures (403, 404, 409, a registry refusing a credential, 500 for one request)
say nothing about reachability and keep their own schedules.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from webhook.kube.errors import UNAVAILABLE

log = logging.getLogger(__name__)

#: First and longest pause between probes while the API server is unavailable: one
#: cheap request per replica and second at most, and its return noticed within ~1 s.
PROBE_FIRST_SECONDS = 0.5
PROBE_MAX_SECONDS = 1.0
#: Each pause is scaled by a random factor in [1 - JITTER, 1 + JITTER], so replicas
#: restarted together do not probe (or resume) in lockstep.
JITTER = 0.2
#: For this long after it answers again, an API server is still settling: one just
#: restarted says ready a moment before its authorizer has caught up, and refuses (403)
#: what it will allow a second later. Failures then are retried on the API's cadence.
SETTLE_SECONDS = 10.0

Probe = Callable[[], Awaitable[bool]]


def unavailable(status: int) -> bool:
    return status in UNAVAILABLE


def jittered(seconds: float, rng: Callable[[], float] = random.random) -> float:
    return seconds * (1 - JITTER + 2 * JITTER * rng())


class ApiHealth:
    """Whether the API server answers, with a wake-up for whoever waits for its return."""

    def __init__(self, probe: Probe | None = None) -> None:
        """``probe`` answers True when the API server is ready again; without one,
        only the next successful call clears the unavailable state."""
        self.probe = probe
        self._down_since: float | None = None
        self._up_since = -SETTLE_SECONDS
        self._recovered = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self.outages = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    @property
    def just_back(self) -> bool:
        """Answering again, for less than SETTLE_SECONDS."""
        return not self.down and time.monotonic() - self._up_since < SETTLE_SECONDS

    @property
    def settling(self) -> bool:
        """Unavailable, or just back."""
        return self.down or self.just_back

    def failed(self, status: int) -> None:
        """A call failed with ``status`` (0: no HTTP answer)."""
        if not unavailable(status) or self.down:
            return
        self._down_since = time.monotonic()
        self._recovered = asyncio.Event()
        self.outages += 1
        log.warning("API server unavailable (%s); probing until it answers", status or "no answer")
        if self.probe is not None and (self._prober is None or self._prober.done()):
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    def succeeded(self) -> None:
        """A call got an answer from the API server."""
        if self._down_since is None:
            return
        log.info(
            "API server reachable again after %.1fs; resuming waiting work",
            time.monotonic() - self._down_since,
        )
        self._down_since = None
        self._up_since = time.monotonic()
        self._recovered.set()

    async def until_recovered(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the API server, unavailable now, comes
        back first. True when woken by its return."""
        if not self.down:
            await asyncio.sleep(seconds)
            return False
        event = self._recovered
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True

    async def _probe_until_up(self) -> None:
        pause = PROBE_FIRST_SECONDS
        while self.down:
            await asyncio.sleep(jittered(pause))
            pause = min(pause * 2, PROBE_MAX_SECONDS)
            assert self.probe is not None
            try:
                ready = await self.probe()
            except Exception as e:  # a probe failure only means: not back yet
                log.debug("API server probe failed: %s", e)
                continue
            if ready:
                self.succeeded()

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
