"""`python -m webhook serve` as a process: it serves, exports its process and certificate
metrics, and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from devenv.support.configs import sample_document
from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_serve

REPO = Path(__file__).resolve().parents[2]


def test_serve_answers_over_tls_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    serve, ca = loopback_serve(
        tmp_path,
        yaml.safe_dump(sample_document()),
        names_only=True,
        log_format="json",
        shutdown_delay=0.5,
    )
    port, health = serve.port, serve.health_port
    started = time.time()
    process = subprocess.Popen(
        serve.command(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        serve.wait_ready(process, timeout=20)
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
