"""The alerts a replica raises on its own, each evaluated with promtool on what a real
``python -m webhook serve`` exported before and after being driven into the failure: its
certificate near expiry (renewal not done), a config refused, connections shed, and the
replica gone. (tests/e2e/test_alerts_e2e.py covers those that need the cluster.)"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devenv import alerts
from devenv.serve import Serve
from devenv.support.serving import loopback_serve
from tests.support.alerting import Scrape, expect_alert, scrape, scrape_until, total
from tests.support.alerts import promtool_binary
from webhook.certs.pki import KeyPair, make_serving_cert

REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
registries:
  - {name: harbor, kind: generic, hosts: [harbor.example.com], auth: {secretRef: {name: h}}}
"""
INSTANCE = "replica-0"
#: serve reads its config file and its certificate every few seconds; a change shows in
#: /metrics well within this.
SETTLE_SECONDS = 30.0


@dataclass
class Running:
    serve: Serve
    process: subprocess.Popen[bytes]
    ca: KeyPair
    directory: Path

    def scrape(self) -> Scrape:
        return scrape(self.serve.health_port, INSTANCE)

    def until(self, what: str, predicate: Callable[[Scrape], bool]) -> Scrape:
        return scrape_until(
            self.serve.health_port, INSTANCE, what, predicate, within=SETTLE_SECONDS, every=0.2
        )


@pytest.fixture
def promtool() -> Path:
    return promtool_binary()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    serve, ca = loopback_serve(tmp_path, CONFIG, names_only=True, shutdown_delay=0.0)
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(serve.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        serve.wait_ready(process, timeout=30)
        yield Running(serve, process, ca, tmp_path)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def value(s: Scrape, name: str, **labels: str) -> float | None:
    for (sample, found), v in s.samples.items():
        if sample == name and all((k, x) in found for k, x in labels.items()):
            return v
    return None


def serve_certificate_with_days_left(running: Running, days: float) -> None:
    # Issued 365 days ago minus the days left: a certificate renewal has not replaced.
    lifetime = 365
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=lifetime - days)
    make_serving_cert(
        running.ca, ["localhost"], ["127.0.0.1"], days=lifetime, issued_at=issued
    ).write(running.directory / "tls.crt", running.directory / "tls.key")


@pytest.mark.parametrize(
    ("days_left", "firing"),
    [
        (25, ["PullSecretWebhookCertificateRenewalFailing"]),
        (
            15,
            [
                "PullSecretWebhookCertificateRenewalFailing",
                "PullSecretWebhookCertificateExpiresSoon",
            ],
        ),
        (
            2,
            [
                "PullSecretWebhookCertificateRenewalFailing",
                "PullSecretWebhookCertificateExpiresSoon",
                "PullSecretWebhookCertificateExpiresVerySoon",
            ],
        ),
    ],
)
def test_a_certificate_not_renewed_in_time_raises_the_certificate_alerts(
    running: Running, promtool: Path, tmp_path: Path, days_left: float, firing: list[str]
) -> None:
    before = running.scrape()
    serve_certificate_with_days_left(running, days_left)
    after = running.until(
        "the replica to serve the old certificate",
        lambda s: (
            (value(s, "pull_secret_webhook_certificate_expiry_timestamp_seconds") or 0)
            < time.time() + 30 * 86400
        ),
    )
    every = [
        "PullSecretWebhookCertificateRenewalFailing",
        "PullSecretWebhookCertificateExpiresSoon",
        "PullSecretWebhookCertificateExpiresVerySoon",
    ]
    for alert in every:
        expected = [{"certificate": "serving"}] if alert in firing else []
        expect_alert(promtool, tmp_path, alert, before, after, instance=INSTANCE, labels=expected)


def test_a_refused_config_raises_the_config_alert(
    running: Running, promtool: Path, tmp_path: Path
) -> None:
    before = running.scrape()
    # A control character: the file cannot even be decoded as YAML.
    running.serve.config.write_bytes(b"registries: [\x01]\n")
    after = running.until(
        "the config to be refused",
        lambda s: value(s, "pull_secret_webhook_config_last_reload_successful") == 0,
    )
    expect_alert(
        promtool,
        tmp_path,
        "PullSecretWebhookConfigRefused",
        before,
        after,
        instance=INSTANCE,
        labels=[{}],
    )


def test_connections_shed_for_sending_nothing_raise_the_shedding_alert(
    running: Running, promtool: Path, tmp_path: Path
) -> None:
    before = running.scrape()
    # Idle clients that never send a request: each is closed after the header timeout.
    # (TLS handshakes done, as an API server's would be: the limit is on the request.)
    context = ssl.create_default_context(cadata=running.ca.cert_pem.decode())
    idle = [
        context.wrap_socket(
            socket.create_connection(("127.0.0.1", running.serve.port)),
            server_hostname="localhost",
        )
        for _ in range(40)
    ]
    try:
        after = running.until(
            "the idle connections to be closed",
            lambda s: total(s, "pull_secret_webhook_connections_closed_total") >= 40,
        )
    finally:
        for conn in idle:
            conn.close()
    expect_alert(
        promtool,
        tmp_path,
        "PullSecretWebhookSheddingConnections",
        before,
        after,
        instance=INSTANCE,
        labels=[{}],
    )


def test_a_replica_that_stops_answering_raises_the_down_alerts(
    running: Running, promtool: Path, tmp_path: Path
) -> None:
    before = running.scrape()
    running.process.terminate()
    running.process.wait(30)
    after = running.scrape()
    assert not after.up
    expect_alert(
        promtool, tmp_path, "PullSecretWebhookDown", before, after, instance=INSTANCE, labels=[{}]
    )
    expect_alert(
        promtool,
        tmp_path,
        "PullSecretWebhookReplicaDown",
        before,
        after,
        instance=INSTANCE,
        labels=[{"instance": INSTANCE, "job": "pull-secret-webhook"}],
    )


def test_a_healthy_replica_raises_no_alert(
    running: Running, promtool: Path, tmp_path: Path
) -> None:
    # Every rule on a replica that only serves, the memory and latency rules included.
    before = running.scrape()
    time.sleep(2)
    after = running.scrape()
    names = [
        r["alert"] for g in yaml.safe_load(alerts.SOURCE.read_text())["groups"] for r in g["rules"]
    ]
    for alert in names:
        if alert == "PullSecretWebhookLeaderCount":
            continue  # --names-only runs no refresher, so no leader: the e2e test has it
        expect_alert(promtool, tmp_path, alert, before, after, instance=INSTANCE, labels=[])
