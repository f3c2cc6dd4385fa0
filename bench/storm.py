"""A cold storm on the real control plane: many admissions at once, no secret made yet.

The whole product (``devenv/stack.py``): a real kube-apiserver, two webhook replicas
(``python -m webhook serve`` under the webhook's ServiceAccount, behind a round-robin
balancer) registered with ``failurePolicy: Fail``, the Azure emulator (Entra ID and
the ACR login servers) and moto for ECR. The identity endpoints (Entra ID's token
endpoint, ACR's ``/oauth2/exchange``, ECR's API) answer 100 ms late, as distant ones
do. Then ``--pods`` pods are created at once across ``--namespaces`` opted-in
namespaces, each pod with two images from two of three registries (``acr``,
``acr-slow``, ``ecr``), so that every namespace needs two pull secrets.

What must hold (the run exits 1 otherwise): no failed or unpatched admission, at most
one write per pull Secret, at most one identity exchange per registry and identity
per replica, a pod-create p99 of at most ``--p99`` seconds. How each figure is
counted: ``devenv/support/storm.py``. Writes ``bench/results/storm.json``.

    .venv/bin/python -m bench.storm [--pods 1000] [--namespaces 100] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devenv.controlplane import ControlPlane, locate
from devenv.peers.traffic import ACR_EXCHANGE, ENTRA_TOKEN
from devenv.stack import Replica, Stack, running_stack
from devenv.support import storm

#: Answers of the identity endpoints are held this long (``--latency``).
LATENCY_SECONDS = 0.1
#: The target for pod creation through the API server during the storm.
P99_SECONDS = 1.0
#: Holds for as long as any benchmark runs.
FOREVER = 10**9


def add_latency(st: Stack, seconds: float) -> None:
    assert st.emulator is not None and st.ecr_api is not None
    for endpoint in (ENTRA_TOKEN, ACR_EXCHANGE):
        st.emulator.traffic.inject_fault(endpoint, status=None, delay=seconds, count=FOREVER)
    st.ecr_api.proxy.delay = seconds


def replica_counters(replicas: list[Replica]) -> list[dict[str, dict[str, float]]]:
    out = []
    for r in replicas:
        text = r.metrics()
        out.append(
            {
                **{
                    name: storm.counter_values(text, f"pull_secret_webhook_{name}_total")
                    for name in ("credential_exchanges", "secret_writes", "admissions")
                },
                "admission_seconds": storm.counter_values(
                    text, "pull_secret_webhook_admission_duration_seconds_bucket"
                ),
                "api_requests": storm.counter_values(
                    text, "pull_secret_webhook_api_requests_total"
                ),
            }
        )
    return out


def apiserver_secret_writes(metrics: str) -> int:
    """Writes to Secrets the API server served (any client), from its own /metrics."""
    total = 0.0
    for labels, value in storm.counter_values(metrics, "apiserver_request_total").items():
        if 'resource="secrets"' in labels and any(
            f'verb="{v}"' in labels for v in ("POST", "PUT", "PATCH", "DELETE")
        ):
            total += value
    return int(total)


def delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    return {
        name: {
            k: v - before[name].get(k, 0.0) for k, v in values.items() if v != before[name].get(k)
        }
        for name, values in after.items()
    }


async def measure(cp: ControlPlane, st: Stack, args: argparse.Namespace) -> dict[str, Any]:
    registries = storm.stack_registries(st)
    names = [f"storm-{i}" for i in range(args.namespaces)]
    api = storm.admin_api(cp, args.pods)
    try:
        await storm.make_namespaces(api, names)
        add_latency(st, args.latency)
        counters_before = replica_counters(st.replicas)
        apiserver_before = apiserver_secret_writes(await api.get("/metrics"))
        result = await storm.run(
            api,
            names,
            args.pods // args.namespaces,
            registries,
            lambda: storm.identity_calls(st),
        )
        apiserver_after = apiserver_secret_writes(await api.get("/metrics"))
    finally:
        await api.close()
    counters = [
        delta(a, b) for a, b in zip(replica_counters(st.replicas), counters_before, strict=True)
    ]
    seconds = [c.seconds for c in result.created]
    exchange_keys = [r.entry for r in registries]
    problems = storm.violations(result, len(st.replicas), exchange_keys)
    for r, c in zip(st.replicas, counters, strict=True):
        for labels, n in c["credential_exchanges"].items():
            if n > 1:
                problems.append(f"{r.name}: {n:g} exchanges {labels}")
    p99 = storm.percentile(seconds, 99)
    if p99 > args.p99:
        problems.append(f"pod-create p99 {p99:.3f}s > {args.p99:g}s")
    per_secret = result.writes["secrets"].per_object(names)
    return {
        "settings": {
            "pods": len(result.created),
            "namespaces": args.namespaces,
            "registries": exchange_keys,
            "replicas": len(st.replicas),
            "identity_latency_seconds": args.latency,
            "client_connections": api.connections,
        },
        "admissions": {
            "created": sum(c.status == 201 for c in result.created),
            "failed": sum(c.status != 201 for c in result.created),
            "unpatched": sum(
                c.status == 201 and len(c.pull_secrets) != result.images_per_pod
                for c in result.created
            ),
        },
        "pod_create_seconds": {
            "p50": storm.percentile(seconds, 50),
            "p90": storm.percentile(seconds, 90),
            "p99": p99,
            "max": max(seconds),
        },
        "storm_seconds": result.storm_seconds,
        "settle_seconds": result.settle_seconds,
        "identity_calls": result.identity_calls,
        "writes": {
            "secrets": result.writes["secrets"].by_kind(names),
            "secrets_distinct": len(per_secret),
            "secrets_max_per_secret": max(per_secret.values(), default=0),
            "records": result.writes["records"].by_kind(),
            "markers": result.writes["markers"].by_kind(names),
            "apiserver_secret_writes": apiserver_after - apiserver_before,
        },
        "replicas": [
            {
                "name": r.name,
                "rss_mib": storm.status_kib(r.process.pid, "VmRSS") / 1024,
                "peak_rss_mib": storm.status_kib(r.process.pid, "VmHWM") / 1024,
                **c,
            }
            for r, c in zip(st.replicas, counters, strict=True)
        ],
        "violations": problems,
    }


def table(out: dict[str, Any]) -> str:
    s, a, t, w = out["settings"], out["admissions"], out["pod_create_seconds"], out["writes"]
    calls = out["identity_calls"]
    rows = [
        ("pods / namespaces / replicas", f"{s['pods']} / {s['namespaces']} / {s['replicas']}"),
        ("identity endpoint latency", f"{s['identity_latency_seconds'] * 1000:.0f} ms"),
        (
            "admissions created / failed / unpatched",
            f"{a['created']} / {a['failed']} / {a['unpatched']}",
        ),
        (
            "pod create p50 / p90 / p99 / max",
            f"{t['p50']:.3f} / {t['p90']:.3f} / {t['p99']:.3f} / {t['max']:.3f} s",
        ),
        ("storm wall time", f"{out['storm_seconds']:.2f} s"),
        *((f"exchanges {k} (endpoint's own count)", str(calls.get(k, 0))) for k in s["registries"]),
        ("Entra ID tokens (emulator's count)", str(calls.get("entra", 0))),
        (
            "pull Secret writes (watch) / distinct / max per Secret",
            f"{sum(w['secrets'].values())} / {w['secrets_distinct']} / "
            f"{w['secrets_max_per_secret']}",
        ),
        ("Secret writes (API server's request count)", str(w["apiserver_secret_writes"])),
        ("record writes (watch)", json.dumps(w["records"])),
        ("marker writes (watch)", json.dumps(w["markers"])),
        *(
            (f"{r['name']} RSS / peak", f"{r['rss_mib']:.1f} / {r['peak_rss_mib']:.1f} MiB")
            for r in out["replicas"]
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(
        "violations: " + ("none" if not out["violations"] else "; ".join(out["violations"]))
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--latency", type=float, default=LATENCY_SECONDS)
    parser.add_argument("--p99", type=float, default=P99_SECONDS)
    parser.add_argument("--json", type=Path, default=Path("bench/results/storm.json"))
    args = parser.parse_args()
    if args.pods % args.namespaces:
        parser.error("--pods must be a multiple of --namespaces")
    load_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(locate()) as cp,
        # Nothing is collected or renewed during the run: the storm's writes are all.
        running_stack(cp, Path(tmp) / "stack", refresh_interval=5, gc_grace=600) as st,
    ):
        started = time.time()
        out = asyncio.run(measure(cp, st, args))
    out["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
    }
    print(table(out))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 1 if out["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
