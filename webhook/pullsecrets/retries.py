"""Secrets an admission could not make, tried again in the background until they exist.

The kubelet retries a failed image pull 10 s later and then backs off; the secret should
be there by its first or second retry. So while a credential is wanting, retries follow
the kubelet's schedule; while the API server is unreachable, they wait for it to answer
again (``ApiHealth``) and start the moment it does, spread out so that a thousand of them
do not arrive in the same instant. At most MAX_RETRYING secrets are retried at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from webhook.admission.decision import NeedStatus
from webhook.admission.needs import PullNeed
from webhook.kube.health import ApiHealth, jittered

log = logging.getLogger(__name__)

#: A secret that could not be made at admission is retried in the background, first
#: after 5 s (the kubelet's first image pull retry comes ~10 s after the failure) and
#: then backing off to every 5 minutes (the kubelet's own maximum pull back-off), for
#: an hour; a new pod needing it starts the cycle again.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
RETRY_GIVE_UP_SECONDS = 3600.0
#: A secret that could not be written because the API server was unavailable is retried
#: as soon as the API server answers again (``ApiHealth``), and otherwise after 1 s
#: backing off to 30 s: the kubelet's schedule is for credentials, and a few seconds
#: after the API server returns the secret should be there.
RETRY_API_FIRST_SECONDS = 1.0
RETRY_API_MAX_SECONDS = 30.0
#: Woken together by the API server's return, retries start spread over this many
#: seconds per RESUME_PER_SECOND waiting (at least RESUME_SPREAD_MIN): a thousand
#: pending secrets must not arrive in the same instant at an API server just back.
RESUME_SPREAD_MIN = 0.5
RESUME_PER_SECOND = 200.0

#: Secrets retried in the background at once, across namespaces; beyond it, the next
#: pod that needs one starts its retry.
MAX_RETRYING = 1000


class BackgroundRetries:
    """One retry loop per (namespace, secret) whose making ended "pending"."""

    def __init__(
        self,
        attempt: Callable[[str, PullNeed], Awaitable[NeedStatus]],
        *,
        still_wanted: Callable[[str], bool],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        health: ApiHealth | None = None,
    ) -> None:
        """``attempt`` makes the secret once (joining a write in flight);
        ``still_wanted`` says whether the namespace may still have pull secrets; ``spawn``
        runs a background task the owner cancels on close."""
        self.attempt = attempt
        self.still_wanted = still_wanted
        self.spawn = spawn
        self.health = health
        self._retrying: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self._retrying)

    def offer(self, namespace: str, need: PullNeed, status: NeedStatus) -> None:
        """Retry ``need`` after ``status`` (pending), unless it is already being retried
        or MAX_RETRYING are (the next pod that needs it offers it again)."""
        key = (namespace, need.secret_name)
        if key in self._retrying or len(self._retrying) >= MAX_RETRYING:
            return
        self._retrying.add(key)
        task = self.spawn(self._retry(key, need, status))
        # Its place is freed however it ends, cancelled before its first step included.
        task.add_done_callback(lambda _: self._retrying.discard(key))

    async def _retry(self, key: tuple[str, str], need: PullNeed, status: NeedStatus) -> None:
        namespace = key[0]
        delay = RETRY_FIRST_SECONDS
        api_delay = RETRY_API_FIRST_SECONDS
        give_up = time.monotonic() + RETRY_GIVE_UP_SECONDS
        while time.monotonic() < give_up:
            if status.api_unavailable:
                if self.health is not None and self.health.just_back:
                    api_delay = RETRY_API_FIRST_SECONDS  # the outage's back-off is over
                woken = await self._await_api(api_delay)
                api_delay = RETRY_API_FIRST_SECONDS if woken else api_delay * 2
                api_delay = min(api_delay, RETRY_API_MAX_SECONDS)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            if not self.still_wanted(namespace):
                return  # the namespace opted out or is gone
            status = await self.attempt(namespace, need)
            if status.state != "pending":
                log.info("pull secret %s/%s made after a retry", namespace, need.secret_name)
                return
        log.warning("gave up making %s/%s for now", namespace, need.secret_name)

    async def _await_api(self, delay: float) -> bool:
        """Wait ``delay`` (jittered), or until the API server answers again; then a
        moment more, spread by how many retries are waiting with this one. True when
        woken by its return."""
        if self.health is None:
            await asyncio.sleep(jittered(delay))
            return False
        if not await self.health.until_recovered(jittered(delay)):
            return False
        spread = max(RESUME_SPREAD_MIN, len(self._retrying) / RESUME_PER_SECOND)
        await asyncio.sleep(random.uniform(0, spread))
        return True
