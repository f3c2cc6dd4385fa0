"""docs/metrics.md lists exactly what a running replica exports: every metric family of a
real ``serve``'s /metrics, with its type and label names, and nothing else."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_serve
from webhook.telemetry.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "metrics.md"
CONFIG = """\
registries:
  - {name: harbor, kind: generic, hosts: [harbor.example.com], auth: {secretRef: {name: h}}}
"""
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \|")


def documented() -> dict[str, tuple[str, set[str]]]:
    """metric -> (type, label names), from the page's table."""
    out: dict[str, tuple[str, set[str]]] = {}
    for line in PAGE.read_text().splitlines():
        found = ROW.match(line)
        if found is None:
            continue
        cell = found["labels"].strip()
        # "`result`: `ok`, `error`; `entry`: …": each part names one label first.
        labels = set() if cell == "—" else {part.split("`")[1] for part in cell.split("; ")}
        assert found["name"] not in out, f"{found['name']} listed twice"
        out[found["name"]] = (found["type"], labels)
    return out


def exported(health_port: int) -> dict[str, tuple[str, set[str]]]:
    """metric (as its samples are named) -> (type, label names), from a real /metrics;
    label names of a family no sample shows yet come from the replica's declarations."""
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    declared = {
        name: set(collector._labelnames)
        for collector, names in Metrics().registry._collector_to_names.items()
        for name in names
        if hasattr(collector, "_labelnames")
    }
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # the _created series of a histogram, parsed as its own family
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
        out[name] = (family.type, labels | declared.get(name, set()))
    return out


def test_the_metrics_page_lists_every_metric_a_replica_exports(tmp_path: Path) -> None:
    serve, ca = loopback_serve(tmp_path, CONFIG, names_only=True)
    process = subprocess.Popen(
        serve.command(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        serve.wait_ready(process, timeout=30)
        # One admission, so the labelled admission counter shows a sample.
        request = urllib.request.Request(
            f"https://127.0.0.1:{serve.port}/mutate",
            data=json.dumps(make_review(make_pod("harbor.example.com/app:1"))).encode(),
            headers={"Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        with urllib.request.urlopen(request, context=context, timeout=10):  # noqa: S310
            pass
        real = exported(serve.health_port)
    finally:
        process.terminate()
        process.wait(30)
    page = documented()
    assert sorted(set(real) - set(page)) == [], "exported but not in docs/metrics.md"
    assert sorted(set(page) - set(real)) == [], "in docs/metrics.md but not exported"
    for name, (kind, labels) in real.items():
        assert page[name] == (kind, labels), name
