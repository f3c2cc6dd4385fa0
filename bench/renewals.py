"""A renewal wave on the real control plane, time scaled: secrets minted in one storm,
renewed by the leader, while another client's unrelated requests are timed.

The whole product (``devenv/stack.py``: a real kube-apiserver, two webhook replicas)
with ``refresh.fraction`` 0.1 and the short-lived registry of the stack, whose tokens
live 150 s (``SHORT_TOKEN_SECONDS``): what a 3-hour token's renewals do over hours
happens here in about a minute. ``--namespaces`` opted-in namespaces each get one pod
from that registry, all at once: one credential, one instant, one pull secret per
namespace. Then, until the end of the spread, the API server's own
``apiserver_request_total`` is read every second (the leader's renewal writes: PUTs
of Secrets and of records) while a prober sends unrelated reads (a GET of a
namespace, a LIST of ConfigMaps) every 50 ms. The same prober ran for ``--idle``
seconds before the storm: the p99 of those reads during the wave is compared with it.

    .venv/bin/python -m bench.renewals [--namespaces 1000] [--idle 20]

Writes ``bench/results/renewals.json``. With 150-s tokens every renewal is within
``webhook.pullsecrets.renewals.URGENT_SECONDS`` (5 min) of its expiry, so the leader's token bucket
lets them all through: that measures the spread alone. ``--token-seconds 900`` puts
the renewals outside it, so the bucket paces them as it would real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.storm import apiserver_writes
from devenv.controlplane import ControlPlane, locate
from devenv.stack import SHORT_TOKEN_SECONDS, Stack, running_stack
from devenv.support import storm
from webhook.kube.objects import PLURAL

#: The prober's pace: 20 reads a second, light beside the wave, enough for a p99.
PROBE_SECONDS = 0.05


async def probe(api: storm.Api, until: asyncio.Event, out: list[tuple[float, float]]) -> None:
    """Unrelated reads, one at a time: (when, seconds) each."""
    paths = ("/api/v1/namespaces/default", "/api/v1/namespaces/kube-system/configmaps?limit=20")
    i = 0
    while not until.is_set():
        started = time.perf_counter()
        await api.get(paths[i % 2])
        out.append((time.time(), time.perf_counter() - started))
        i += 1
        await asyncio.sleep(PROBE_SECONDS)


def renewal_writes(metrics: str) -> tuple[int, int]:
    """(Secret PUTs, record PUTs) the API server has served."""
    w = apiserver_writes(metrics)
    return w["secrets"].get("PUT", 0), w[PLURAL].get("PUT", 0)


async def measure(st: Stack, args: argparse.Namespace) -> dict[str, Any]:
    assert st.acr_short is not None
    st.acr_short.refresh_token_lifetime = args.token_seconds
    image = f"{st.acr_short.login_server}/demo/hello:v1"
    api = storm.admin_api(st.controlplane, 32)
    names = [f"wave-{i}" for i in range(args.namespaces)]
    try:
        await storm.make_namespaces(api, names)
        stop = asyncio.Event()
        idle: list[tuple[float, float]] = []
        prober = asyncio.create_task(probe(api, stop, idle))
        await asyncio.sleep(args.idle)
        stop.set()
        await prober

        base_secrets, base_records = renewal_writes(await api.get("/metrics"))
        gate = asyncio.Semaphore(32)

        async def create(ns: str) -> storm.Created:
            async with gate:
                return await api.create_pod(ns, storm.pod("p", [image]))

        minted_at = time.time()
        created = await asyncio.gather(*(create(ns) for ns in names))
        mint_seconds = time.time() - minted_at
        # The admissions waited for their records' Ready update: renewals' come after.
        _, base_records = renewal_writes(await api.get("/metrics"))
        patched = sum(c.status == 201 and len(c.pull_secrets) == 1 for c in created)

        stop = asyncio.Event()
        wave: list[tuple[float, float]] = []
        prober = asyncio.create_task(probe(api, stop, wave))
        samples: list[tuple[float, int, int]] = []
        # Every secret's first renewal is due by the end of the spread (fraction 0.1 of
        # the lifetime, plus half of what is left before the expiry margin), counted
        # from the credential's issue (within the storm): a little past it, all are in.
        spread_end = 0.1 * args.token_seconds + 0.5 * (0.9 * args.token_seconds - 60)
        deadline = minted_at + mint_seconds + spread_end + 10
        while time.time() < deadline:
            secrets, records = renewal_writes(await api.get("/metrics"))
            samples.append((time.time(), secrets - base_secrets, records - base_records))
            await asyncio.sleep(1.0)
        stop.set()
        await prober
    finally:
        await api.close()
    rates = [
        ((b[1] + b[2]) - (a[1] + a[2])) / (b[0] - a[0]) for a, b in itertools.pairwise(samples)
    ]
    moving = [b[0] for a, b in itertools.pairwise(samples) if b[1] > a[1]] or [minted_at]
    first, last = moving[0] - 1.0, moving[-1]
    during = [d for t, d in wave if first <= t <= last]
    idle_p99 = storm.percentile([d for _, d in idle], 99)
    wave_p99 = storm.percentile(during, 99) if during else 0.0
    secrets_put, records_put = samples[-1][1], samples[-1][2]
    return {
        "namespaces": args.namespaces,
        "pods_patched": patched,
        "mint_seconds": mint_seconds,
        "token_seconds": args.token_seconds,
        "renewed": secrets_put,
        "record_writes": records_put,
        "writes_per_renewal": (secrets_put + records_put) / secrets_put if secrets_put else 0.0,
        "first_renewal_after_mint_seconds": first - minted_at,
        "last_renewal_after_mint_seconds": last - minted_at,
        "seconds_with_renewals": len(moving),
        "leader_writes_per_second_max": max(rates, default=0.0),
        "leader_writes_per_second_mean": (
            (secrets_put + records_put) / (last - first) if last > first else 0.0
        ),
        "probe_p99_idle_seconds": idle_p99,
        "probe_p99_wave_seconds": wave_p99,
        "probe_p99_ratio": wave_p99 / idle_p99 if idle_p99 else 0.0,
        "probes": {"idle": len(idle), "wave": len(during)},
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument(
        "--token-seconds",
        type=int,
        default=SHORT_TOKEN_SECONDS,
        help="the short-lived registry's token lifetime (the window scales with it)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/renewals.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ControlPlane(locate()) as cp,
        running_stack(
            cp, Path(tmp) / "stack", refresh_interval=1, gc_grace=3600, refresh_fraction=0.1
        ) as st,
    ):
        out = asyncio.run(measure(st, args))
    out["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    return 0 if out["renewed"] >= out["pods_patched"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
