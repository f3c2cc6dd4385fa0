"""Prometheus metrics. One registry per process (per app in tests), never the global one."""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "Totals"]

#: The webhook's own counters and histograms: what a replica's workers add up.
PREFIX = "pull_secret_webhook_"
#: One worker's counts: (sample name, labels, value), ``_created`` samples left out.
Totals = list[tuple[str, dict[str, str], float]]

#: Admission latency buckets: the hot path is sub-millisecond; the slow path is
#: bounded by the admission budget (a fraction of timeoutSeconds, at most 30 s).
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    peers: Callable[[], Sequence[Totals]] | None = None
    """In a replica's primary worker: the other workers' latest totals, added to its own
    counters and histograms when rendered (``webhook.server.workers``)."""

    def __post_init__(self) -> None:
        r = self.registry
        self.admissions = AdmissionCounts(r)
        self.exchanges = Counter(
            "pull_secret_webhook_credential_exchanges",
            "Registry credential exchanges, by registry entry and result (ok, error).",
            ["entry", "result"],
            registry=r,
        )
        self.secret_writes = Counter(
            "pull_secret_webhook_secret_writes",
            "Pull secret writes, by operation (create, update, delete) and result.",
            ["operation", "result"],
            registry=r,
        )
        self.managed_secrets = Gauge(
            "pull_secret_webhook_managed_secrets",
            "Pull secret records this replica knows of.",
            registry=r,
        )
        self.leader = Gauge(
            "pull_secret_webhook_leader",
            "1 when this replica holds the refresher Lease.",
            registry=r,
        )
        self.write_policy_bound = Gauge(
            "pull_secret_webhook_write_policy_bound",
            "1 when the API server refused a dry-run write the webhook's write policy "
            "(ValidatingAdmissionPolicy) must refuse, 0 when it accepted it (the policy does "
            "not apply to the webhook's ServiceAccount), -1 while not known.",
            registry=r,
        )
        self.write_policy_bound.set(-1)
        self.api_requests = Counter(
            "pull_secret_webhook_api_requests",
            "Requests sent to the Kubernetes API server, by call (a watch counts once, when "
            "it is opened).",
            ["call"],
            registry=r,
        )
        self.connections_closed = Counter(
            "pull_secret_webhook_connections_closed",
            "Connections the webhook closed to stay within its limits, by reason.",
            ["reason"],
            registry=r,
        )
        # The standard process_* metrics (RSS, CPU, open fds) and python_info, as the
        # default registry would export them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.config_reloads = Counter(
            "pull_secret_webhook_config_reloads",
            "Config file changes seen, by result (ok: in use; error: refused, the previous "
            "config keeps serving).",
            ["result"],
            registry=r,
        )
        self.config_last_reload_ok = Gauge(
            "pull_secret_webhook_config_last_reload_successful",
            "1 when the config file's current content is in use, 0 when it was refused.",
            registry=r,
        )
        self.config_last_reload_ok.set(1)
        self.certificate_expiry = Gauge(
            "pull_secret_webhook_certificate_expiry_timestamp_seconds",
            "When the certificate in use expires (Unix time), by certificate (serving, ca).",
            ["certificate"],
            registry=r,
        )
        self.admission_timeout = Gauge(
            "pull_secret_webhook_admission_timeout_seconds",
            "The config's admission.timeoutSeconds (the MutatingWebhookConfiguration's "
            "timeoutSeconds), for comparing admission latency with it.",
            registry=r,
        )
        self.cert_reloads = Counter(
            "pull_secret_webhook_certificate_reloads",
            "Serving certificate reloads from disk, by result (ok, error).",
            ["result"],
            registry=r,
        )

        self.heal_actions = Counter(
            "pull_secret_webhook_heal_actions",
            "Self-healing of pods stuck pulling without their pull secret, by action "
            "(evicted; blocked: the eviction was refused by a PodDisruptionBudget; reported: "
            "a pod no controller re-creates, or eviction switched off, given an Event).",
            ["action"],
            registry=r,
        )
        for action in ("evicted", "blocked", "reported"):
            self.heal_actions.labels(action)  # every series exists from the start, at 0
        self.pods_awaiting_heal = Gauge(
            "pull_secret_webhook_pods_awaiting_heal",
            "Pods in opted-in namespaces failing to pull an image for longer than the "
            "healing grace without the webhook's pull secret, not healed yet (the leader's "
            "count; 0 on the other replicas).",
            registry=r,
        )

    def count_admission(self, result: str, seconds: float) -> None:
        """One answered review: its result and how long it took (the request path's call)."""
        self.admissions.count(result, seconds)

    def totals(self) -> Totals:
        """This process's counts, for the primary to add up (see ``peers``)."""
        return [
            (sample.name, sample.labels, sample.value)
            for family in self.registry.collect()
            if _summed(family)
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]

    def render(self) -> bytes:
        if self.peers is None:
            return generate_latest(self.registry)
        return generate_latest(_Replica(self.registry, self.peers()))


#: The buckets' ``le`` labels as prometheus_client writes them (a unit test compares).
_BUCKET_LABELS = (*(repr(float(b)) for b in _LATENCY_BUCKETS), "+Inf")
#: prometheus_client's switch for the ``_created`` series, honoured here as its own metrics do.
_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)


class AdmissionCounts:
    """The admission counter (``pull_secret_webhook_admissions``, by result) and latency
    histogram (``pull_secret_webhook_admission_duration_seconds``), exposed as
    prometheus_client's Counter and Histogram would expose them, ``_created`` included.

    Counted without prometheus_client's locks: a labelled Counter and a Histogram take
    three locks per review (~1.5 µs measured alone, ~4 µs in the admission path). Only the
    event loop's thread counts, and a scrape reads whole numbers.
    """

    COUNTER = "pull_secret_webhook_admissions"
    COUNTER_HELP = (
        "Admission reviews answered, by result "
        "(patched, unchanged, skipped, refused, warned, denied, bad_request, error); "
        "refused: the namespace has not opted in, does not exist or is excluded."
    )
    HISTOGRAM = "pull_secret_webhook_admission_duration_seconds"
    HISTOGRAM_HELP = "Time to answer an admission review."

    def __init__(self, registry: CollectorRegistry) -> None:
        self.created = time.time()
        self.results: dict[str, int] = {}
        self.results_created: dict[str, float] = {}
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        """Reviews per bucket, not cumulative; the last is +Inf."""
        self.seconds = 0.0
        registry.register(self)

    def count(self, result: str, seconds: float) -> None:
        results = self.results
        if result in results:
            results[result] += 1
        else:
            results[result] = 1
            self.results_created[result] = time.time()
        # bisect_left: the first bound >= seconds, the bucket whose le holds it.
        self.buckets[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds

    def by_result(self) -> dict[str, int]:
        return dict(self.results)

    def describe(self) -> list[Metric]:
        return [
            Metric(self.COUNTER, self.COUNTER_HELP, "counter"),
            Metric(self.HISTOGRAM, self.HISTOGRAM_HELP, "histogram"),
        ]

    def collect(self) -> Iterator[Metric]:
        counter = Metric(self.COUNTER, self.COUNTER_HELP, "counter")
        for result, n in list(self.results.items()):
            counter.add_sample(self.COUNTER + "_total", {"result": result}, float(n))
            if _CREATED:
                created = self.results_created[result]
                counter.add_sample(self.COUNTER + "_created", {"result": result}, created)
        yield counter
        histogram = Metric(self.HISTOGRAM, self.HISTOGRAM_HELP, "histogram")
        cumulative = 0
        for le, n in zip(_BUCKET_LABELS, list(self.buckets), strict=True):
            cumulative += n
            histogram.add_sample(self.HISTOGRAM + "_bucket", {"le": le}, float(cumulative))
        histogram.add_sample(self.HISTOGRAM + "_count", {}, float(cumulative))
        histogram.add_sample(self.HISTOGRAM + "_sum", {}, self.seconds)
        if _CREATED:
            histogram.add_sample(self.HISTOGRAM + "_created", {}, self.created)
        yield histogram


def _summed(family: Metric) -> bool:
    """Counters and histograms of the webhook's own are summed over the workers. Gauges
    (records known, leadership, certificate expiry, config state) and the process_*
    and python_* metrics stay the primary's own: every worker holds the same records
    and config, and only the primary leads."""
    return family.type in ("counter", "histogram") and family.name.startswith(PREFIX)


class _Replica:
    """The primary's registry with the other workers' counts added (a collector)."""

    def __init__(self, registry: CollectorRegistry, peers: Sequence[Totals]) -> None:
        self.registry = registry
        self.peers = peers

    def collect(self) -> Iterator[Metric]:
        extra: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for totals in self.peers:
            for name, labels, value in totals:
                key = (name, tuple(sorted(labels.items())))
                extra[key] = extra.get(key, 0.0) + value
        for family in self.registry.collect():
            if not _summed(family):
                yield family
                continue
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                merged.samples.append(sample._replace(value=sample.value + extra.pop(key, 0.0)))
            # Label values only another worker has seen (a result the primary never had).
            for key in [k for k in extra if _belongs(k[0], family)]:
                merged.add_sample(key[0], dict(key[1]), extra.pop(key))
            yield merged


def _belongs(sample_name: str, family: Metric) -> bool:
    if family.type == "counter":
        return sample_name == family.name + "_total"
    return sample_name in (family.name + s for s in ("_bucket", "_count", "_sum"))
