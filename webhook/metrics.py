"""Prometheus metrics. One registry per process (per app in tests), never the global one."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

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

    def __post_init__(self) -> None:
        r = self.registry
        self.admissions = Counter(
            "pull_secret_webhook_admissions",
            "Admission reviews answered, by result "
            "(patched, unchanged, skipped, refused, warned, denied, bad_request, error); "
            "refused: the namespace has not opted in, does not exist or is excluded.",
            ["result"],
            registry=r,
        )
        self.admission_seconds = Histogram(
            "pull_secret_webhook_admission_duration_seconds",
            "Time to answer an admission review.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
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
        self.cert_reloads = Counter(
            "pull_secret_webhook_certificate_reloads",
            "Serving certificate reloads from disk, by result (ok, error).",
            ["result"],
            registry=r,
        )

        # Label children bound once: looking one up takes a lock and validates the labels.
        self._admission_results: dict[str, Counter] = {}

    def count_admission(self, result: str, seconds: float) -> None:
        """One answered review: its result and how long it took (the request path's call)."""
        child = self._admission_results.get(result)
        if child is None:
            child = self._admission_results[result] = self.admissions.labels(result)
        child.inc()
        self.admission_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
