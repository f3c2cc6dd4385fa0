"""`serve --workers 2`: two processes share the HTTPS port; the primary supervises."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devenv.support.configs import sample_document
from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_serve
from webhook.certs.pki import KeyPair
from webhook.server.workers import PUSH_SECONDS

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    port: int
    health: int
    ca: KeyPair

    def secondaries(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def admit(self) -> dict[str, object]:
        """One review on a new connection (so the kernel picks a worker each time)."""
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        review = json.dumps(make_review(make_pod("contoso.azurecr.io/app:1"))).encode()
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}/mutate",
            data=review,
            headers={"Content-Type": "application/json", "Connection": "close"},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as r:  # noqa: S310
            doc: dict[str, object] = json.loads(r.read())
        return doc

    def output(self) -> list[dict[str, object]]:
        out, _ = self.process.communicate(timeout=30)
        return [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    serve, ca = loopback_serve(
        tmp_path,
        yaml.safe_dump(sample_document()),
        names_only=True,
        workers=2,
        log_format="json",
        log_level="debug",
        shutdown_delay=0.2,
    )
    port, health = serve.port, serve.health_port
    process = subprocess.Popen(
        serve.command(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    running = Replica(process, port, health, ca)
    try:
        deadline = time.monotonic() + 20  # a cold interpreter imports aiohttp, azure, boto3
        while True:
            try:
                running.admit()
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1) as r:
                    if r.status == 200 and len(running.secondaries()) == 1:
                        break
            except OSError:
                pass
            assert process.poll() is None, "serve exited early"
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_both_workers_answer_on_the_one_port_and_sigterm_stops_both(replica: Replica) -> None:
    [secondary] = replica.secondaries()
    for _ in range(40):  # 40 new connections: both workers get some (odds of not: 2**-39)
        doc = replica.admit()
        assert isinstance(doc["response"], dict)
        assert doc["response"]["patchType"] == "JSONPatch"
    replica.process.send_signal(signal.SIGTERM)
    records = replica.output()
    assert replica.process.returncode == 0
    patched_by = {
        r.get("worker") for r in records if str(r["msg"]).startswith("patched imagePullSecrets")
    }
    assert patched_by == {"0", "1"}
    assert not Path(f"/proc/{secondary}").exists()


def admissions_counted(replica: Replica) -> float:
    """The replica's pull_secret_webhook_admissions_total, all results, from /metrics."""
    url = f"http://127.0.0.1:{replica.health}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("pull_secret_webhook_admissions_total{")
    )


def test_metrics_count_the_admissions_of_every_worker(replica: Replica) -> None:
    before = admissions_counted(replica)
    for _ in range(40):
        replica.admit()
    deadline = time.monotonic() + 10  # a secondary sends its counts every second
    while (counted := admissions_counted(replica)) < before + 40:
        assert time.monotonic() < deadline, f"/metrics counted {counted - before} of 40"
        time.sleep(0.2)
    time.sleep(3 * PUSH_SECONDS)  # the last counts of both, the fixture's admissions too
    counted = admissions_counted(replica)
    replica.process.send_signal(signal.SIGTERM)
    patched_by = [
        r.get("worker")
        for r in replica.output()
        if str(r["msg"]).startswith("patched imagePullSecrets")
    ]
    assert set(patched_by) == {"0", "1"}  # both workers answered some
    assert counted == len(patched_by)  # every one counted, none twice


def test_a_worker_that_dies_stops_the_whole_replica_with_an_error(replica: Replica) -> None:
    [secondary] = replica.secondaries()
    os.kill(secondary, signal.SIGKILL)
    records = replica.output()  # the primary notices, drains and exits
    assert replica.process.returncode == 1
    assert any("exited with code -9" in str(r["msg"]) for r in records)


def test_a_secondary_does_not_outlive_its_primary(replica: Replica) -> None:
    [secondary] = replica.secondaries()
    replica.process.kill()
    replica.process.communicate()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{secondary}").exists():
        status = Path(f"/proc/{secondary}/stat").read_text().rpartition(")")[2].split()[0]
        if status == "Z":  # ended; only waiting to be reaped by init
            break
        assert time.monotonic() < deadline, "the secondary kept running without its primary"
        time.sleep(0.1)
