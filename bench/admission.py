"""Admission latency and throughput on the hot path (every secret already known fresh).

Runs the real server over TLS on loopback with the real PullSecretManager, whose
index is pre-filled and whose Kubernetes client and credential cache fail if they
are touched: the numbers are for the path that makes no network call.

    .venv/bin/python -m bench.admission [--requests 5000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.configs import sample_config
from tests.support.hotpath import known_secret, offline_manager, remember
from tests.support.reviews import make_pod, make_review
from webhook import admission
from webhook.needs import pull_needs
from webhook.pki import make_ca, make_serving_cert
from webhook.server import ServeOptions, start_server

ACR = "contoso.azurecr.io/app:1"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/api:2"


def pure_decision_seconds(n: int) -> float:
    config = sample_config()
    review = make_review(make_pod(ACR, ECR, "nginx", generate_name="web-"))
    request: Any = review["request"]
    started = time.perf_counter()
    for _ in range(n):
        plan = admission.plan(request, config)
        assert isinstance(plan, admission.Plan)
        admission.respond(plan, admission.Outcome(), fail_closed=False)
    return (time.perf_counter() - started) / n


async def served(requests: int, concurrency: int) -> dict[str, float]:
    config = sample_config()
    manager = offline_manager(config)
    pod = make_pod(ACR, ECR, generate_name="web-")
    for need in pull_needs(config, pod):
        remember(manager, known_secret(need))
    with tempfile.TemporaryDirectory() as tmp:
        ca = make_ca()
        make_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(
            Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        )
        server = await start_server(
            config,
            manager,
            ServeOptions(
                cert_file=f"{tmp}/tls.crt",
                key_file=f"{tmp}/tls.key",
                host="127.0.0.1",
                port=0,
                health_host="127.0.0.1",
                health_port=0,
            ),
        )
        ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        body = json.dumps(make_review(pod)).encode()
        latencies: list[float] = []
        url = f"https://127.0.0.1:{server.port}/mutate"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
        ) as session:

            async def one() -> None:
                t = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    doc = await r.json()
                    assert doc["response"]["patch"]
                latencies.append(time.perf_counter() - t)

            for _ in range(50):  # warm-up: TLS sessions, imports, caches
                await one()
            latencies.clear()
            queue = iter(range(requests))

            async def worker() -> None:
                for _ in queue:
                    await one()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        await server.stop()
    latencies.sort()
    return {
        "requests": requests,
        "concurrency": concurrency,
        "throughput_per_s": requests / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    pure = pure_decision_seconds(20000)
    print(f"pure decision (plan + patch) per pod: {pure * 1e6:.1f} µs")
    # One client at a time gives the latency the API server sees; many, the throughput.
    for requests, concurrency in ((min(args.requests, 1000), 1), (args.requests, args.concurrency)):
        result = asyncio.run(served(requests, concurrency))
        print(
            f"/mutate over TLS, hot path: {result['throughput_per_s']:.0f} req/s, "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms "
            f"({requests} requests, concurrency {concurrency}); "
            f"max RSS {result['max_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
