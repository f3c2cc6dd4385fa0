"""Resident memory of one replica against what its watches know: namespaces, records,
markers and (the leader) pods, up to 10,000 namespaces and 100,000 pods.

Everything is real: the objects are created in a real kube-apiserver (etcd behind it)
and the replica is the real ``webhook serve`` of ``devenv/stack.py``, in-cluster as in
a pod (``devenv/incluster.py``: no kubeconfig loader imported) under the webhook's
ServiceAccount, the only replica, so the leader: it follows
Namespaces, its ManagedPullSecret records, the markers, and every Pod. The figure is
its VmRSS from /proc.

Each step adds opted-in namespaces, each with the webhook's pull Secret (made by the
benchmark as admin, with a placeholder credential), its marker and its record (Ready,
fresh), and ``--pods-per-namespace`` pods referencing the Secret. The webhook is not
registered while they are made: they are what an earlier storm would have left. Two
figures per step:

- ``watched``: the replica that was running while the objects were made, fed by watch
  events, once it has been idle (no CPU) for a few seconds;
- ``fresh``: a replica started afterwards, fed by the initial LISTs (pods paginated
  500 at a time), once idle; also its peak (VmHWM), which the LISTs set.

Then, at each step, that fresh replica once it leads: the requests it sends the API
server in ``--idle-seconds`` (60) of idle, as the API server logged them. The run's
control plane audits every request of the webhook's ServiceAccount (IDLE_AUDIT_POLICY,
Metadata level: who, verb, resource; no body), so the count is the API server's own and
leaves out the benchmark's and kube-controller-manager's requests; the API server's
``apiserver_request_total`` over the same window (every client) is kept beside it.

    .venv/bin/python -m bench.footprint [--steps 1000,5000,10000] [--pods-per-namespace 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from devenv.controlplane import ControlPlane, locate
from devenv.stack import (
    NAMESPACE,
    SERVICE_ACCOUNT,
    WEBHOOK_CONFIGURATION,
    Replica,
    Stack,
    running_stack,
)
from devenv.support import storm
from devenv.support.storm import Api
from webhook.admission.needs import pull_needs
from webhook.config.load import load_config
from webhook.kube.objects import GROUP, INJECT_LABEL, INJECT_VALUE, MARKER_PLURAL, PLURAL, VERSION
from webhook.pullsecrets.records import ManagedSecret, marker_object
from webhook.pullsecrets.secret import MANAGED_BY, MANAGER

#: The target for one replica's resident memory at the largest step.
TARGET_MIB = 120
#: Requests in flight while objects are made.
CONCURRENCY = 32
#: A replica counts as caught up once it used less than this CPU over IDLE_SECONDS.
IDLE_CPU_SECONDS = 0.05
IDLE_SECONDS = 3.0
#: How long the leader's requests are counted at each step.
LEADER_IDLE_SECONDS = 60.0
#: Who the webhook is to the API server (devenv/stack.py's ServiceAccount).
WEBHOOK_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
#: This run's control plane logs every request of the webhook's ServiceAccount, reads
#: and watches included, at the Metadata level (never a body), once: at its end, or for
#: a watch when it starts (a watch's ResponseStarted; its end is logged too and skipped).
IDLE_AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, Panic]
rules:
  - level: Metadata
    users: ["{WEBHOOK_USER}"]
  - level: None
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def await_idle(pid: int, limit: float = 600.0) -> float:
    """Seconds until the process has been idle for IDLE_SECONDS."""
    started = time.monotonic()
    last = cpu_seconds(pid)
    while True:
        time.sleep(IDLE_SECONDS)
        now = cpu_seconds(pid)
        if now - last < IDLE_CPU_SECONDS:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise TimeoutError(f"replica still busy after {limit:g}s")
        last = now


async def bounded(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


async def created(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST, retrying while a new namespace has no default ServiceAccount yet."""
    for _ in range(200):
        status, doc = await api.create(path, body)
        if status == 201:
            return doc
        if status == 403 and "serviceaccount" in str(doc.get("message", "")).lower():
            await asyncio.sleep(0.25)
            continue
        raise RuntimeError(f"POST {path}: {status} {doc.get('message', '')}")
    raise RuntimeError(f"POST {path}: no default ServiceAccount")


async def populate(
    api: Api, st: Stack, first: int, last: int, pods_per_namespace: int
) -> dict[str, float]:
    """Namespaces first..last-1 with a Secret, marker, record and pods each; seconds per kind."""
    assert st.config_path is not None
    config = load_config(st.config_path)
    [need] = pull_needs(config, storm.pod("p", [st.ecr_image]))
    secret_name = need.secret_name
    names = [f"known-{i}" for i in range(first, last)]
    took: dict[str, float] = {}

    async def namespace(ns: str) -> None:
        body = {"metadata": {"name": ns, "labels": {INJECT_LABEL: INJECT_VALUE}}}
        await created(api, "/api/v1/namespaces", body)

    async def secret_marker_record(ns: str) -> None:
        now = time.time()
        placeholder = base64.b64encode(b'{"auths":{}}').decode()
        secret = await created(
            api,
            f"/api/v1/namespaces/{ns}/secrets",
            {
                "metadata": {"name": secret_name, "labels": {MANAGED_BY: MANAGER}},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": placeholder},
            },
        )
        uid = secret["metadata"]["uid"]
        await created(
            api,
            f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{MARKER_PLURAL}",
            marker_object(ns, secret_name, uid),
        )
        record = ManagedSecret(
            ns,
            secret_name,
            need.entry.name,
            need.host,
            need.identity.key,
            state="Ready",
            secret_uid=uid,
            expires_at=now + 43200,
            refresh_at=now + 21600,
            claimed_at=now,
        )
        await created(
            api,
            f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}",
            record.to_object(NAMESPACE),
        )

    async def pods(ns: str) -> None:
        for i in range(pods_per_namespace):
            body = storm.pod(f"p-{i}", [st.ecr_image])
            body["spec"]["imagePullSecrets"] = [{"name": secret_name}]
            await created(api, f"/api/v1/namespaces/{ns}/pods", body)

    for kind, make in (
        ("namespaces", namespace),
        ("secret+marker+record", secret_marker_record),
        ("pods", pods),
    ):
        started = time.perf_counter()
        await bounded([functools.partial(make, ns) for ns in names])
        took[kind] = round(time.perf_counter() - started, 1)
    return took


async def fill(cp: ControlPlane, st: Stack, first: int, last: int, per_ns: int) -> dict[str, float]:
    api = storm.admin_api(cp, CONCURRENCY)
    try:
        return await populate(api, st, first, last, per_ns)
    finally:
        await api.close()


def audit_args(directory: Path) -> tuple[Path, list[str]]:
    """The audit log and the API server flags that replace the control plane's own audit
    policy and log with IDLE_AUDIT_POLICY (a flag given twice takes its last value)."""
    policy, log = directory / "idle-audit-policy.yaml", directory / "idle-audit.log"
    policy.write_text(IDLE_AUDIT_POLICY)
    return log, [f"--audit-policy-file={policy}", f"--audit-log-path={log}"]


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def webhook_requests(log: Path, start: float, end: float) -> Counter[str]:
    """The webhook's requests the API server received between ``start`` and ``end``, by
    "verb resource[/subresource]", from the audit log."""
    out: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if (event.get("user") or {}).get("username") != WEBHOOK_USER:
                continue
            verb = event.get("verb", "")
            # Each request once: a watch when it starts, anything else when it ends.
            if event.get("stage") != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
                continue
            if not start <= _when(event["requestReceivedTimestamp"]) < end:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", event.get("requestURI", ""))
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            out[f"{verb} {resource}"] += 1
    return out


def all_requests(cp: ControlPlane) -> Counter[str]:
    """``apiserver_request_total`` by "VERB resource" (every client; resource requests only)."""
    answer = cp.api("GET", "/metrics")
    out: Counter[str] = Counter()
    for labels, value in storm.counter_values(str(answer.body), "apiserver_request_total").items():
        resource = re.search(r'resource="([^"]*)"', labels)
        verb = re.search(r'verb="([^"]*)"', labels)
        if resource and verb and resource.group(1):
            out[f"{verb.group(1)} {resource.group(1)}"] += int(value)
    return out


def idle_leader(cp: ControlPlane, replica: Replica, audit: Path, seconds: float) -> dict[str, Any]:
    """The requests the replica sends in ``seconds`` once it leads and has made a pass."""
    deadline = time.monotonic() + 120
    while gauge(replica.metrics(), "pull_secret_webhook_leader") != 1.0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{replica.name} did not become the leader")
        time.sleep(1)
    # A pass over everything (the stack's refresh interval is 5 s), then idle again.
    time.sleep(10)
    await_idle(replica.process.pid)
    before, start = all_requests(cp), time.time()
    time.sleep(seconds)
    end, after = time.time(), all_requests(cp)
    # The API server writes an event when the request ends: let the last ones land.
    time.sleep(2)
    mine = webhook_requests(audit, start, end)
    everyone = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    return {
        "seconds": round(end - start, 1),
        "webhook_per_minute": round(sum(mine.values()) * 60 / (end - start), 1),
        "webhook_by_call": dict(sorted(mine.items())),
        "all_clients_per_minute": round(sum(everyone.values()) * 60 / (end - start), 1),
        "all_clients_by_call": dict(sorted(everyone.items())),
    }


def measure(
    cp: ControlPlane,
    st: Stack,
    steps: list[int],
    per_ns: int,
    audit: Path | None = None,
    idle_seconds: float = 0.0,
) -> list[dict[str, Any]]:
    [replica] = st.replicas
    rows: list[dict[str, Any]] = []
    made = 0
    for size in [0, *steps]:
        took: dict[str, float] = {}
        if size > made:
            took = asyncio.run(fill(cp, st, made, size, per_ns))
            made = size
        pid = replica.process.pid
        await_idle(pid)
        watched = storm.status_kib(pid, "VmRSS") / 1024
        replica = st.relaunch(replica, timeout=300)
        pid = replica.process.pid
        caught_up = await_idle(pid)
        row = {
            "namespaces": size,
            "pods": size * per_ns,
            "records": size,
            "markers": size,
            "create_seconds": took,
            "rss_watched_mib": round(watched, 1),
            "rss_fresh_mib": round(storm.status_kib(pid, "VmRSS") / 1024, 1),
            "peak_fresh_mib": round(storm.status_kib(pid, "VmHWM") / 1024, 1),
            "fresh_sync_seconds": round(caught_up, 1),
            "managed_secrets_gauge": gauge(
                replica.metrics(), "pull_secret_webhook_managed_secrets"
            ),
            "leader": gauge(replica.metrics(), "pull_secret_webhook_leader"),
        }
        if audit is not None and idle_seconds > 0:
            row["idle_leader_requests"] = idle_leader(cp, replica, audit, idle_seconds)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def gauge(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", default="1000,5000,10000", help="namespaces at each step")
    parser.add_argument("--pods-per-namespace", type=int, default=10)
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=LEADER_IDLE_SECONDS,
        help="count the leader's requests this long at each step (0: not at all)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/footprint.json"))
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",") if s]
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        audit, flags = audit_args(Path(tmp))
        with (
            ControlPlane(locate(), extra_apiserver_args=flags) as cp,
            running_stack(
                cp, Path(tmp) / "stack", replicas_wanted=1, refresh_interval=5, gc_grace=3600
            ) as st,
        ):
            cp.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION)
            rows = measure(cp, st, steps, args.pods_per_namespace, audit, args.idle_seconds)
    print(
        f"\n{'namespaces':>10} {'pods':>7} {'RSS watched':>12} {'RSS fresh':>10} "
        f"{'peak fresh':>11} {'made in (s)':>12}"
    )
    for r in rows:
        made = sum(r["create_seconds"].values())
        print(
            f"{r['namespaces']:>10} {r['pods']:>7} {r['rss_watched_mib']:>10.1f}Mi "
            f"{r['rss_fresh_mib']:>8.1f}Mi {r['peak_fresh_mib']:>9.1f}Mi {made:>12.0f}"
        )
    print(f"\n{'namespaces':>10} {'leader req/min':>15} {'all clients req/min':>20}  calls")
    for r in rows:
        idle = r.get("idle_leader_requests")
        if idle:
            print(
                f"{r['namespaces']:>10} {idle['webhook_per_minute']:>15.1f} "
                f"{idle['all_clients_per_minute']:>20.1f}  {idle['webhook_by_call']}"
            )
    worst = max(max(r["rss_watched_mib"], r["rss_fresh_mib"]) for r in rows)
    out = {
        "target_mib": TARGET_MIB,
        "rows": rows,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"largest RSS {worst:.1f} MiB (target {TARGET_MIB} MB); wrote {args.json}")
    return 0 if worst * 1.048576 <= TARGET_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
