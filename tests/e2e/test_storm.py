"""A small cold storm through the API server: pods created all at once in namespaces
whose pull secrets do not exist yet, served by two replicas of its own (cold credential
caches). The full size, with timings, is ``python -m bench.storm``; this keeps its
invariants from rotting."""

from __future__ import annotations

import asyncio
import re
import time

from devenv.processes import wait_for
from devenv.stack import Replica, Stack
from devenv.support import storm
from tests.e2e.support import ns_name

NAMESPACES = 5
PODS_PER_NAMESPACE = 10


def exchanges(replica: Replica) -> dict[str, float]:
    """One replica's credential exchanges by registry entry (its own counter: these
    replicas serve nothing but this test)."""
    counted = storm.counter_values(
        replica.metrics(), "pull_secret_webhook_credential_exchanges_total"
    )
    out: dict[str, float] = {}
    for labels, value in counted.items():
        entry = labels.split('entry="', 1)[1].split('"', 1)[0]
        out[entry] = out.get(entry, 0.0) + value
    return out


def _api(stack: Stack) -> storm.Api:
    return storm.admin_api(stack.controlplane, NAMESPACES * PODS_PER_NAMESPACE)


async def _namespaces(stack: Stack, names: list[str]) -> None:
    api = _api(stack)
    try:
        await storm.make_namespaces(api, names)
    finally:
        await api.close()


async def _storm(stack: Stack, names: list[str]) -> storm.Result:
    api = _api(stack)
    try:
        return await storm.run(
            api,
            names,
            PODS_PER_NAMESPACE,
            storm.stack_registries(stack),
            lambda: storm.identity_calls(stack),
            settle_timeout=60,
        )
    finally:
        await api.close()


def test_a_cold_storm_admits_every_pod_and_writes_each_secret_once(
    stack: Stack, webhook_logs_on_failure: None
) -> None:
    names = [ns_name("storm") for _ in range(NAMESPACES)]
    try:
        asyncio.run(_namespaces(stack, names))
        made_before = storm.identity_calls(stack)
        with stack.extra_replica("storm-a") as a, stack.extra_replica("storm-b") as b:
            # The entries with prefetch (acr, ecr) are exchanged as the replicas start,
            # before any pod asks; acr-slow (prefetch: false here) only for the storm's.
            prefetched = wait_for(
                "both replicas to exchange acr's and ecr's credentials before any pod",
                lambda: (
                    [exchanges(r) for r in (a, b)]
                    if all({"acr", "ecr"} <= set(exchanges(r)) for r in (a, b))
                    else None
                ),
                timeout=30,
            )
            assert all("acr-slow" not in by_entry for by_entry in prefetched), prefetched
            with stack.routed_to([a, b], names[0]):
                result = asyncio.run(_storm(stack, names))
            counted = {r.name: exchanges(r) for r in (a, b)}
        made_after = storm.identity_calls(stack)
        made = {k: made_after[k] - made_before.get(k, 0) for k in made_after}
        # No failed or unpatched admission, no pull Secret written twice (what the API
        # server streamed for these namespaces' Secrets).
        problems = storm.violations(result, replicas=2, exchange_keys=())
        assert problems == [], "\n".join([*problems, a.log_tail(150), b.log_tail(150)])
        assert len(result.created) == NAMESPACES * PODS_PER_NAMESPACE
        per_secret = result.writes["secrets"].per_object(names)
        assert len(per_secret) == 2 * NAMESPACES and set(per_secret.values()) == {1}
        # One marker per Secret, never deleted and made again.
        markers = result.writes["markers"]
        assert markers.by_kind(names) == {"ADDED": 2 * NAMESPACES}
        # At most one exchange per registry (and identity) per replica, prefetch and
        # storm together, and each one counted by the replicas was really made at the
        # endpoint (which also sees the session's other replicas, so it may count more,
        # never fewer).
        for name, by_entry in counted.items():
            assert all(n <= 1 for n in by_entry.values()), (name, by_entry)
        for entry in ("acr", "acr-slow", "ecr"):
            ours = sum(by_entry.get(entry, 0.0) for by_entry in counted.values())
            assert 1 <= ours <= made[entry], (entry, counted, made)
    finally:
        for ns in names:
            stack.controlplane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _counted(replica: Replica, name: str, having: str = "") -> float:
    """A counter summed over its series, or over those whose labels include ``having``."""
    values = storm.counter_values(replica.metrics(), name)
    return sum(n for labels, n in values.items() if having in labels)


def test_a_replica_of_two_workers_writes_each_secret_once_and_counts_both(
    stack: Stack, webhook_logs_on_failure: None
) -> None:
    # serve --workers 2: both processes admit (the kernel spreads the API server's
    # connections), each with its own watches and cache; the API server lets one create
    # of each Secret through, and the primary's /metrics adds up both workers.
    names = [ns_name("workers") for _ in range(NAMESPACES)]
    try:
        asyncio.run(_namespaces(stack, names))
        with stack.extra_replica("workers-2", workers=2) as replica:
            with stack.routed_to([replica], names[0]):
                before = _counted(replica, "pull_secret_webhook_admissions_total")
                result = asyncio.run(_storm(stack, names))
            pods = NAMESPACES * PODS_PER_NAMESPACE
            counted = wait_for(
                "the primary's /metrics to count every admission",
                lambda: (
                    n
                    if (n := _counted(replica, "pull_secret_webhook_admissions_total"))
                    >= before + pods
                    else None
                ),
                timeout=15,
            )
            time.sleep(2)  # a count arriving late would be one too many
            assert _counted(replica, "pull_secret_webhook_admissions_total") == counted
            writes = _counted(replica, "pull_secret_webhook_secret_writes_total", 'result="ok"')
            taken = _counted(replica, "pull_secret_webhook_secret_writes_total", 'result="taken"')
            log = replica.log.read_text()
        problems = storm.violations(result, replicas=1, exchange_keys=())
        assert problems == [], "\n".join([*problems, replica.log_tail(150)])
        per_secret = result.writes["secrets"].per_object(names)
        assert len(per_secret) == 2 * NAMESPACES and set(per_secret.values()) == {1}
        assert writes == 2 * NAMESPACES  # both workers' writes, each Secret once
        # The other worker's creates of the same Secrets, refused (409): at most one each.
        assert taken <= 2 * NAMESPACES
        patched_by = set(re.findall(r"patched imagePullSecrets.* worker=(\d)", log))
        assert patched_by == {"0", "1"}, "both workers should have admitted pods"
    finally:
        for ns in names:
            stack.controlplane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
