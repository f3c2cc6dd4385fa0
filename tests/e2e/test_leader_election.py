"""The refresher's Lease on a real API server: one holder, renewal, takeover after expiry
or release."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio

from devenv.controlplane import ControlPlane
from webhook.kube.calls import Kube, connect
from webhook.upkeep.election import LEASE_SECONDS, LeaderElector


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def kube(controlplane: ControlPlane) -> AsyncIterator[Kube]:
    client = Kube(await connect(str(controlplane.kubeconfig)))
    try:
        yield client
    finally:
        await client.close()


def electors(kube: Kube, namespace: str) -> tuple[LeaderElector, LeaderElector, Clock]:
    clock = Clock()
    name = f"lease-{uuid.uuid4().hex[:6]}"
    a = LeaderElector(kube, namespace, name, "replica-a", clock=clock)
    b = LeaderElector(kube, namespace, name, "replica-b", clock=clock)
    return a, b, clock


async def test_first_replica_takes_the_lease_and_the_second_waits(
    kube: Kube, namespace: str
) -> None:
    a, b, clock = electors(kube, namespace)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    clock.now += LEASE_SECONDS / 3  # a renews in time
    assert await a.try_acquire()
    assert not await b.try_acquire()
    lease = await kube.get_lease(namespace, a.name)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-a"
    assert lease["spec"]["leaseTransitions"] == 0


async def test_lease_not_renewed_in_time_passes_to_the_other_replica(
    kube: Kube, namespace: str
) -> None:
    a, b, clock = electors(kube, namespace)
    assert await a.try_acquire()
    clock.now += LEASE_SECONDS + 1  # a stopped renewing (crashed, partitioned)
    assert await b.try_acquire()
    assert not await a.try_acquire()  # and a, back, does not take it back
    lease = await kube.get_lease(namespace, a.name)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1


async def test_racing_replicas_cannot_both_win(kube: Kube, namespace: str) -> None:
    a, b, _ = electors(kube, namespace)
    results = await asyncio.gather(a.try_acquire(), b.try_acquire())
    assert sorted(results) == [False, True]


async def test_a_released_lease_is_taken_at_once_by_the_other_replica(
    kube: Kube, namespace: str
) -> None:
    a, b, clock = electors(kube, namespace)
    assert await a.try_acquire()
    assert not await b.release()  # not b's to give
    assert await a.release()  # a shuts down
    clock.now += 1  # far less than LEASE_SECONDS
    assert await b.try_acquire()
    lease = await kube.get_lease(namespace, a.name)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not await a.release()  # no longer a's
