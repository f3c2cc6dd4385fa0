"""One server under load, in its own process(es): the webhook's hot path, or the floor.

``webhook``: the real server (``start_server``) and the real ``PullSecretManager``,
its index pre-filled with the workload's secrets and its Kubernetes client and
credential cache replaced by stand-ins that fail when touched; outbound
connections are refused and counted too (``devenv.support.hotpath``).

``floor``: the least this stack can do per review: a bare aiohttp handler on the
same TLS context, reading the body, decoding it with the same JSON library and
answering a fixed allowed AdmissionReview. ``floor-json``: the same, decoding with the
standard library's ``json`` (the floor as first measured, before orjson).

Both fork their workers with ``webhook.server.workers`` and share the port with
SO_REUSEPORT. Prints ``ready`` when serving; on SIGTERM each worker prints one
JSON line with what it served and what it tried to reach.

    python -m bench.serve webhook|floor|floor-json --port P --cert-file C --key-file K [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bench import workload
from devenv.support.hotpath import (
    CALLS,
    known_secret,
    no_outbound_connections,
    offline_manager,
    remember,
)
from webhook.admission import jsonio
from webhook.admission.needs import pull_needs
from webhook.config.store import ConfigStore
from webhook.server.app import ServeOptions, start_server
from webhook.server.tlsreload import ReloadingTLS
from webhook.server.workers import Secondaries, Worker, fork_workers
from webhook.telemetry.metrics import Metrics


def _say(line: str) -> None:
    """One line on the shared stdout in a single write, so workers' lines never interleave."""
    os.write(1, (line + "\n").encode())


def floor_handler(
    stdlib_json: bool = False,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The floor's handler: read the body, decode it (orjson, or the standard library's
    json), answer a fixed allowed AdmissionReview. Also timed alone by ``bench.handler``."""
    loads = json.loads if stdlib_json else jsonio.loads

    async def mutate(request: web.Request) -> web.Response:
        doc = loads(await request.read())
        answer = {
            "apiVersion": doc["apiVersion"],
            "kind": "AdmissionReview",
            "response": {"uid": doc["request"]["uid"], "allowed": True},
        }
        return web.Response(body=jsonio.dumps(answer), content_type="application/json")

    return mutate


async def _floor(options: ServeOptions, stdlib_json: bool = False) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/mutate", floor_handler(stdlib_json))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = ReloadingTLS(options.cert_file, options.key_file)
    await web.TCPSite(
        runner, options.host, options.port, ssl_context=tls.context, reuse_port=True
    ).start()
    return runner


async def serve(
    kind: str, worker: Worker, secondaries: Secondaries, options: ServeOptions
) -> dict[str, Any]:
    stopping = asyncio.Event()

    def stop() -> None:
        secondaries.signal(signal.SIGTERM)  # the primary passes it on, as `serve` does
        stopping.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    metrics = Metrics()
    with no_outbound_connections():
        if kind in ("floor", "floor-json"):
            runner = await _floor(options, stdlib_json=kind == "floor-json")
            _say(f"ready {os.getpid()}")
            await stopping.wait()
            await runner.cleanup()
        else:
            config = workload.config()
            manager = offline_manager(config, namespaces=(workload.NAMESPACE,))
            for need in pull_needs(config, workload.pod()):
                remember(manager, known_secret(need, namespace=workload.NAMESPACE))
            running = await start_server(ConfigStore(config), manager, options, metrics=metrics)
            _say(f"ready {os.getpid()}")
            await stopping.wait()
            await running.stop()
    results = metrics.admissions.by_result()
    return {
        "kind": kind,
        "worker": worker.index,
        "pid": os.getpid(),
        "admissions": results,
        "network_calls": dict(CALLS),
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["webhook", "floor", "floor-json"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    options = ServeOptions(
        cert_file=args.cert_file,
        key_file=args.key_file,
        host="127.0.0.1",
        port=args.port,
        health=False,
        reuse_port=True,
    )
    worker, secondaries = fork_workers(args.workers)
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    summary = asyncio.run(serve(args.kind, worker, secondaries, options))
    _say(json.dumps(summary))
    asyncio.run(secondaries.wait(10))
    sys.exit(0)


if __name__ == "__main__":
    main()
