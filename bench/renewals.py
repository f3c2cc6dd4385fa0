"""A renewal wave on the real control plane, time scaled: 30,000 secrets minted in one
storm, renewed by the leader, while another client's unrelated requests are timed.

The whole product (``devenv/stack.py``: a real kube-apiserver, two webhook replicas)
with ACR registries of the stack whose tokens live ``--token-seconds`` (and
``--fraction``): what hours of a real token's window do happens here in minutes.
The count is not scaled: ``--namespaces`` opted-in namespaces, each with a pull secret
for ``--registries`` registries (10,000 x 3 = 30,000 secrets). By default they are
made as such a storm leaves them (bench/footprint.py's way: the Secret with a
placeholder credential, its marker, its record Ready and due where ``renew_at`` puts
a secret of a credential issued at the storm's start, then a pod referencing them,
admitted by the webhook); ``--storm`` mints them through the webhook instead (one pod
per namespace, all at once): 30,000 took 12.6 minutes that way on this machine (made
directly, 900 took 22-27 s: about as fast).

Then, with every record in the API server and before the first is due, a prober sends
unrelated reads (a GET of a namespace, a LIST of ConfigMaps, one every 50 ms, from a
process of its own):

1. idle for ``--idle`` seconds, then ``--plain`` seconds (as long as the wave by
   default) beside a plain client (not the webhook) writing a Secret then a ConfigMap,
   one pair every ``1 / rate`` seconds at the rate the wave is expected at (the due
   times', at most the leader's bound), then idle again: what that write rate costs
   the reads with no webhook involved;
2. the wave: from the first due time for ``--wave`` seconds (or until every secret is
   renewed, or until the first credential is within ``URGENT_SECONDS`` of its end,
   where the override would let renewals through unpaced), the API server's own
   ``apiserver_request_total`` is read every second (the leader's renewal writes:
   PUTs of Secrets and of records);
3. the replicas are stopped, and the reads run idle, then beside the plain client at
   the leader's mean rate of the wave for ``--plain`` seconds.

Every phase reads the API server's /metrics once a second, as the wave's count of the
leader's writes does, so none is spared that observer's cost. With ``--gctrace`` the
control plane runs with ``GODEBUG=gctrace=1`` and kube-apiserver's garbage collections
are set beside each stretch of slow reads.

Through the plain client's phases and the wave, the CPU that etcd, kube-apiserver,
each replica and the benchmark's own process used is sampled every second; each run
of slow reads (over twice the idle p99, at least 20 ms) is reported with who was busy
then, and the wave's reads are set against the plain client's, side by side.

The records' due times (``refreshAt``, listed once they are made) give the spread the
hash put the secrets at; the per-second samples give when they were renewed.

    .venv/bin/python -m bench.renewals [--storm] [--namespaces 10000] [--registries 3]
        [--token-seconds 2400] [--fraction 0.5] [--idle 40] [--plain 360] [--wave 360]
        [--plain-second configmap|record] [--gctrace]

With the defaults (the default fraction, tokens of 40 minutes: a 3-hour token's
window 4.5 times faster) the 30,000 fall due over 9.5 minutes, 53 a second, more than
the leader's bound: the wave is paced by the bucket, the worst case for the other
clients. It is measured from the first due time until ``--wave`` seconds later.

Writes ``bench/results/renewals.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.storm import apiserver_writes
from devenv.controlplane import ControlPlane, locate
from devenv.peers.acr import AcrRegistry
from devenv.stack import NAMESPACE, Stack, running_stack
from devenv.support import storm
from webhook.admission.needs import pull_needs
from webhook.config.load import load_config
from webhook.credentials.base import EXPIRY_MARGIN, Credential
from webhook.kube.objects import (
    GROUP,
    INJECT_LABEL,
    INJECT_VALUE,
    MARKER_PLURAL,
    PLURAL,
    VERSION,
)
from webhook.kube.rfc3339 import to_rfc3339
from webhook.pullsecrets.records import ManagedSecret, marker_object
from webhook.pullsecrets.renewals import RENEWALS_PER_SECOND, URGENT_SECONDS, renew_at
from webhook.pullsecrets.secret import MANAGED_BY, MANAGER

#: The prober's pace: 20 reads a second, light beside the wave, enough for a p99.
PROBE_SECONDS = 0.05
#: Requests in flight while the namespaces and the storm's pods are made.
CONCURRENCY = 32
#: The leader scans its records this often (it schedules what falls due before the
#: next scan; the renewals go out at their own times).
INTERVAL_SECONDS = 10.0


async def probe(api: storm.Api, until: Any, out: list[tuple[float, float]]) -> None:
    """Unrelated reads, one at a time: (when, seconds) each, until ``until`` is set."""
    paths = ("/api/v1/namespaces/default", "/api/v1/namespaces/kube-system/configmaps?limit=20")
    i = 0
    while not until.is_set():
        started = time.perf_counter()
        await api.get(paths[i % 2])
        out.append((time.time(), time.perf_counter() - started))
        i += 1
        await asyncio.sleep(PROBE_SECONDS)


def _prober(server: str, files: storm.Credentials, stop: Any, out: str) -> None:
    """The prober's process: an interpreter of its own, so that neither the stack's
    emulators (threads of the benchmark's process: the Entra ID and ACR token services
    the renewals call) nor the plain writer share its GIL and its event loop."""

    got: list[tuple[float, float]] = []

    async def run() -> None:
        api = storm.Api(server, files, 1)
        try:
            await probe(api, stop, got)
        finally:
            await api.close()

    asyncio.run(run())
    Path(out).write_text(json.dumps(got))


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user + system clock ticks), of every process now."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


class CpuSampler:
    """Once a second, the CPU each named process (with its children, except those in
    ``alone``) used since the last sample, as a share of one core: who was busy when
    the reads were slow."""

    def __init__(self, named: dict[str, int], alone: frozenset[str] = frozenset()) -> None:
        self.named = named
        self.alone = alone
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._last: dict[str, int] | None = None
        self._at = 0.0

    def _totals(self) -> dict[str, int]:
        ticks = _cpu_ticks()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in ticks.items():
            children.setdefault(parent, []).append(pid)
        out: dict[str, int] = {}
        for name, root in self.named.items():
            total, todo = 0, [root]
            while todo:
                pid = todo.pop()
                total += ticks.get(pid, (0, 0))[1]
                if name not in self.alone:
                    todo.extend(children.get(pid, ()))
            out[name] = total
        return out

    def sample(self) -> None:
        now, totals = time.time(), self._totals()
        if self._last is not None and now > self._at:
            span = now - self._at
            self.samples.append(
                (
                    round(now, 3),
                    {
                        name: round(
                            max(totals[name] - self._last.get(name, 0), 0) / _TICK / span, 3
                        )
                        for name in totals
                    },
                )
            )
        self._last, self._at = totals, now

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Samples every second while the block runs."""
        try:
            async with each_second(lambda: asyncio.to_thread(self.sample)):
                yield
        finally:
            self._last = None


@contextlib.asynccontextmanager
async def each_second(step: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """``step`` once a second (start to start) in a task of its own while the block runs."""

    async def loop() -> None:
        while True:
            started = time.monotonic()
            await step()
            await asyncio.sleep(max(1.0 - (time.monotonic() - started), 0.0))

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def slow_stretches(
    reads: list[tuple[float, float]], over: float, gap: float = 2.0
) -> list[tuple[float, float, int]]:
    """(start, end, slow reads) of each run of reads slower than ``over`` seconds, runs
    less than ``gap`` seconds apart joined."""
    out: list[tuple[float, float, int]] = []
    for t, d in sorted(reads):
        if d <= over:
            continue
        if out and t - out[-1][1] <= gap:
            start, _, n = out[-1]
            out[-1] = (start, t, n + 1)
        else:
            out.append((t, t, 1))
    return out


def cpu_in(
    samples: list[tuple[float, dict[str, float]]], start: float, end: float
) -> dict[str, float]:
    """Each process's mean share of a core over the samples in [start, end]."""
    inside = [cpu for t, cpu in samples if start <= t <= end + 1.0]
    if not inside:
        return {}
    return {
        name: round(sum(c.get(name, 0.0) for c in inside) / len(inside), 2) for name in inside[0]
    }


def by_minute_p99(reads: list[tuple[float, float]], origin: float) -> dict[int, float]:
    """The reads' p99 (ms) in each whole minute from ``origin``."""
    minutes: dict[int, list[float]] = {}
    for t, d in reads:
        minutes.setdefault(int((t - origin) // 60), []).append(d)
    return {m: round(storm.percentile(ds, 99) * 1e3, 2) for m, ds in sorted(minutes.items())}


def scraping(api: storm.Api) -> contextlib.AbstractAsyncContextManager[None]:
    """The API server's /metrics read once a second while the block runs, as the wave's
    own count of the leader's writes reads it: every phase carries that observer's cost
    (a few MB of text a second for the API server to make), not only the wave."""
    return each_second(lambda: api.get("/metrics"))


#: One line of a Go program's GODEBUG=gctrace=1 output: the cycle's start (seconds since
#: the program started), its wall-clock phases (ms), and the heap (MB) before, after and
#: live, and the goal.
_GCTRACE = re.compile(
    r"gc \d+ @(?P<at>[\d.]+)s \d+%: (?P<stw1>[\d.]+)\+(?P<mark>[\d.]+)\+(?P<stw2>[\d.]+) ms clock,"
    r".*? (?P<before>\d+)->(?P<after>\d+)->(?P<live>\d+) MB, (?P<goal>\d+) MB goal"
)


def process_start(pid: int) -> float:
    """When process ``pid`` started (epoch seconds, to the clock tick)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / _TICK


def gc_cycles(log: str, started: float) -> list[dict[str, float]]:
    """The garbage collections a Go program's gctrace lines in ``log`` report: when each
    began (epoch seconds), its concurrent mark's wall time and the heap's sizes."""
    cycles = []
    for m in _GCTRACE.finditer(log):
        cycles.append(
            {
                "at": round(started + float(m["at"]), 3),
                "mark_ms": float(m["mark"]),
                "wall_ms": float(m["stw1"]) + float(m["mark"]) + float(m["stw2"]),
                "heap_before_mb": int(m["before"]),
                "heap_live_mb": int(m["live"]),
                "goal_mb": int(m["goal"]),
            }
        )
    return cycles


def gc_during(
    cycles: list[dict[str, float]], start: float, end: float, origin: float
) -> list[dict[str, float]]:
    """The cycles whose wall time overlaps [start, end], their start from ``origin``."""
    return [
        {**c, "at": round(c["at"] - origin, 1)}
        for c in cycles
        if c["at"] <= end and c["at"] + c["wall_ms"] / 1e3 >= start
    ]


class Prober:
    """Unrelated reads from another process, started and stopped from here."""

    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.files = storm.Credentials(
            str(cp.ca_cert), str(cp.admin.client_cert), str(cp.admin.client_key)
        )
        self.server = cp.server
        self.workdir = workdir
        self.context = multiprocessing.get_context("spawn")
        self.runs = 0

    @contextlib.asynccontextmanager
    async def running(self, out: list[tuple[float, float]]) -> AsyncIterator[None]:
        """(when, seconds) of each read while the block runs, into ``out`` at its end."""
        self.runs += 1
        path = self.workdir / f"probe-{self.runs}.json"
        stop = self.context.Event()
        process = self.context.Process(
            target=_prober, args=(self.server, self.files, stop, str(path))
        )
        process.start()
        try:
            yield
        finally:
            stop.set()
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()
        out.extend((t, d) for t, d in json.loads(path.read_text()))

    async def reads(self, seconds: float) -> list[float]:
        """The reads' durations over ``seconds``."""
        return [d for _, d in await self.timed_reads(seconds)]

    async def timed_reads(self, seconds: float) -> list[tuple[float, float]]:
        """(when, seconds) of each read over ``seconds``."""
        out: list[tuple[float, float]] = []
        async with self.running(out):
            await asyncio.sleep(seconds)
        return out


def renewal_writes(metrics: str) -> tuple[int, int]:
    """(Secret PUTs, record PUTs) the API server has served."""
    w = apiserver_writes(metrics)
    return w["secrets"].get("PUT", 0), w[PLURAL].get("PUT", 0)


async def created(api: storm.Api, path: str, body: dict[str, Any]) -> storm.Created | None:
    """POST, retrying while a new namespace has no default ServiceAccount yet."""
    for _ in range(400):
        if path.endswith("/pods"):
            made = await api.create_pod(path.split("/")[4], body)
            if made.status == 201 or "serviceaccount" not in made.message.lower():
                return made  # a pod refused or timed out is counted, not fatal
            status, message = made.status, made.message
        else:
            status, doc = await api.create(path, body)
            if status == 201:
                return None
            message = str(doc.get("message", ""))
        if status == 403 and "serviceaccount" in message.lower():
            await asyncio.sleep(0.25)
            continue
        raise RuntimeError(f"POST {path}: {status} {message[:300]}")
    raise RuntimeError(f"POST {path}: no default ServiceAccount")


async def bounded(jobs: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


async def records(api: storm.Api) -> list[ManagedSecret]:
    """Every record of the webhook, paged."""
    out: list[ManagedSecret] = []
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}?limit=500"
    token = ""
    while True:
        doc = await api.get(path + (f"&continue={token}" if token else ""))
        out.extend(r for r in map(ManagedSecret.from_object, doc["items"]) if r is not None)
        token = doc["metadata"].get("continue", "")
        if not token:
            return out


async def plain_writes(
    api: storm.Api, rate: float, seconds: float, ns: str, second: str = "configmap"
) -> int:
    """A plain client's writes, as the leader's renewals: a Secret then a ConfigMap (or,
    with ``second="record"``, a record of the webhook's kind in its namespace, state
    ``Foreign`` for a namespace that is not opted in, which the replicas watch and leave
    alone), one pair every ``1 / rate`` seconds, in a namespace of its own. Returns the
    pairs written."""
    await api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    names = [f"w-{i}" for i in range(200)]
    payload = base64.b64encode(b'{"auths":{"x":{"auth":"' + b"a" * 900 + b'"}}}').decode()
    records = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"

    def record(name: str) -> dict[str, Any]:
        return ManagedSecret(ns, name, "plain", "plain.example", "none", state="Foreign").to_object(
            NAMESPACE
        )

    versions: dict[str, str] = {}  # a custom resource is updated only at its version
    for name in names:
        await api.create(f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": name}})
        if second == "record":
            _, made = await api.create(records, record(name))
            versions[name] = made["metadata"]["resourceVersion"]
        else:
            await api.create(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": name}})

    async def pair(n: int) -> None:
        name = names[n % len(names)]
        secret = {"metadata": {"name": name}, "data": {".dockerconfigjson": payload}}
        async with api.session.put(
            f"{api.server}/api/v1/namespaces/{ns}/secrets/{name}", json=secret
        ) as r:
            await r.read()
            if r.status >= 300:  # a refused write costs less: it would flatter the peer
                raise RuntimeError(f"plain writer: Secret PUT {r.status}")
        if second == "record":
            body = record(name)
            body["metadata"]["resourceVersion"] = versions[name]
            body["status"]["renewedAt"] = to_rfc3339(time.time())
            url = f"{api.server}{records}/{ns}.{name}"
        else:
            body = {"metadata": {"name": name}, "data": {"renewedAt": str(time.time())}}
            url = f"{api.server}/api/v1/namespaces/{ns}/configmaps/{name}"
        async with api.session.put(url, json=body) as r:
            answer = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"plain writer: PUT {url}: {r.status}")
        if second == "record":
            versions[name] = json.loads(answer)["metadata"]["resourceVersion"]

    if rate <= 0:
        return 0
    pending: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        task = asyncio.create_task(pair(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        await asyncio.sleep(max(start + n / rate - time.monotonic(), 0.0))
    await asyncio.gather(*pending)
    return n


async def left_by_a_storm(
    api: storm.Api,
    st: Stack,
    names: list[str],
    images: list[str],
    issued: float,
    args: argparse.Namespace,
) -> int:
    """What a storm that minted every secret at ``issued`` leaves (bench/footprint.py's
    way, many times faster than 30,000 admissions on this machine): per namespace and
    registry the webhook's Secret (a placeholder credential), its marker and its record
    (Ready, due where ``renew_at`` puts a secret of a credential issued at ``issued``),
    then one pod referencing them (through the webhook, which finds them all fresh).
    Returns the pods made."""
    assert st.config_path is not None
    config = load_config(st.config_path)
    needs = [need for image in images for need in pull_needs(config, storm.pod("p", [image]))]
    placeholder = base64.b64encode(b'{"auths":{}}').decode()

    async def secrets(ns: str) -> None:
        for need in needs:
            credential = Credential(
                "00000000-0000-0000-0000-000000000000",
                "placeholder",
                (need.host,),
                expires_at=issued + args.token_seconds,
                issued_at=issued,
            )
            body = {
                "metadata": {"name": need.secret_name, "labels": {MANAGED_BY: MANAGER}},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": placeholder},
            }
            status, secret = await api.create(f"/api/v1/namespaces/{ns}/secrets", body)
            if status != 201:
                raise RuntimeError(f"secret in {ns}: {status} {secret.get('message', '')}")
            uid = secret["metadata"]["uid"]
            marker = marker_object(ns, need.secret_name, uid)
            await api.create(f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{MARKER_PLURAL}", marker)
            record = ManagedSecret(
                ns,
                need.secret_name,
                need.entry.name,
                need.host,
                need.identity.key,
                state="Ready",
                secret_uid=uid,
                expires_at=credential.expires_at,
                refresh_at=renew_at(credential, args.fraction, ns, need.secret_name),
                renewed_at=issued,
                claimed_at=issued,
            )
            status, doc = await api.create(
                f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}",
                record.to_object(NAMESPACE),
            )
            if status != 201:
                raise RuntimeError(f"record of {ns}: {status} {doc.get('message', '')}")

    await bounded([secrets(ns) for ns in names])
    pods = []
    for ns in names:
        body = storm.pod("p", images)
        body["spec"]["imagePullSecrets"] = [{"name": need.secret_name} for need in needs]
        pods.append(created(api, f"/api/v1/namespaces/{ns}/pods", body))
    made = await bounded(pods)
    return sum(m is not None and m.status == 201 for m in made)


def minute_counts(times: list[float], origin: float) -> dict[int, int]:
    return dict(sorted(Counter(int((t - origin) // 60) for t in times).items()))


async def measure(st: Stack, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    registries: list[AcrRegistry] = [
        r for r in (st.acr_short, st.acr, st.acr_slow) if r is not None
    ][: args.registries]
    for registry in registries:
        registry.refresh_token_lifetime = args.token_seconds
    images = [f"{r.login_server}/demo/hello:v1" for r in registries]
    api = storm.admin_api(st.controlplane, CONCURRENCY)
    names = [f"wave-{i}" for i in range(args.namespaces)]
    prober = Prober(st.controlplane, workdir)
    named = {
        name: pid
        for name, pid in st.controlplane.pids().items()
        if name != "kube-controller-manager"
    }
    named.update({r.name: r.process.pid for r in st.replicas})
    # The benchmark's own process, not its children (the control plane and the replicas
    # are those): the plain writer, and the stack's token services the renewals call.
    named["benchmark"] = os.getpid()
    cpu = CpuSampler(named, alone=frozenset({"benchmark"}))
    out: dict[str, Any] = {}
    try:
        started = time.time()
        labels = {INJECT_LABEL: INJECT_VALUE}
        await bounded(
            [
                created(api, "/api/v1/namespaces", {"metadata": {"name": ns, "labels": labels}})
                for ns in names
            ]
        )
        out["namespaces_seconds"] = time.time() - started
        if args.storm:
            minted_at = time.time()
            made = await bounded(
                [
                    created(api, f"/api/v1/namespaces/{ns}/pods", storm.pod("p", images))
                    for ns in names
                ]
            )
            patched = sum(
                m is not None and m.status == 201 and len(m.pull_secrets) == len(images)
                for m in made
            )
        else:
            minted_at = time.time()
            patched = await left_by_a_storm(api, st, names, images, minted_at, args)
        mint_seconds = time.time() - minted_at
        out.update(minted_at=minted_at, mint_seconds=mint_seconds, pods_patched=patched)
        print(f"storm: {patched} of {len(names)} pods in {mint_seconds:.0f}s", flush=True)

        listed = await records(api)
        due = sorted(r.refresh_at for r in listed if r.state == "Ready")
        ends = sorted(r.expires_at for r in listed if r.state == "Ready")
        out["records_ready"] = len(due)
        out["due_after_mint_seconds"] = {
            "first": due[0] - minted_at,
            "last": due[-1] - minted_at,
            "per_minute": minute_counts(due, minted_at),
        }
        # From here on the override (URGENT_SECONDS) may let renewals through unpaced.
        urgent_from = ends[0] - EXPIRY_MARGIN - URGENT_SECONDS
        out["urgent_after_mint_seconds"] = urgent_from - minted_at

        # Before anything is due: the reads idle, then beside a plain client writing at
        # the rate the wave is expected at (the due times' rate, at most the bound), then
        # idle again (the two idle runs bracket the machine's own drift).
        expected = min(len(due) / max(due[-1] - due[0], 1.0), RENEWALS_PER_SECOND)
        # (Shorter phases when the storm left less time than asked before the first due,
        # none when it left less than 40 s: then the idle reads after the wave stand in.)
        left = due[0] - time.time() - 10
        phase = min(args.idle, left / 3)
        plain_seconds = max(min(args.plain, left - 2 * phase), phase)
        out["phase_seconds"] = phase
        out["plain_seconds"] = plain_seconds
        idle: list[float] = []
        plain_box: list[int] = []
        plain_timed: list[tuple[float, float]] = []

        async def plain(rate: float, seconds: float) -> None:
            ns = f"plain-writer-{len(plain_box)}"
            plain_box.append(await plain_writes(api, rate, seconds, ns, args.plain_second))

        plain_reads: list[float] = []
        if phase >= 10:
            async with scraping(api):
                idle = await prober.reads(phase)
                writer = asyncio.create_task(plain(expected, plain_seconds))
                async with cpu.running():
                    plain_timed = await prober.timed_reads(plain_seconds)
                plain_reads = [d for _, d in plain_timed]
                await writer
                idle += await prober.reads(phase)
            out["plain_writer_before"] = {
                "renewals_per_second": expected,
                "pairs": plain_box[-1],
            }
        await asyncio.sleep(max(due[0] - time.time() - 1, 0.0))

        # The wave.
        wave: list[tuple[float, float]] = []
        async with prober.running(wave), cpu.running():
            base_secrets, base_records = renewal_writes(await api.get("/metrics"))
            samples: list[tuple[float, int, int]] = [(time.time(), 0, 0)]
            until = min(max(due[0], time.time()) + args.wave, urgent_from)
            while time.time() < until and samples[-1][1] < len(due):
                await asyncio.sleep(max(samples[-1][0] + 1.0 - time.time(), 0.0))
                secrets, recs = renewal_writes(await api.get("/metrics"))
                samples.append((time.time(), secrets - base_secrets, recs - base_records))
        load_wave = os.getloadavg()

        # Once more with no webhook running: idle, then beside a plain client writing at
        # the leader's mean rate of the wave.
        st.stop_replicas()
        await asyncio.sleep(5)
        moving = [b for a, b in itertools.pairwise(samples) if b[1] > a[1]]
        first = moving[0][0] - 1.0 if moving else samples[0][0]
        last = moving[-1][0] if moving else samples[-1][0]
        renewed, record_writes = samples[-1][1], samples[-1][2]
        mean_rate = (renewed + record_writes) / (last - first) if last > first else 0.0
        after = max(phase, args.idle)
        async with scraping(api):
            idle_after = await prober.reads(after)
            writer = asyncio.create_task(plain(mean_rate / 2, plain_seconds))
            async with cpu.running():
                plain_after_timed = await prober.timed_reads(plain_seconds)
            plain_after = [d for _, d in plain_after_timed]
            await writer
        out["plain_writer_after"] = {"renewals_per_second": mean_rate / 2, "pairs": plain_box[-1]}
    finally:
        await api.close()

    rates = [
        ((b[1] + b[2]) - (a[1] + a[2])) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)
    ]
    during = [d for t, d in wave if first <= t <= last]
    renewal_times = [b[0] for a, b in itertools.pairwise(samples) for _ in range(b[1] - a[1])]

    def ratio(a: list[float], b: list[float]) -> dict[str, Any]:
        pa, pb = storm.percentile(a, 99), storm.percentile(b, 99)
        return {
            "reads": [len(a), len(b)],
            "p99_ms": [round(pa * 1e3, 2), round(pb * 1e3, 2)],
            "p50_ms": [
                round(storm.percentile(a, 50) * 1e3, 2),
                round(storm.percentile(b, 50) * 1e3, 2),
            ],
            "ratio": round(pb / pa, 2) if pa else 0.0,
        }

    # Where the reads were slow (over twice the pooled idle p99, at least 20 ms): when,
    # how long, and who used the CPU then against the whole phase.
    pooled = storm.percentile(idle + idle_after, 99)
    over = max(2 * pooled, 0.02)
    wave_in = [(t, d) for t, d in wave if first <= t <= last]

    def stretches(reads: list[tuple[float, float]]) -> dict[str, Any]:
        if not reads:
            return {"stretches": [], "cpu_whole_phase": {}}
        start, end = reads[0][0], reads[-1][0]
        return {
            "stretches": [
                {
                    "after_mint_s": [round(a - minted_at, 1), round(b - minted_at, 1)],
                    "slow_reads": n,
                    "cpu": cpu_in(cpu.samples, a - 1.0, b),
                }
                for a, b, n in slow_stretches(reads, over)
            ],
            "cpu_whole_phase": cpu_in(cpu.samples, start, end),
            "p99_ms_by_minute": by_minute_p99(reads, start),
        }

    out.update(
        {
            "namespaces": args.namespaces,
            "registries": len(images),
            "token_seconds": args.token_seconds,
            "fraction": args.fraction,
            "renewed": renewed,
            "record_writes": record_writes,
            "writes_per_renewal": (renewed + record_writes) / renewed if renewed else 0.0,
            "first_renewal_after_mint_seconds": first - minted_at,
            "last_renewal_after_mint_seconds": last - minted_at,
            "renewals_per_minute_after_mint": minute_counts(renewal_times, minted_at),
            "leader_writes_per_second_max": max(rates, default=0.0),
            "leader_writes_per_second_mean": mean_rate,
            "seconds_over_50_writes": sum(1 for r in rates if r > 50.5),
            "probe_idle_vs_wave": ratio(idle or idle_after, during),
            "probe_idle_after_vs_wave": ratio(idle_after, during),
            "probe_idle_vs_plain_writer_before": ratio(idle, plain_reads) if idle else None,
            "probe_idle_vs_plain_writer_after": ratio(idle_after, plain_after),
            # Side by side at the same rate for as long: what the API server's writes cost
            # the reads with no webhook involved, against what the wave cost them.
            "probe_plain_writer_vs_wave": ratio(plain_reads + plain_after, during),
            "probe_pooled_idle_vs_wave": ratio(idle + idle_after, during),
            "probe_pooled_idle_vs_plain_writer": ratio(
                idle + idle_after, plain_reads + plain_after
            ),
            "slow_over_ms": round(over * 1e3, 2),
            "slow_wave": stretches(wave_in),
            "slow_plain_writer_before": stretches(plain_timed),
            "slow_plain_writer_after": stretches(plain_after_timed),
            "slowest_wave_reads_ms_at_seconds_after_mint": [
                (round(d * 1e3, 1), round(t - minted_at, 1))
                for t, d in sorted((x for x in wave if first <= x[0] <= last), key=lambda x: -x[1])[
                    :15
                ]
            ],
            "loadavg_end_of_wave": load_wave,
            "samples": samples,
            "cpu_samples": cpu.samples,
            # Every read's duration (seconds), by phase, to take other statistics later.
            "reads": {
                "idle_before": idle,
                "plain_writer_before": [(round(t - minted_at, 3), d) for t, d in plain_timed],
                "wave": [(round(t - minted_at, 3), d) for t, d in wave],
                "idle_after": idle_after,
                "plain_writer_after": [(round(t - minted_at, 3), d) for t, d in plain_after_timed],
            },
        }
    )
    return out


def apiserver_gc(cp: ControlPlane, out: dict[str, Any]) -> dict[str, Any]:
    """kube-apiserver's garbage collections (its gctrace lines) in each timed phase, and
    beside each of its stretches of slow reads."""
    pid = cp.pids()["kube-apiserver"]
    cycles = gc_cycles(cp.logs["kube-apiserver"].read_text(errors="replace"), process_start(pid))
    minted = out["minted_at"]
    report: dict[str, Any] = {"cycles": gc_during(cycles, minted, float("inf"), minted)}
    for phase, key in (
        ("plain_writer_before", "slow_plain_writer_before"),
        ("wave", "slow_wave"),
        ("plain_writer_after", "slow_plain_writer_after"),
    ):
        reads = out["reads"].get(phase) or []
        if not reads:
            continue
        start, end = minted + reads[0][0], minted + reads[-1][0]
        inside = gc_during(cycles, start, end, minted)
        stretches = out.get(key, {}).get("stretches", [])
        for stretch in stretches:
            a, b = stretch["after_mint_s"]
            stretch["gc"] = gc_during(cycles, minted + a - 1.0, minted + b, minted)
        big = [x for x in stretches if x["slow_reads"] >= 5]
        # Are slow reads (over 20 ms) found in collections more than time spent in them
        # would put there by chance?
        windows = [(c["at"], c["at"] + c["wall_ms"] / 1e3) for c in inside]  # after mint
        slow = [t for t, d in reads if d > 0.02]
        in_gc = sum(1 for t in slow if any(a <= t <= b for a, b in windows))
        report[phase] = {
            "seconds": round(end - start, 1),
            "cycles": len(inside),
            "mark_seconds": round(sum(c["wall_ms"] for c in inside) / 1e3, 1),
            "share_of_time_in_collections": round(
                sum(b - a for a, b in windows) / max(end - start, 1e-9), 3
            ),
            "slow_reads_over_20ms": len(slow),
            "share_of_them_in_collections": round(in_gc / len(slow), 3) if slow else None,
            "heap_live_mb": [
                min((c["heap_live_mb"] for c in inside), default=0),
                max((c["heap_live_mb"] for c in inside), default=0),
            ],
            "stretches_of_5_or_more": len(big),
            "of_them_beside_a_collection": sum(1 for x in big if x["gc"]),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=10_000)
    parser.add_argument("--registries", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--idle", type=float, default=40.0, help="seconds of each probe phase")
    parser.add_argument("--wave", type=float, default=360.0, help="longest wave measured, s")
    parser.add_argument(
        "--plain",
        type=float,
        default=360.0,
        help="seconds of each plain-client phase (as long as the wave: a stall that comes "
        "every few minutes shows in both or neither)",
    )
    parser.add_argument(
        "--token-seconds",
        type=int,
        default=2400,
        help="the registries' token lifetime (the window scales with it)",
    )
    parser.add_argument("--fraction", type=float, default=0.5, help="refresh.fraction")
    parser.add_argument(
        "--plain-second",
        choices=("configmap", "record"),
        default="configmap",
        help="the plain client's second write: a ConfigMap, or a record of the webhook's "
        "kind (a custom resource both replicas watch) in the webhook's namespace",
    )
    parser.add_argument(
        "--storm",
        action="store_true",
        help="mint every secret through the webhook (one pod per namespace, all at once) "
        "instead of making what such a storm leaves",
    )
    parser.add_argument(
        "--gctrace",
        action="store_true",
        help="run the control plane with GODEBUG=gctrace=1 and set kube-apiserver's "
        "garbage collections beside each stretch of slow reads",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/renewals.json"))
    args = parser.parse_args()
    if args.gctrace:
        os.environ["GODEBUG"] = "gctrace=1"  # the Go programs the stack starts inherit it
    load_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(locate()) as cp,
        running_stack(
            cp,
            Path(tmp) / "stack",
            refresh_interval=INTERVAL_SECONDS,
            gc_grace=7200,
            refresh_fraction=args.fraction,
        ) as st,
    ):
        out = asyncio.run(measure(st, args, Path(tmp)))
        if args.gctrace:
            out["apiserver_gc"] = apiserver_gc(cp, out)
    out["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        json.dumps(
            {k: v for k, v in out.items() if k not in ("samples", "reads", "cpu_samples")},
            indent=1,
        )
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    return 0 if out["renewed"] > 0 and out["pods_patched"] == args.namespaces else 1


if __name__ == "__main__":
    sys.exit(main())
