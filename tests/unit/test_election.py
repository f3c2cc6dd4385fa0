"""Leader election against the in-memory API (its Lease answers 409 on a stale write, as
the API server's does); tests/e2e/test_leader_election.py runs the same against a real one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from devenv.support.memkube import MemKube
from webhook.kube.objects import KubeAPIError
from webhook.upkeep.election import LEASE_SECONDS, LeaderElector

HOME, NAME = "pull-secret-webhook", "pull-secret-webhook"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def elector(kube: Any, holder: str, clock: Clock) -> LeaderElector:
    return LeaderElector(kube, HOME, NAME, holder, clock=clock)


def spec(kube: MemKube) -> dict[str, Any]:
    lease: dict[str, Any] = kube.leases[(HOME, NAME)]["spec"]
    return lease


async def test_the_first_replica_takes_a_new_lease_and_the_second_waits() -> None:
    kube, clock = MemKube(), Clock()
    a, b = elector(kube, "replica-a", clock), elector(kube, "replica-b", clock)
    assert await a.try_acquire() is True
    assert await b.try_acquire() is False
    assert spec(kube)["holderIdentity"] == "replica-a"
    assert spec(kube)["leaseTransitions"] == 0


async def test_renewing_keeps_the_acquire_time_and_moves_the_renew_time() -> None:
    kube, clock = MemKube(), Clock()
    a = elector(kube, "replica-a", clock)
    await a.try_acquire()
    acquired, renewed = spec(kube)["acquireTime"], spec(kube)["renewTime"]
    clock.now += 5
    assert await a.try_acquire() is True
    assert spec(kube)["acquireTime"] == acquired
    assert spec(kube)["renewTime"] != renewed
    assert spec(kube)["leaseTransitions"] == 0


async def test_a_lease_left_to_expire_passes_to_another_replica() -> None:
    kube, clock = MemKube(), Clock()
    a, b = elector(kube, "replica-a", clock), elector(kube, "replica-b", clock)
    await a.try_acquire()
    clock.now += LEASE_SECONDS - 1
    assert await b.try_acquire() is False  # still within its duration
    clock.now += 2
    assert await b.try_acquire() is True
    assert spec(kube)["holderIdentity"] == "replica-b"
    assert spec(kube)["leaseTransitions"] == 1
    assert await a.try_acquire() is False  # the old leader finds it taken


async def test_a_released_lease_is_taken_at_once_and_only_its_holder_may_release() -> None:
    kube, clock = MemKube(), Clock()
    a, b = elector(kube, "replica-a", clock), elector(kube, "replica-b", clock)
    await a.try_acquire()
    assert await b.release() is False  # not b's to give
    assert spec(kube)["holderIdentity"] == "replica-a"
    assert await a.release() is True
    assert await b.try_acquire() is True  # no lease duration to wait out
    assert spec(kube)["holderIdentity"] == "replica-b"


class StaleRead(MemKube):
    """Another replica writes the Lease between this one's read and its write."""

    def __init__(self, rival: str) -> None:
        super().__init__()
        self.rival = rival

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        seen = await super().get_lease(namespace, name)
        rival = LeaderElector(MemKubeView(self), namespace, name, self.rival)
        assert await rival.try_acquire() is True
        return seen


class MemKubeView:
    """The same store through the plain MemKube methods (no stale read for the rival)."""

    def __init__(self, kube: MemKube) -> None:
        self.kube = kube

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await MemKube.get_lease(self.kube, namespace, name)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.kube.create_lease(namespace, body)

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.kube.replace_lease(namespace, name, body)


@pytest.mark.parametrize("exists", [False, True], ids=["create", "take-over"])
async def test_losing_a_write_race_is_not_leading(exists: bool) -> None:
    kube, clock = StaleRead("replica-b"), Clock()
    if exists:
        # An expired lease both replicas try to take over at once.
        await MemKubeView(kube).create_lease(
            HOME,
            {
                "metadata": {"name": NAME, "namespace": HOME},
                "spec": {
                    "holderIdentity": "gone",
                    "leaseDurationSeconds": 15,
                    "renewTime": "2020-01-01T00:00:00.000000Z",
                },
            },
        )
    a = elector(kube, "replica-a", clock)
    assert await a.try_acquire() is False  # its create or update answered 409
    assert spec(kube)["holderIdentity"] == "replica-b"


async def test_an_api_failure_is_not_taken_for_a_lost_race() -> None:
    kube, clock = MemKube(), Clock()
    kube.unreachable = True
    with pytest.raises(KubeAPIError) as caught:
        await elector(kube, "replica-a", clock).try_acquire()
    assert caught.value.status == 0
