"""A cold admission storm against the whole product on a real control plane.

Many pods are created at once, through the API server, in opted-in namespaces whose
pull secrets do not exist yet; every admission needs two of them. What is counted,
and where:

- pod creations and their latency: by the client that creates them (as admin, one
  kept-alive connection per pod, opened before the storm, so that every request is
  in flight at once as over client-go's multiplexed HTTP/2 connection);
- writes of pull Secrets, of the webhook's ``ManagedPullSecret`` records and of its
  markers: from watches on the API server opened before the storm (every create,
  update or delete is an event; a write that changes nothing is not one);
- identity exchanges: from the identity endpoints' own records (the Azure emulator's
  traffic log per login server, the ECR endpoint's count of GetAuthorizationToken).

Used by ``bench/storm.py`` at scale and by a small end-to-end test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from devenv.peers.traffic import ACR_EXCHANGE, ENTRA_TOKEN
from webhook.kube.objects import GROUP, INJECT_LABEL, INJECT_VALUE, MARKER_PLURAL, PLURAL, VERSION
from webhook.pullsecrets.secret import MANAGED_SELECTOR

if TYPE_CHECKING:
    from devenv.controlplane import ControlPlane
    from devenv.stack import Stack

REPO = Path(__file__).resolve().parents[2]
#: Seconds without a new write after which the storm's writes count as settled.
QUIET_SECONDS = 3.0


@dataclass(frozen=True)
class Created:
    namespace: str
    name: str
    status: int
    seconds: float
    pull_secrets: tuple[str, ...]
    message: str = ""
    #: Seconds from the storm's start to this create's request (the creator's clock).
    began: float = 0.0


@dataclass
class Writes:
    """Write events per object, as the API server's watch streams them."""

    events: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    last: float = 0.0

    def add(self, kind: str, namespace: str, name: str) -> None:
        self.events[(kind, namespace, name)] += 1
        self.last = time.monotonic()

    def per_object(self, namespaces: Sequence[str] | None = None) -> Counter[tuple[str, str]]:
        """Writes (ADDED + MODIFIED + DELETED) per (namespace, name)."""
        wanted = None if namespaces is None else set(namespaces)
        out: Counter[tuple[str, str]] = Counter()
        for (_, ns, name), n in self.events.items():
            if wanted is None or ns in wanted:
                out[(ns, name)] += n
        return out

    def by_kind(self, namespaces: Sequence[str] | None = None) -> dict[str, int]:
        wanted = None if namespaces is None else set(namespaces)
        out: Counter[str] = Counter()
        for (kind, ns, _), n in self.events.items():
            if wanted is None or ns in wanted:
                out[kind] += n
        return dict(out)


@dataclass(frozen=True)
class Credentials:
    """Files of the API server's CA and of a client certificate and key."""

    ca: str
    cert: str
    key: str


def admin_api(cp: ControlPlane, connections: int) -> Api:
    """The control plane's API server as its admin (``system:masters``)."""
    files = Credentials(str(cp.ca_cert), str(cp.admin.client_cert), str(cp.admin.client_key))
    return Api(cp.server, files, connections)


class Api:
    """The API server as admin over ``connections`` kept-alive HTTP/1.1 connections (or,
    with ``fresh``, a new connection for every request: a TLS handshake each)."""

    def __init__(
        self, server: str, credentials: Credentials, connections: int, *, fresh: bool = False
    ) -> None:
        self.server = server.rstrip("/")
        self.credentials = credentials
        self.connections = connections
        context = ssl.create_default_context(cafile=credentials.ca)
        context.load_cert_chain(credentials.cert, credentials.key)
        kept: dict[str, Any] = {"force_close": True} if fresh else {"keepalive_timeout": 120}
        connector = aiohttp.TCPConnector(
            ssl=context, limit=connections, limit_per_host=connections, **kept
        )
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60)
        )

    async def close(self) -> None:
        await self.session.close()

    async def warm(self) -> None:
        """Open every connection now (and keep it), so the storm pays no handshakes."""

        async def one() -> None:
            async with self.session.get(f"{self.server}/version") as r:
                await r.read()

        await asyncio.gather(*(one() for _ in range(self.connections)))

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.server}{path}") as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body[:300]!r}")
            return json.loads(body) if body.startswith(b"{") else body.decode()

    async def create(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"{self.server}{path}", json=body) as r:
            raw = await r.read()
            doc: dict[str, Any] = json.loads(raw) if raw.startswith(b"{") else {}
            return r.status, doc

    async def create_pod(self, namespace: str, pod: dict[str, Any], origin: float = 0.0) -> Created:
        started = time.perf_counter()
        status, doc = await self.create(f"/api/v1/namespaces/{namespace}/pods", pod)
        took = time.perf_counter() - started
        refs = (doc.get("spec") or {}).get("imagePullSecrets") or []
        return Created(
            namespace,
            pod["metadata"]["name"],
            status,
            took,
            tuple(sorted(r["name"] for r in refs)),
            "" if status == 201 else str(doc.get("message", ""))[:300],
            started - origin if origin else 0.0,
        )

    async def resource_version(self, path: str) -> str:
        doc = await self.get(f"{path}{'&' if '?' in path else '?'}limit=1")
        return str(doc["metadata"]["resourceVersion"])

    async def events(self, path: str, version: str) -> AsyncIterator[dict[str, Any]]:
        """Watch events of ``path`` from ``version`` on, bookmarks included, until cancelled."""
        sep = "&" if "?" in path else "?"
        url = (
            f"{self.server}{path}{sep}watch=1&allowWatchBookmarks=true"
            f"&resourceVersion={version}&timeoutSeconds=3600"
        )
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
            try:
                if r.status != 200:
                    raise RuntimeError(f"watch {path}: {r.status} {(await r.read())[:300]!r}")
                async for line in r.content:
                    if line.strip():
                        yield json.loads(line)
            finally:
                # A watch ends by being cancelled, just before its event loop does: drop
                # the connection at once. A TLS close would wait for the API server's
                # close_notify, which the ending loop does not live to read, and leave
                # the socket to be collected (a ResourceWarning in a later test).
                if r.connection is not None and r.connection.transport is not None:
                    r.connection.transport.abort()


#: What the storm watches: pull Secrets (the webhook's label), its records, its markers.
WATCHED = {
    "secrets": f"/api/v1/secrets?labelSelector={MANAGED_SELECTOR}",
    "records": f"/apis/{GROUP}/{VERSION}/{PLURAL}",
    "markers": f"/apis/{GROUP}/{VERSION}/{MARKER_PLURAL}",
}


@contextlib.asynccontextmanager
async def watching(api: Api) -> AsyncIterator[dict[str, Writes]]:
    """Writes of each WATCHED kind from now until the block ends. A separate session:
    the watches must not hold connections the storm's requests are meant to use."""
    watch_api = Api(api.server, api.credentials, len(WATCHED) + 1)
    out = {kind: Writes() for kind in WATCHED}

    async def follow(kind: str, path: str, version: str) -> None:
        # Until cancelled. The API server may end a watch early (it closes one whose
        # client falls behind a burst of events): it is resumed from the last version
        # seen, so no write goes uncounted; a version too old to resume (an ERROR event,
        # 410 Gone) ends the run.
        while True:
            async for event in watch_api.events(path, version):
                meta = (event.get("object") or {}).get("metadata") or {}
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                    out[kind].add(event["type"], meta.get("namespace", ""), meta.get("name", ""))
                elif event.get("type") == "ERROR":
                    raise RuntimeError(f"watch {kind} ended: {event.get('object')}")
                version = meta.get("resourceVersion") or version

    try:
        versions = {k: await watch_api.resource_version(p) for k, p in WATCHED.items()}
        tasks = [asyncio.create_task(follow(k, p, versions[k])) for k, p in WATCHED.items()]
        try:
            yield out
        finally:
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result
    finally:
        await watch_api.close()


async def settled(writes: dict[str, Writes], done: Callable[[], bool], limit: float) -> float:
    """Wait until ``done()`` and no write for QUIET_SECONDS (at most ``limit`` seconds);
    the seconds it took."""
    started = time.monotonic()
    while True:
        last = max(w.last for w in writes.values())
        if done() and time.monotonic() - last >= QUIET_SECONDS:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise TimeoutError(f"writes did not settle within {limit:g}s")
        await asyncio.sleep(0.25)


def pod(name: str, images: Sequence[str]) -> dict[str, Any]:
    """A pod as a ReplicaSet controller sends it: labels, an owner, one container per image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "storm", "pod-template-hash": "5d8f7c9b6"}},
        "spec": {
            "containers": [
                {
                    "name": f"c{i}",
                    "image": image,
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
                for i, image in enumerate(images)
            ],
            "automountServiceAccountToken": False,
        },
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def histogram_bucket(histograms: Iterable[Mapping[str, float]], q: float) -> tuple[float, float]:
    """The bucket the ``q``-th percentile of Prometheus histograms taken together falls
    in, as (lower, upper) bounds. Each histogram is its cumulative bucket counts by label
    string (``{le="0.5"}``), as ``counter_values`` reads them, every bucket there."""
    counts: dict[float, float] = {}
    for buckets in histograms:
        for labels, count in buckets.items():
            bound = re.search(r'le="([^"]+)"', labels)
            if bound:
                le = float(bound.group(1))  # "+Inf" reads as inf
                counts[le] = counts.get(le, 0.0) + count
    total = counts.get(float("inf"), 0.0)
    if not total:
        return 0.0, 0.0
    lower = 0.0
    for le in sorted(counts):
        if counts[le] >= total * q / 100:
            return lower, le
        lower = le
    raise AssertionError("unreachable: the +Inf bucket holds every sample")


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def counter_values(metrics: str, name: str) -> dict[str, float]:
    """``name``'s samples in a Prometheus text exposition, by their label string."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            out[labels] = float(value)
    return out


# ----------------------------------------------------------------------------- the storm


@dataclass(frozen=True)
class Registry:
    """A registry of the storm: its config entry and an image there."""

    entry: str
    image: str


@dataclass
class Result:
    created: list[Created]
    writes: dict[str, Writes]
    identity_calls: dict[str, int]
    """Requests each identity endpoint recorded during the storm (see ``run``)."""
    storm_seconds: float
    settle_seconds: float
    namespaces: list[str]
    images_per_pod: int


def stack_registries(st: Stack) -> list[Registry]:
    """Three registries of the stack, each with an identity of its own kind: two ACR
    login servers (workload identity through Entra ID) and the ECR one (AWS keys)."""
    assert st.acr_slow is not None
    slow = f"{st.acr_slow.login_server}/{st.acr_image.split('/', 1)[1]}"
    return [
        Registry("acr", st.acr_image),
        Registry("acr-slow", slow),
        Registry("ecr", st.ecr_image),
    ]


def identity_calls(st: Stack) -> dict[str, int]:
    """The identity endpoints' own counts: the emulator's traffic log per ACR login
    server (``/oauth2/exchange``) and for Entra ID, and the ECR endpoint's count of
    GetAuthorizationToken."""
    assert st.emulator and st.acr and st.acr_slow and st.ecr_api
    traffic = st.emulator.traffic
    return {
        "acr": traffic.count(ACR_EXCHANGE, st.acr.login_server),
        "acr-slow": traffic.count(ACR_EXCHANGE, st.acr_slow.login_server),
        "ecr": st.ecr_api.proxy.count("GetAuthorizationToken"),
        "entra": traffic.count(ENTRA_TOKEN),
    }


def registries_of(index: int, registries: Sequence[Registry]) -> tuple[Registry, Registry]:
    """Namespace ``index``'s two registries: consecutive ones, so that with three
    registries every registry serves two thirds of the namespaces."""
    return registries[index % len(registries)], registries[(index + 1) % len(registries)]


async def make_namespaces(
    api: Api, names: Sequence[str], limit: float = 120.0, *, opt_in: bool = True
) -> None:
    """Namespaces, opted in unless ``opt_in`` is false, returning once each has the
    default ServiceAccount (made by kube-controller-manager) that pods need."""
    labels = {INJECT_LABEL: INJECT_VALUE} if opt_in else {}
    for name in names:
        status, doc = await api.create(
            "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels}}
        )
        if status != 201:
            raise RuntimeError(f"namespace {name}: {status} {doc.get('message', '')}")
    deadline = time.monotonic() + limit
    for name in names:
        while True:
            async with api.session.get(
                f"{api.server}/api/v1/namespaces/{name}/serviceaccounts/default"
            ) as r:
                await r.read()
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no default ServiceAccount in {name} after {limit:g}s")
            await asyncio.sleep(0.2)


def storm_jobs(
    namespaces: Sequence[str],
    pods_per_namespace: int,
    registries: Sequence[Registry],
    prefix: str = "storm",
) -> list[tuple[str, dict[str, Any]]]:
    """The pods to create: ``pods_per_namespace`` in each namespace (named
    ``{prefix}-{i}``), each with the images of the namespace's two registries."""
    jobs: list[tuple[str, dict[str, Any]]] = []
    for n, ns in enumerate(namespaces):
        images = [r.image for r in registries_of(n, registries)]
        jobs.extend((ns, pod(f"{prefix}-{i}", images)) for i in range(pods_per_namespace))
    return jobs


@contextlib.asynccontextmanager
async def pod_creator(
    api: Api, jobs: Sequence[tuple[str, dict[str, Any]]], clients: int = 0
) -> AsyncIterator[Callable[[], Awaitable[list[Created]]]]:
    """A process of its own that opens a connection per pod and then, when the yielded
    ``go()`` is awaited, creates every pod at once and returns how each went. Its own
    process, so that the client's work does not share an interpreter with the stack's
    balancer and emulators (threads of this one).

    With ``clients``, that many clients instead, each creating its share of the pods one
    after another, each create on a new connection (as that many ``kubectl create`` runs
    would): a pod's time then includes its connection's TLS handshake."""
    creator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "devenv.support.storm",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        limit=64 * 1024 * 1024,  # the results come back as one JSON line
    )
    stdin, stdout = creator.stdin, creator.stdout
    assert stdin is not None and stdout is not None

    async def go() -> list[Created]:
        stdin.write(b"go\n")
        await stdin.drain()
        lines = json.loads(await stdout.readline())
        return [Created(**{**c, "pull_secrets": tuple(c["pull_secrets"])}) for c in lines]

    try:
        spec = {
            "server": api.server,
            "credentials": asdict(api.credentials),
            "jobs": jobs,
            "clients": clients,
        }
        stdin.write(json.dumps(spec).encode() + b"\n")
        await stdin.drain()
        if (await stdout.readline()).strip() != b"ready":
            raise RuntimeError("the pod creator did not start")
        yield go
    finally:
        if creator.returncode is None:
            creator.kill()
        await creator.wait()


async def create_at_once(
    api: Api,
    namespaces: Sequence[str],
    pods_per_namespace: int,
    registries: Sequence[Registry],
    prefix: str = "storm",
    *,
    clients: int = 0,
) -> list[Created]:
    """The storm's pods, created the storm's way, with nothing else counted: in namespaces
    that did not opt in it measures the API server without the webhook; in the storm's
    namespaces after the storm, the webhook with every pull secret already made.
    ``clients``: see ``pod_creator``."""
    jobs = storm_jobs(namespaces, pods_per_namespace, registries, prefix)
    async with pod_creator(api, jobs, clients) as go:
        return await go()


async def run(
    api: Api,
    namespaces: Sequence[str],
    pods_per_namespace: int,
    registries: Sequence[Registry],
    identity_calls: Callable[[], dict[str, int]],
    *,
    settle_timeout: float = 120.0,
    clients: int = 0,
) -> Result:
    """Create ``pods_per_namespace`` pods in each namespace, all at once (or by
    ``clients``, see ``pod_creator``); wait until the webhook's writes have settled.
    ``identity_calls()`` reads the identity endpoints' own request counts (taken before
    and after)."""
    jobs = storm_jobs(namespaces, pods_per_namespace, registries)
    async with pod_creator(api, jobs, clients) as go, watching(api) as writes:
        before = identity_calls()
        started = time.perf_counter()
        created = await go()
        storm_seconds = time.perf_counter() - started
        wanted = {(c.namespace, s) for c in created for s in c.pull_secrets}
        done = lambda: wanted <= set(writes["secrets"].per_object())  # noqa: E731
        settle_seconds = await settled(writes, done, settle_timeout)
        after = identity_calls()
    return Result(
        created=list(created),
        writes=writes,
        identity_calls={k: after[k] - before.get(k, 0) for k in after},
        storm_seconds=storm_seconds,
        settle_seconds=settle_seconds,
        namespaces=list(namespaces),
        images_per_pod=2,
    )


def violations(result: Result, replicas: int, exchange_keys: Sequence[str]) -> list[str]:
    """What the storm must not do: a failed or unpatched admission, a second write of a
    pull Secret, more than one exchange per registry and identity per replica."""
    out = []
    failed = [c for c in result.created if c.status != 201]
    if failed:
        out.append(f"{len(failed)} failed admissions, e.g. {failed[0]}")
    unpatched = [
        c
        for c in result.created
        if c.status == 201 and len(c.pull_secrets) != result.images_per_pod
    ]
    if unpatched:
        out.append(f"{len(unpatched)} pods without their pull secrets, e.g. {unpatched[0]}")
    secrets = result.writes["secrets"]
    per_secret = secrets.per_object(result.namespaces)
    rewritten = {k: n for k, n in per_secret.items() if n > 1}
    if rewritten:
        how = {
            f"{ns}/{name}": {
                kind: n
                for (kind, ns2, name2), n in secrets.events.items()
                if (ns2, name2) == (ns, name)
            }
            for ns, name in rewritten
        }
        out.append(f"{len(rewritten)} pull secrets written more than once: {how}")
    for key in exchange_keys:
        if result.identity_calls.get(key, 0) > replicas:
            out.append(f"{key}: {result.identity_calls[key]} exchanges for {replicas} replicas")
    return out


async def _create_all(spec: dict[str, Any]) -> None:
    """The pod creator: open a connection per pod, say ``ready``, wait for ``go``, create
    every pod at once, print the results as one JSON line. With ``clients``: no
    connection opened beforehand, that many clients each creating one pod after another
    on a new connection each time."""
    jobs = spec["jobs"]
    clients = int(spec.get("clients") or 0)
    credentials = Credentials(**spec["credentials"])
    api = Api(spec["server"], credentials, clients or len(jobs), fresh=bool(clients))
    loop = asyncio.get_running_loop()
    try:
        if not clients:
            await api.warm()
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        origin = time.perf_counter()
        if clients:
            created = await _by_clients(api, jobs, clients, origin)
        else:
            created = await asyncio.gather(*(api.create_pod(ns, body, origin) for ns, body in jobs))
        print(json.dumps([asdict(c) for c in created]), flush=True)
    finally:
        await api.close()


async def _by_clients(
    api: Api, jobs: Sequence[tuple[str, dict[str, Any]]], clients: int, origin: float
) -> list[Created]:
    """Each of ``clients`` takes the next pod when its last one is created."""
    pending = iter(enumerate(jobs))
    out: list[Created | None] = [None] * len(jobs)

    async def client() -> None:
        for i, (ns, body) in pending:
            out[i] = await api.create_pod(ns, body, origin)

    await asyncio.gather(*(client() for _ in range(clients)))
    return [c for c in out if c is not None]


if __name__ == "__main__":
    asyncio.run(_create_all(json.loads(sys.stdin.readline())))
