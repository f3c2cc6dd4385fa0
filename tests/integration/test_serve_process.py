"""`python -m webhook serve` as a process: it serves, exports its process and certificate
metrics, and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.registry import free_port
from tests.support.configs import sample_document
from tests.support.reviews import make_pod, make_review
from tests.support.serving import write_serving_pair
from webhook.pki import make_ca

REPO = Path(__file__).resolve().parents[2]


def test_serve_answers_over_tls_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sample_document()))
    ca = make_ca()
    write_serving_pair(ca, tmp_path)
    port, health = free_port(), free_port()
    started = time.time()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--names-only",
            "--config",
            str(config),
            "--cert-file",
            str(tmp_path / "tls.crt"),
            "--key-file",
            str(tmp_path / "tls.key"),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--health-bind",
            "127.0.0.1",
            "--health-port",
            str(health),
            "--log-format",
            "json",
            "--shutdown-delay",
            "0.5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20  # a cold interpreter imports aiohttp, azure, boto3
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        review = json.dumps(make_review(make_pod("contoso.azurecr.io/app:1"))).encode()
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/mutate",
            data=review,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as r:  # noqa: S310
            body = json.loads(r.read())
        assert body["response"]["patchType"] == "JSONPatch"
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as r:
            metrics = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(r.read().decode())
                for s in family.samples
            }
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    # The standard process metrics describe this very process.
    assert metrics[("process_start_time_seconds", ())] == pytest.approx(started, abs=5)
    assert metrics[("process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert metrics[("process_cpu_seconds_total", ())] > 0
    assert metrics[("process_open_fds", ())] >= 3
    assert metrics[("process_max_fds", ())] >= metrics[("process_open_fds", ())]
    # And the certificate it serves, for the expiry alert (docs/alerts.md).
    serving = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert (
        metrics[
            (
                "pull_secret_webhook_certificate_expiry_timestamp_seconds",
                (("certificate", "serving"),),
            )
        ]
        == serving.not_valid_after_utc.timestamp()
    )
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    assert any("shutting down" in m for m in messages)
    assert all(line["level"] in ("info", "warning", "debug") for line in lines)
