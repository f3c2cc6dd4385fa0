"""A replica's /metrics with several workers: the secondaries' counts added to the primary's."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhook.server import workers
from webhook.telemetry.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The webhook's own samples; the process_* ones (CPU seconds, RSS) move between two
    renders on a busy machine and are not what the merge is about."""
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.startswith("process_")
    }


def test_counters_and_histograms_add_up_and_gauges_stay_the_primarys() -> None:
    primary, second, third = Metrics(), Metrics(), Metrics()
    primary.count_admission("patched", 0.0003)
    second.count_admission("patched", 0.002)
    second.count_admission("error", 3.0)  # a result the primary never had
    third.exchanges.labels("acr", "ok").inc(2)
    for m in (primary, second, third):
        m.managed_secrets.set(7)  # every worker knows the same records
    primary.leader.set(1)
    primary.peers = lambda: [second.totals(), third.totals()]
    got = samples(primary)
    assert got[("pull_secret_webhook_admissions_total", (("result", "patched"),))] == 2
    assert got[("pull_secret_webhook_admissions_total", (("result", "error"),))] == 1
    assert (
        got[
            ("pull_secret_webhook_credential_exchanges_total", (("entry", "acr"), ("result", "ok")))
        ]
        == 2
    )
    bucket = "pull_secret_webhook_admission_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.0005"),))] == 1
    assert got[(bucket, (("le", "0.0025"),))] == 2
    assert got[(bucket, (("le", "+Inf"),))] == 3
    assert got[("pull_secret_webhook_admission_duration_seconds_count", ())] == 3
    assert got[("pull_secret_webhook_managed_secrets", ())] == 7  # not 21
    assert got[("pull_secret_webhook_leader", ())] == 1


def test_before_any_secondary_reports_the_render_is_the_primarys_own() -> None:
    m = Metrics()
    m.count_admission("patched", 0.001)
    alone = samples(m)
    m.peers = list  # no secondary has reported yet
    assert samples(m) == alone
    assert alone[("pull_secret_webhook_admissions_total", (("result", "patched"),))] == 1


async def test_a_secondarys_counts_reach_the_primary_over_its_socket_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers, "PUSH_SECONDS", 0.01)
    ours, theirs = socket.socketpair()
    secondary = Metrics()
    secondary.count_admission("patched", 0.001)
    totals = workers.WorkerTotals([ours])
    follow = asyncio.create_task(totals.follow())
    push = asyncio.create_task(workers.push_totals(theirs, secondary.totals))
    try:
        for _ in range(200):
            if totals.latest():
                break
            await asyncio.sleep(0.01)
        [first] = totals.latest()
        assert ("pull_secret_webhook_admissions_total", {"result": "patched"}, 1.0) in first
        secondary.count_admission("patched", 0.001)  # sent again once changed
        for _ in range(200):
            if (
                "pull_secret_webhook_admissions_total",
                {"result": "patched"},
                2.0,
            ) in totals.latest()[0]:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"the change never arrived: {totals.latest()}")
    finally:
        push.cancel()
        await asyncio.gather(push, return_exceptions=True)
    await asyncio.wait_for(follow, 5)  # the secondary's end closed: the primary stops reading


def test_admission_counts_expose_what_prometheus_clients_counter_and_histogram_would() -> None:
    """The admission counter and histogram are counted without prometheus_client's locks;
    their exposition is the one its Counter and Histogram give for the same reviews,
    bucket edges included (a review of exactly 1 ms counts under le="0.001")."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from webhook.telemetry.metrics import _LATENCY_BUCKETS, AdmissionCounts

    reference = CollectorRegistry()
    counter = Counter(
        AdmissionCounts.COUNTER, AdmissionCounts.COUNTER_HELP, ["result"], registry=reference
    )
    histogram = Histogram(
        AdmissionCounts.HISTOGRAM,
        AdmissionCounts.HISTOGRAM_HELP,
        buckets=_LATENCY_BUCKETS,
        registry=reference,
    )
    ours = Metrics()
    reviews = [
        ("patched", 0.0003),
        ("patched", 0.001),
        ("skipped", 0.0),
        ("denied", 29.9),
        ("error", 31.0),
        ("patched", 0.00051),
        ("bad_request", 2.5),
    ]
    for result, seconds in reviews:
        counter.labels(result).inc()
        histogram.observe(seconds)
        ours.count_admission(result, seconds)

    def exposed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("pull_secret_webhook_admission")
            and "timeout" not in s.name
            and not s.name.endswith("_created")  # a time, the families' own
        }

    want = exposed(generate_latest(reference).decode())
    got = exposed(ours.render().decode())
    assert got == want
    assert got[(AdmissionCounts.HISTOGRAM + "_bucket", (("le", "0.001"),))] == 4
    assert got[(AdmissionCounts.HISTOGRAM + "_bucket", (("le", "30.0"),))] == 6
    assert ours.admissions.by_result() == {
        "patched": 3,
        "skipped": 1,
        "denied": 1,
        "error": 1,
        "bad_request": 1,
    }
    created = {
        s.name
        for family in text_string_to_metric_families(ours.render().decode())
        for s in family.samples
        if s.name.endswith("_created") and "admission" in s.name
    }
    assert created == {AdmissionCounts.COUNTER + "_created", AdmissionCounts.HISTOGRAM + "_created"}
