"""A cold storm on the real control plane: many admissions at once, no secret made yet.

The whole product (``devenv/stack.py``): a real kube-apiserver, two webhook replicas
(``python -m webhook serve`` under the webhook's ServiceAccount, behind a round-robin
balancer) registered with ``failurePolicy: Fail``, the Azure emulator (Entra ID and
the ACR login servers) and moto for ECR. The identity endpoints (Entra ID's token
endpoint, ACR's ``/oauth2/exchange``, ECR's API) answer 100 ms late, as distant ones
do. Then ``--pods`` pods are created at once across ``--namespaces`` opted-in
namespaces, each pod with two images from two of three registries (``acr``,
``acr-slow``, ``ecr``), so that every namespace needs two pull secrets. Before that, as
the baseline of the same run, the same pods are created the same way in as many
namespaces that did not opt in: what the API server alone does on this machine. After
the storm, the same pods twice more: with every pull secret made (warm), then answered
by ``bench/tlsfloor.go`` (a minimal Go TLS server's fixed patch) registered in the
webhook's place: the least any webhook costs here.

What must hold (the run exits 1 otherwise): no failed or unpatched admission, at most
one write per pull Secret, at most one identity exchange per registry and identity
per replica, cold p99 / baseline p99 at most ``--cold-ratio`` (2.5, or 2.0 with
``--clients``) and warm p99 / baseline p99 at most ``--warm-ratio`` (1.5). How each
figure is counted: ``devenv/support/storm.py``. Writes ``bench/results/storm.json``.

    .venv/bin/python -m bench.storm [--pods 1000] [--namespaces 100] [--latency 0.1]
    .venv/bin/python -m bench.storm --clients 40 --json bench/results/storm-clients.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import tlsfloor
from bench.footprint import await_idle
from devenv.controlplane import ControlPlane, locate
from devenv.peers.traffic import ACR_EXCHANGE, ENTRA_TOKEN
from devenv.stack import Replica, Stack, running_stack
from devenv.support import storm
from webhook.kube.objects import GROUP, MARKER_PLURAL, PLURAL
from webhook.server.connections import SWEEP_SECONDS, TRIM_MIN_INTERVAL

#: Answers of the identity endpoints are held this long (``--latency``).
LATENCY_SECONDS = 0.1
#: The targets, as ratios of p99s to the baseline's p99 in the same run (so that the
#: machine's speed cancels out): the cold storm, the same pods again with every secret
#: made, and the cold storm when 40 clients create the pods on a new connection each.
COLD_RATIO = 2.5
WARM_RATIO = 1.5
CLIENTS_COLD_RATIO = 2.0
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


def rss_mib(replica: Replica) -> tuple[float, float]:
    """The replica's resident memory now and at its peak."""
    pid = replica.process.pid
    return storm.status_kib(pid, "VmRSS") / 1024, storm.status_kib(pid, "VmHWM") / 1024


async def settled_rss_mib(replicas: list[Replica]) -> list[float]:
    """Each replica's resident memory once it is idle: after the interval in which it
    hands freed memory back (``webhook.server.connections``), and 3 s without CPU."""
    await asyncio.sleep(TRIM_MIN_INTERVAL + 2 * SWEEP_SECONDS)
    for r in replicas:
        await asyncio.to_thread(await_idle, r.process.pid)
    return [rss_mib(r)[0] for r in replicas]


#: What the webhook writes, by the API server's resource name: the pull Secret, its
#: record (webhook.pullsecrets.records.ManagedSecret) and its marker (records.marker_object).
WRITTEN_RESOURCES = ("secrets", PLURAL, MARKER_PLURAL)
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def apiserver_writes(metrics: str) -> dict[str, dict[str, int]]:
    """Writes the API server served (any client, any outcome), by resource and verb, from
    its own ``apiserver_request_total``: it also counts writes that changed nothing or
    were refused, which a watch never shows. A write answered 2xx counts under its verb,
    one refused under its verb and code (``"POST 409"``: a create that met an object of
    that name, which etcd refuses without storing anything)."""
    out: dict[str, dict[str, int]] = {r: {} for r in WRITTEN_RESOURCES}
    for labels, value in storm.counter_values(metrics, "apiserver_request_total").items():
        resource = re.search(r'resource="([^"]*)"', labels)
        verb = re.search(r'verb="([^"]*)"', labels)
        code = re.search(r'code="([^"]*)"', labels)
        if resource and verb and resource.group(1) in out and verb.group(1) in WRITE_VERBS:
            verbs = out[resource.group(1)]
            key = verb.group(1)
            if code and not code.group(1).startswith("2"):
                key = f"{key} {code.group(1)}"
            verbs[key] = verbs.get(key, 0) + int(value)
    return out


def writes_delta(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        resource: {
            verb: n - before[resource].get(verb, 0)
            for verb, n in verbs.items()
            if n != before[resource].get(verb, 0)
        }
        for resource, verbs in after.items()
    }


async def stored_sizes(cp: ControlPlane, namespaces: list[str]) -> dict[str, dict[str, float]]:
    """The webhook's objects as etcd holds them (the API server's encoding: protobuf for
    Secrets, JSON for custom resources): how many, and the mean bytes of key and value,
    read with etcd's own JSON gateway (``/v3/kv/range``) on its loopback client port."""
    prefixes = {
        "secrets": [f"/registry/secrets/{ns}/" for ns in namespaces],
        PLURAL: [f"/registry/{GROUP}/{PLURAL}/"],
        MARKER_PLURAL: [f"/registry/{GROUP}/{MARKER_PLURAL}/{ns}/" for ns in namespaces],
    }
    url = f"http://127.0.0.1:{cp.ports.etcd_client}/v3/kv/range"
    out: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession() as session:
        for kind, keys in prefixes.items():
            count, key_bytes, value_bytes = 0, 0, 0
            for prefix in keys:
                end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                body = {"key": _b64(prefix), "range_end": _b64(end)}
                async with session.post(url, json=body) as response:
                    doc = await response.json(content_type=None)
                for kv in doc.get("kvs", []):
                    count += 1
                    key_bytes += len(base64.b64decode(kv["key"]))
                    value_bytes += len(base64.b64decode(kv.get("value", "")))
            out[kind] = {
                "objects": count,
                "mean_key_bytes": key_bytes / count if count else 0.0,
                "mean_value_bytes": value_bytes / count if count else 0.0,
            }
    return out


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: Where the API server's flow control puts ServiceAccounts' requests (the default
#: FlowSchema ``service-accounts``): the webhook's calls wait in this priority level's queues.
DEFAULT_PRIORITY_LEVEL = "workload-low"
INSTALL_MD = Path(__file__).resolve().parent.parent / "docs" / "install.md"


def documented_flow_schema(level: str) -> dict[str, Any]:
    """docs/install.md's FlowSchema for the webhook's ServiceAccount, sending it to ``level``."""
    for block in re.findall(r"^```yaml\n(.*?)^```", INSTALL_MD.read_text(), re.S | re.M):
        if "kind: FlowSchema" in block:
            schema: dict[str, Any] = yaml.safe_load(block)
            schema["spec"]["priorityLevelConfiguration"]["name"] = level
            return schema
    raise RuntimeError(f"no FlowSchema in {INSTALL_MD}")


def flow_control_wait(metrics: str, level: str) -> tuple[float, float]:
    """(requests, seconds) that waited in priority level ``level``, from /metrics."""
    found = []
    for suffix in ("_count", "_sum"):
        name = "apiserver_flowcontrol_request_wait_duration_seconds" + suffix
        found.append(
            sum(
                value
                for labels, value in storm.counter_values(metrics, name).items()
                if f'priority_level="{level}"' in labels
            )
        )
    return found[0], found[1]


#: The API server's own latency is read for these resources: the webhook's three, the
#: storm's pods and the Events a pending admission leaves.
TIMED_RESOURCES = (*WRITTEN_RESOURCES, "pods", "events")


def apiserver_latency(metrics: str) -> dict[str, tuple[float, float]]:
    """(requests, seconds) the API server spent serving each "VERB resource" of
    TIMED_RESOURCES (``apiserver_request_duration_seconds``: from the request's arrival,
    flow control's queueing and any admission webhook call included, to its answer)."""
    out: dict[str, tuple[float, float]] = {}
    for suffix, at in (("_count", 0), ("_sum", 1)):
        name = "apiserver_request_duration_seconds" + suffix
        for labels, value in storm.counter_values(metrics, name).items():
            resource = re.search(r'resource="([^"]*)"', labels)
            verb = re.search(r'verb="([^"]*)"', labels)
            if not (resource and verb) or resource.group(1) not in TIMED_RESOURCES:
                continue
            key = f"{verb.group(1)} {resource.group(1)}"
            pair = list(out.get(key, (0.0, 0.0)))
            pair[at] += value
            out[key] = (pair[0], pair[1])
    return out


def latency_delta(
    after: dict[str, tuple[float, float]], before: dict[str, tuple[float, float]]
) -> dict[str, dict[str, float]]:
    """Requests and their mean seconds between two readings of ``apiserver_latency``."""
    out = {}
    for key, (count, total) in sorted(after.items()):
        n = count - before.get(key, (0.0, 0.0))[0]
        if n > 0:
            seconds = total - before.get(key, (0.0, 0.0))[1]
            out[key] = {"requests": n, "mean_seconds": seconds / n}
    return out


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
    calm = [f"calm-{i}" for i in range(args.namespaces)]
    fresh = [f"floor-{i}" for i in range(args.namespaces)]
    per_namespace = args.pods // args.namespaces
    api = storm.admin_api(cp, args.pods)
    level = args.priority_level or DEFAULT_PRIORITY_LEVEL
    try:
        if args.priority_level:
            status, doc = await api.create(
                "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas",
                documented_flow_schema(args.priority_level),
            )
            if status != 201:
                raise RuntimeError(f"FlowSchema not created: {status} {doc.get('message')}")
        await storm.make_namespaces(api, names)
        await storm.make_namespaces(api, fresh)
        # The baseline: the same pods, created the same way, in namespaces that did not
        # opt in, so the API server never calls the webhook (its namespaceSelector).
        await storm.make_namespaces(api, calm, opt_in=False)
        counters_calm = replica_counters(st.replicas)
        without = await storm.create_at_once(
            api, calm, per_namespace, registries, clients=args.clients
        )
        called = sum(
            sum(delta(a, b)["admissions"].values())
            for a, b in zip(replica_counters(st.replicas), counters_calm, strict=True)
        )
        add_latency(st, args.latency)
        counters_before = replica_counters(st.replicas)
        metrics_before = await api.get("/metrics")
        apiserver_before = apiserver_writes(metrics_before)
        waits_before = flow_control_wait(metrics_before, level)
        result = await storm.run(
            api,
            names,
            per_namespace,
            registries,
            lambda: storm.identity_calls(st),
            clients=args.clients,
        )
        counters_storm = replica_counters(st.replicas)
        metrics_after = await api.get("/metrics")
        apiserver_after = apiserver_writes(metrics_after)
        sizes = await stored_sizes(cp, names)
        waits_after = flow_control_wait(metrics_after, level)
        latency = latency_delta(apiserver_latency(metrics_after), apiserver_latency(metrics_before))
        rss_after_storm = [rss_mib(r) for r in st.replicas]
        settled_after_storm = await settled_rss_mib(st.replicas)
        # And once more with every pull secret made: what the admissions cost alone.
        again = await storm.create_at_once(
            api, names, per_namespace, registries, "again", clients=args.clients
        )
        settled_after_warm = await settled_rss_mib(st.replicas)
        # The same pods once more, answered by the least a TLS webhook can be here.
        floor = await floor_storm(st, api, names, per_namespace, registries, args.clients)
        # And in namespaces with no pull secret yet, the least a webhook that makes them
        # can cost: one write per Secret, nothing else.
        cold_floor = await floor_storm(
            st, api, fresh, per_namespace, registries, args.clients, making=cp.server
        )
    finally:
        await api.close()
    counters_end = replica_counters(st.replicas)
    counters = [delta(a, b) for a, b in zip(counters_end, counters_before, strict=True)]
    # The time each admission spent in the webhook, from the replicas' own histograms:
    # the storm's, then the warm phase's.
    held = {
        phase: {
            f"p{q}": _finite(
                storm.histogram_bucket(
                    (
                        {
                            le: n - b["admission_seconds"].get(le, 0.0)
                            for le, n in a["admission_seconds"].items()
                        }
                        for a, b in zip(after, before, strict=True)
                    ),
                    q,
                )
            )
            for q in (50, 90, 99)
        }
        for phase, after, before in (
            ("cold", counters_storm, counters_before),
            ("warm", counters_end, counters_storm),
        )
    }
    seconds = [c.seconds for c in result.created]
    exchange_keys = [r.entry for r in registries]
    problems = storm.violations(result, len(st.replicas), exchange_keys)
    for r, c in zip(st.replicas, counters, strict=True):
        for labels, n in c["credential_exchanges"].items():
            if n > 1:
                problems.append(f"{r.name}: {n:g} exchanges {labels}")
    p99 = storm.percentile(seconds, 99)
    if called:
        problems.append(f"the baseline called the webhook {called:g} times")
    calm_failed = [c for c in without if c.status != 201]
    if calm_failed:
        problems.append(f"baseline: {len(calm_failed)} pods not created, e.g. {calm_failed[0]}")
    calm_seconds = [c.seconds for c in without]
    calm_p99 = storm.percentile(calm_seconds, 99)
    warm_wrong = [c for c in again if c.status != 201 or len(c.pull_secrets) != 2]
    if warm_wrong:
        problems.append(f"warm: {len(warm_wrong)} pods not created and patched: {warm_wrong[0]}")
    warm_seconds = [c.seconds for c in again]
    floor_wrong = [c for c in floor if c.status != 201 or len(c.pull_secrets) != 2]
    if floor_wrong:
        problems.append(f"floor: {len(floor_wrong)} pods not created and patched")
    floor_seconds = [c.seconds for c in floor]
    cold_floor_wrong = [c for c in cold_floor if c.status != 201 or len(c.pull_secrets) != 2]
    if cold_floor_wrong:
        problems.append(f"cold floor: {len(cold_floor_wrong)} pods not created and patched")
    cold_floor_seconds = [c.seconds for c in cold_floor]
    ratios = {
        "cold": p99 / calm_p99,
        "warm": storm.percentile(warm_seconds, 99) / calm_p99,
        "floor": storm.percentile(floor_seconds, 99) / calm_p99,
        "cold_floor": storm.percentile(cold_floor_seconds, 99) / calm_p99,
    }
    targets = {"cold": args.cold_ratio, "warm": args.warm_ratio}
    for phase, target in targets.items():
        if ratios[phase] > target:
            problems.append(f"{phase} p99 / baseline p99 {ratios[phase]:.2f} > {target:g}")
    per_secret = result.writes["secrets"].per_object(names)
    apiserver = writes_delta(apiserver_after, apiserver_before)
    new_secrets = len(per_secret)
    return {
        "settings": {
            "pods": len(result.created),
            "namespaces": args.namespaces,
            "registries": exchange_keys,
            "replicas": len(st.replicas),
            "identity_latency_seconds": args.latency,
            "client_connections": api.connections,
            "clients": args.clients,
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
        "pod_create_seconds_without_webhook": {
            "p50": storm.percentile(calm_seconds, 50),
            "p90": storm.percentile(calm_seconds, 90),
            "p99": calm_p99,
            "max": max(calm_seconds),
        },
        "pod_create_seconds_warm": {
            "p50": storm.percentile(warm_seconds, 50),
            "p90": storm.percentile(warm_seconds, 90),
            "p99": storm.percentile(warm_seconds, 99),
            "max": max(warm_seconds),
        },
        "pod_create_seconds_floor": _spread(floor_seconds),
        "pod_create_seconds_cold_floor": _spread(cold_floor_seconds),
        "webhook_admission_seconds": held,
        "p99_ratio_to_baseline": ratios,
        "ratio_targets": targets,
        "storm_seconds": result.storm_seconds,
        "settle_seconds": result.settle_seconds,
        "identity_calls": result.identity_calls,
        "flow_control": {
            "priority_level": level,
            "flow_schema": bool(args.priority_level),
            "requests": waits_after[0] - waits_before[0],
            "wait_seconds": waits_after[1] - waits_before[1],
        },
        "apiserver_latency_cold": latency,
        "writes": {
            "secrets": result.writes["secrets"].by_kind(names),
            "secrets_distinct": len(per_secret),
            "secrets_max_per_secret": max(per_secret.values(), default=0),
            "records": result.writes["records"].by_kind(),
            "markers": result.writes["markers"].by_kind(names),
            "apiserver_secret_writes": sum(apiserver["secrets"].values()),
            "apiserver": apiserver,
            "apiserver_per_new_secret": {
                resource: sum(verbs.values()) / new_secrets if new_secrets else 0.0
                for resource, verbs in apiserver.items()
            },
            "apiserver_stored_per_new_secret": {
                resource: sum(n for verb, n in verbs.items() if " " not in verb) / new_secrets
                if new_secrets
                else 0.0
                for resource, verbs in apiserver.items()
            },
        },
        "stored": sizes,
        "replicas": [
            {
                "name": r.name,
                "rss_mib": rss[0],
                "peak_rss_mib": rss[1],
                "rss_settled_mib": settled,
                "rss_after_warm_settled_mib": warm,
                **c,
            }
            for r, c, rss, settled, warm in zip(
                st.replicas,
                counters,
                rss_after_storm,
                settled_after_storm,
                settled_after_warm,
                strict=True,
            )
        ],
        "violations": problems,
        # Every pod of each phase: namespace, name, seconds from the phase's start to its
        # create, the create's seconds (the creator's clock), in creation order.
        "pods": {
            phase: [[c.namespace, c.name, round(c.began, 4), round(c.seconds, 4)] for c in created]
            for phase, created in (
                ("cold", result.created),
                ("baseline", without),
                ("warm", again),
                ("floor", floor),
                ("cold_floor", cold_floor),
            )
        },
    }


def _spread(seconds: list[float]) -> dict[str, float]:
    return {
        "p50": storm.percentile(seconds, 50),
        "p90": storm.percentile(seconds, 90),
        "p99": storm.percentile(seconds, 99),
        "max": max(seconds),
    }


async def floor_storm(
    st: Stack,
    api: storm.Api,
    names: list[str],
    per_namespace: int,
    registries: list[storm.Registry],
    clients: int,
    *,
    making: str = "",
) -> list[storm.Created]:
    """The warm storm's pods once more, with ``bench/tlsfloor.go`` registered in the
    webhook's place behind a balancer of its own (as the replicas are behind theirs),
    answering every review with the patch a pod of the storm gets. With ``making`` (the
    API server's URL), in namespaces with no pull secret yet: the server first makes the
    namespace's two Secrets as the webhook's ServiceAccount (a POST each, at once, on the
    namespace's first review; the others wait for them), the cold storm's least."""
    secrets = ("psw-floor-a", "psw-floor-b")
    patch = tlsfloor.fixed_patch(list(secrets))
    cert, key = st.workdir / "tls.crt", st.workdir / "tls.key"
    how = None
    if making:
        assert st.service_account_dir is not None
        account = st.service_account_dir
        how = tlsfloor.SecretMaking(making, account / "ca.crt", account / "token", secrets)
    with (
        tlsfloor.serving(cert, key, patch, st.workdir, how) as go,
        st.routed_to([go], names[0]),
    ):
        created = await storm.create_at_once(
            api,
            names,
            per_namespace,
            registries,
            "coldfloor" if making else "floor",
            clients=clients,
        )
        made = tlsfloor.secrets_created(go) if making else 0
    if making and made != len(secrets) * len(names):
        # Writes that failed cost less than writes: such a floor would not be one.
        raise RuntimeError(
            f"the cold floor made {made} of {len(secrets) * len(names)} Secrets "
            f"(its log: {st.workdir / 'tlsfloor.log'})"
        )
    return created


def _finite(bounds: tuple[float, float]) -> tuple[float, float | None]:
    """A bucket's bounds for JSON, which has no infinity: the last bucket's upper is None."""
    return bounds[0], None if bounds[1] == float("inf") else bounds[1]


def _bucket(bounds: tuple[float, float | None]) -> str:
    low, high = bounds
    return f"{low:g}-{high:g} s" if high is not None else f"> {low:g} s"


def table(out: dict[str, Any]) -> str:
    s, a, t, w = out["settings"], out["admissions"], out["pod_create_seconds"], out["writes"]
    b, m = out["pod_create_seconds_without_webhook"], out["pod_create_seconds_warm"]
    g, r = out["pod_create_seconds_floor"], out["p99_ratio_to_baseline"]
    calls, f = out["identity_calls"], out["flow_control"]
    rows = [
        ("pods / namespaces / replicas", f"{s['pods']} / {s['namespaces']} / {s['replicas']}"),
        (
            "how the pods are created",
            f"{s['clients']} clients, a new connection per create"
            if s["clients"]
            else "all at once, one kept connection each",
        ),
        ("identity endpoint latency", f"{s['identity_latency_seconds'] * 1000:.0f} ms"),
        (
            "admissions created / failed / unpatched",
            f"{a['created']} / {a['failed']} / {a['unpatched']}",
        ),
        (
            "pod create p50 / p90 / p99 / max",
            f"{t['p50']:.3f} / {t['p90']:.3f} / {t['p99']:.3f} / {t['max']:.3f} s",
        ),
        (
            "same pods, no webhook (baseline, same run)",
            f"{b['p50']:.3f} / {b['p90']:.3f} / {b['p99']:.3f} / {b['max']:.3f} s",
        ),
        (
            "same pods again, every secret made (warm)",
            f"{m['p50']:.3f} / {m['p90']:.3f} / {m['p99']:.3f} / {m['max']:.3f} s",
        ),
        (
            "same pods again, a Go net/http server's fixed patch (floor)",
            f"{g['p50']:.3f} / {g['p90']:.3f} / {g['p99']:.3f} / {g['max']:.3f} s",
        ),
        *(
            (
                f"time in the webhook, {phase}: p50 / p90 / p99 (its histogram's bucket)",
                " / ".join(
                    _bucket(out["webhook_admission_seconds"][phase][p])
                    for p in ("p50", "p90", "p99")
                ),
            )
            for phase in ("cold", "warm")
        ),
        (
            "p99 / baseline p99: cold / warm / Go floor",
            f"{r['cold']:.2f}x / {r['warm']:.2f}x / {r['floor']:.2f}x",
        ),
        ("warm p99 / Go floor p99", f"{r['warm'] / r['floor']:.2f}x"),
        (
            "new namespaces, the Go server making 2 Secrets each first (cold floor)",
            "{p50:.3f} / {p90:.3f} / {p99:.3f} / {max:.3f} s".format(
                **out["pod_create_seconds_cold_floor"]
            ),
        ),
        ("cold floor p99 / baseline p99", f"{r['cold_floor']:.2f}x"),
        ("cold p99 / cold floor p99", f"{r['cold'] / r['cold_floor']:.2f}x"),
        ("storm wall time", f"{out['storm_seconds']:.2f} s"),
        *((f"exchanges {k} (endpoint's own count)", str(calls.get(k, 0))) for k in s["registries"]),
        ("Entra ID tokens (emulator's count)", str(calls.get("entra", 0))),
        (
            "pull Secret writes (watch) / distinct / max per Secret",
            f"{sum(w['secrets'].values())} / {w['secrets_distinct']} / "
            f"{w['secrets_max_per_secret']}",
        ),
        ("Secret writes (API server's request count)", str(w["apiserver_secret_writes"])),
        *(
            (
                f"API server's writes of {resource} / per new Secret",
                f"{json.dumps(w['apiserver'][resource])} / "
                f"{w['apiserver_per_new_secret'][resource]:.2f}",
            )
            for resource in WRITTEN_RESOURCES
        ),
        (
            "API server's writes per new Secret, all three: requests / stored (2xx)",
            f"{sum(w['apiserver_per_new_secret'].values()):.2f} / "
            f"{sum(w['apiserver_stored_per_new_secret'].values()):.2f}",
        ),
        *(
            (
                f"stored in etcd: {kind} objects / mean key + value bytes",
                f"{v['objects']:.0f} / {v['mean_key_bytes']:.0f} + {v['mean_value_bytes']:.0f}",
            )
            for kind, v in out["stored"].items()
        ),
        (
            f"requests queued by flow control ({f['priority_level']}) / mean wait",
            f"{f['requests']:.0f} / "
            f"{f['wait_seconds'] / f['requests'] if f['requests'] else 0.0:.3f} s",
        ),
        *(
            (
                f"API server, cold: {key} requests / mean seconds",
                f"{v['requests']:.0f} / {v['mean_seconds']:.3f} s",
            )
            for key, v in out["apiserver_latency_cold"].items()
        ),
        ("record writes (watch)", json.dumps(w["records"])),
        ("marker writes (watch)", json.dumps(w["markers"])),
        *(
            (
                f"{r['name']} RSS after the storm: at once / settled / peak",
                f"{r['rss_mib']:.1f} / {r['rss_settled_mib']:.1f} / {r['peak_rss_mib']:.1f} MiB",
            )
            for r in out["replicas"]
        ),
        *(
            (
                f"{r['name']} RSS after warm, settled",
                f"{r['rss_after_warm_settled_mib']:.1f} MiB",
            )
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
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="create the pods by this many clients, each create on a new connection "
        "(default: all at once, on connections opened beforehand)",
    )
    parser.add_argument("--cold-ratio", type=float, help="target cold p99 / baseline p99")
    parser.add_argument("--warm-ratio", type=float, default=WARM_RATIO)
    parser.add_argument(
        "--priority-level",
        help="apply docs/install.md's FlowSchema first, sending the webhook's requests to "
        "this priority level (workload-high, as documented)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/storm.json"))
    args = parser.parse_args()
    if args.pods % args.namespaces:
        parser.error("--pods must be a multiple of --namespaces")
    if args.cold_ratio is None:
        args.cold_ratio = CLIENTS_COLD_RATIO if args.clients else COLD_RATIO
    load_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(locate()) as cp,
        # Nothing is collected or renewed during the run: the storm's writes are all.
        running_stack(
            cp, Path(tmp) / "stack", refresh_interval=5, gc_grace=600, no_prefetch=()
        ) as st,
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
