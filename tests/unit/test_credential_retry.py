"""Backoff and retry rules of one exchange."""

from __future__ import annotations

import asyncio
import time

import pytest

from webhook.credentials import RegistryAuthError, RetryPolicy
from webhook.credentials.base import Attempt
from webhook.credentials.retry import with_retries

POLICY = RetryPolicy(first_delay=0.001, max_delay=0.004, max_attempts=4)


@pytest.mark.parametrize("retry", range(8), ids=lambda n: f"retry-{n}")
def test_backoff_doubles_up_to_the_cap_with_at_most_half_of_it_random(retry: int) -> None:
    policy = RetryPolicy()
    backoff = min(policy.max_delay, policy.first_delay * 2**retry)
    for _ in range(50):
        assert backoff / 2 <= policy.delay(retry) <= backoff


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [(1.0, 1.0, 1.0), (60.0, 4.0, 4.0), (0.0, 0.125, 0.25)],
    ids=["honoured", "capped", "shorter-than-backoff"],
)
def test_retry_after_is_honoured_within_the_cap(
    retry_after: float, low: float, high: float
) -> None:
    policy = RetryPolicy()
    assert low <= policy.delay(0, retry_after) <= high


class Script:
    def __init__(self, *outcomes: RegistryAuthError | None) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self, attempt: Attempt) -> str:
        self.calls += 1
        attempt.step = "scripted"
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return "done"


def error(transient: bool, retry_after: float | None = None) -> RegistryAuthError:
    return RegistryAuthError(
        entry="e",
        identity="i",
        step="scripted",
        code="503" if transient else "401",
        transient=transient,
        retry_after=retry_after,
    )


async def run(script: Script, deadline: float = 5.0, policy: RetryPolicy = POLICY) -> str:
    return await with_retries(
        script, entry="e", identity="i", deadline=time.monotonic() + deadline, policy=policy
    )


async def test_transient_failures_are_retried_until_success() -> None:
    script = Script(error(True), error(True))
    assert await run(script) == "done"
    assert script.calls == 3


async def test_a_permanent_failure_is_raised_at_once() -> None:
    script = Script(error(False))
    with pytest.raises(RegistryAuthError) as caught:
        await run(script)
    assert script.calls == 1
    assert caught.value.code == "401"


async def test_the_last_error_is_raised_after_max_attempts() -> None:
    script = Script(*[error(True)] * 10)
    with pytest.raises(RegistryAuthError) as caught:
        await run(script)
    assert script.calls == POLICY.max_attempts
    assert caught.value.transient


async def test_no_retry_starts_when_its_wait_would_cross_the_deadline() -> None:
    script = Script(error(True, retry_after=0.5))
    started = time.monotonic()
    with pytest.raises(RegistryAuthError):
        await run(script, deadline=0.2, policy=RetryPolicy(max_delay=1.0))
    assert script.calls == 1
    assert time.monotonic() - started < 0.1


async def test_an_attempt_that_hangs_ends_at_the_deadline_as_a_transient_timeout() -> None:
    async def hang(attempt: Attempt) -> str:
        attempt.step = "acr-exchange"
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(RegistryAuthError) as caught:
        await with_retries(
            hang, entry="e", identity="i", deadline=time.monotonic() + 0.05, policy=POLICY
        )
    assert (caught.value.step, caught.value.code, caught.value.transient) == (
        "acr-exchange",
        "timeout",
        True,
    )
