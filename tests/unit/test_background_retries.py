"""The background retry loop on its own: one loop per secret, a bound on how many, and an
end when the secret is made or no longer wanted (tests/unit/test_api_recovery.py covers
its timing around an API-server outage)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from devenv.support.configs import sample_config
from devenv.support.reviews import make_pod
from webhook.admission.decision import NeedStatus
from webhook.admission.needs import PullNeed, pull_needs
from webhook.pullsecrets import retries
from webhook.pullsecrets.retries import BackgroundRetries

PENDING = NeedStatus("pending", "token-exchange 503")


def need() -> PullNeed:
    [only] = pull_needs(sample_config(), make_pod("contoso.azurecr.io/app:1"))
    return only


class Harness:
    def __init__(self, answers: list[str], wanted: bool = True) -> None:
        self.answers = answers
        self.wanted = wanted
        self.attempts: list[str] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    async def attempt(self, namespace: str, need: PullNeed) -> NeedStatus:
        self.attempts.append(namespace)
        return NeedStatus("ready") if self.answers.pop(0) == "ready" else PENDING

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        return task

    def retries(self) -> BackgroundRetries:
        return BackgroundRetries(
            self.attempt, still_wanted=lambda namespace: self.wanted, spawn=self.spawn
        )


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries, "RETRY_FIRST_SECONDS", 0.01)
    monkeypatch.setattr(retries, "RETRY_MAX_SECONDS", 0.02)


async def test_a_pending_secret_is_retried_until_it_is_made_then_the_loop_ends() -> None:
    h = Harness(["pending", "pending", "ready"])
    r = h.retries()
    r.offer("team-a", need(), PENDING)
    assert len(r) == 1
    await asyncio.wait_for(asyncio.gather(*h.tasks), 5)
    assert h.attempts == ["team-a"] * 3
    assert len(r) == 0


async def test_one_loop_per_secret_and_no_more_than_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retries, "MAX_RETRYING", 2)
    h = Harness(["pending"] * 100)
    r = h.retries()
    for namespace in ("a", "a", "b", "c"):
        r.offer(namespace, need(), PENDING)
    assert len(r) == 2 and len(h.tasks) == 2  # "a" once, "b", and "c" past the bound
    for task in h.tasks:
        task.cancel()
    await asyncio.gather(*h.tasks, return_exceptions=True)
    assert len(r) == 0  # cancelled loops free their place


async def test_a_namespace_that_opted_out_ends_its_retries_without_an_attempt() -> None:
    h = Harness(["ready"], wanted=False)
    r = h.retries()
    r.offer("gone", need(), PENDING)
    await asyncio.wait_for(asyncio.gather(*h.tasks), 5)
    assert h.attempts == []
    assert len(r) == 0
