"""Retrying one exchange: transient failures again with capped exponential backoff
and jitter, permanent ones never, and nothing past the deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from webhook.credentials.base import Attempt, RegistryAuthError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts: ``first_delay * 2**n``, capped, with equal jitter."""

    first_delay: float = 0.25
    """Default 0.25 s: a throttled or restarting endpoint (IMDS, STS) usually answers
    again within a few hundred milliseconds."""
    max_delay: float = 4.0
    """Default 4 s: keeps at least two attempts inside the default 6 s admission budget
    and bounds how long a honoured Retry-After may hold us."""
    max_attempts: int = 6
    """Default 6: 0.25+0.5+1+2+4 s of waiting, about the SDKs' own retry budgets."""

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        backoff = min(self.max_delay, self.first_delay * 2.0**retry)
        # Equal jitter: half fixed, half random, so callers that failed together
        # (a storm of pods after an outage) do not come back together.
        wait = backoff / 2 + random.uniform(0, backoff / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


def _unexpected(attempt: Attempt, exc: Exception) -> RegistryAuthError:
    # A provider bug, not a remote answer: say what it was without its text (which
    # could quote a request) and do not retry it.
    log.error("unexpected %s in %s for entry %s", type(exc).__name__, attempt.step, attempt.entry)
    return attempt.error("internal-error", type(exc).__name__, transient=False)


async def with_retries(
    fn: Callable[[Attempt], Awaitable[T]],
    *,
    entry: str,
    identity: str,
    deadline: float,
    policy: RetryPolicy,
    on_retry: Callable[[RegistryAuthError], None] | None = None,
) -> T:
    """Run ``fn`` until it succeeds, fails permanently, runs out of attempts or the
    deadline (absolute ``time.monotonic()``) passes; raise the last error.
    ``on_retry`` hears of each transient failure that is about to be retried."""
    retry = 0
    while True:
        attempt = Attempt(entry=entry, identity=identity, deadline=deadline)
        try:
            # The default event loop's clock is time.monotonic, so deadlines compare.
            async with asyncio.timeout_at(deadline):
                return await fn(attempt)
        except TimeoutError:
            error = attempt.error("timeout", "no answer before the deadline", transient=True)
        except RegistryAuthError as e:
            error = e
        except Exception as e:  # every failure must become a RegistryAuthError
            error = _unexpected(attempt, e)
        if not error.transient or retry + 1 >= policy.max_attempts:
            raise error
        wait = policy.delay(retry, error.retry_after)
        if time.monotonic() + wait >= deadline:
            raise error
        if on_retry is not None:
            on_retry(error)
        log.info(
            "retrying entry %s as %s in %.2fs after %s: %s",
            entry,
            identity,
            wait,
            error.step,
            error.code,
        )
        await asyncio.sleep(wait)
        retry += 1
