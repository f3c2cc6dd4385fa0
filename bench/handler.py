"""The request handler alone, in process: the webhook's ``handle_mutate`` against the floor's.

No socket, no TLS, no wrk: each handler is called on aiohttp requests built in memory
(no mocks) carrying the benchmark's review (``bench/workload.py``), the webhook's with
its manager's records filled as ``make bench`` fills them, so every review is answered
``patched`` from memory.
What is left is the handler's own CPU: reading the body, decoding and checking it, the
decision, the answer. Steady to a microsecond or two where wrk's figures move by 5%, so
it is the tool for steps of a few microseconds (bench/README.md).

Each figure is the fastest batch of one process (best of ``--batches`` batches of
``--batch`` reviews); processes alternate between the servers, and the summary is the
median of those minima. ``--base REV`` adds another revision's webhook, run from a
temporary git worktree of it with this harness.

    .venv/bin/python -m bench.handler [--processes 6] [--base REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KINDS = ("floor", "webhook")


class _Protocol:
    """What aiohttp's StreamReader and Request ask of the connection's protocol: the body
    is fed whole, at once, and the request comes from no socket."""

    _reading_paused = False
    transport = None
    ssl_context = None
    peername = None
    sockname = None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


async def _measure(kind: str, batches: int, batch: int) -> float:
    from aiohttp import streams, web
    from aiohttp.http import HttpVersion11, RawRequestMessage
    from aiohttp.web_urldispatcher import UrlMappingMatchInfo
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    from bench import workload
    from devenv.support.hotpath import known_secret, offline_manager, remember
    from webhook.admission.needs import pull_needs
    from webhook.config.store import ConfigStore
    from webhook.server.app import ServerState, create_webhook_app, handle_mutate
    from webhook.telemetry.metrics import Metrics

    body = workload.review_body()

    config = workload.config()
    manager = offline_manager(config, namespaces=(workload.NAMESPACE,))
    for need in pull_needs(config, workload.pod()):
        remember(manager, known_secret(need, namespace=workload.NAMESPACE))
    app = create_webhook_app(ConfigStore(config), manager, Metrics(), ServerState())
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = handle_mutate
    if kind == "floor":  # only this tree's floor is run: an older bench/ may not have it
        from bench.serve import floor_handler

        handler = floor_handler()
    loop = asyncio.get_running_loop()
    headers = CIMultiDictProxy(
        CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(body))})
    )
    raw_headers = tuple((k.encode(), v.encode()) for k, v in headers.items())
    message = RawRequestMessage(
        "POST", "/mutate", HttpVersion11, headers, raw_headers, False, None, False, False,
        URL("/mutate"),
    )  # fmt: skip
    protocol: Any = _Protocol()
    task: Any = None  # the request's task: read by nothing on the handlers' path
    match_info = UrlMappingMatchInfo({}, handler)  # type: ignore[arg-type]
    match_info.add_app(app)

    def request() -> web.Request:
        payload = streams.StreamReader(protocol, 2**16, loop=loop)
        payload.feed_data(body)
        payload.feed_eof()
        r = web.Request(message, payload, protocol, None, task, loop)  # type: ignore[arg-type]
        r._match_info = match_info
        return r

    best = float("inf")
    answer = b""
    for _ in range(batches):
        requests = [request() for _ in range(batch)]  # made outside the timed loop
        started = time.perf_counter()
        for r in requests:
            response = await handler(r)
        best = min(best, (time.perf_counter() - started) / batch)
        assert isinstance(response, web.Response) and response.status == 200, response
        answer = response.body if isinstance(response.body, bytes) else b""
    if kind == "webhook" and b'"patch"' not in answer:
        raise RuntimeError(f"the webhook did not patch the review: {answer[:200]!r}")
    return best * 1e6


def _child(tree: Path, kind: str, batches: int, batch: int) -> float:
    """One process of ``kind`` with ``tree``'s code (this harness file either way)."""
    # -c: the tree's own packages come first on sys.path, not this file's directory.
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    sizes = ("--batches", str(batches), "--batch", str(batch))
    out = subprocess.run(
        [sys.executable, "-c", code, __file__, "--run", kind, *sizes],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} from {tree} failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--processes", type=int, default=6, help="processes per server")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--base", help="git revision whose webhook to add")
    parser.add_argument("--run", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        us = asyncio.run(_measure(args.run, args.batches, args.batch))
        print(json.dumps({"kind": args.run, "us": us}))
        return
    with tempfile.TemporaryDirectory() as name:
        trees: dict[str, tuple[Path, str]] = {
            "floor": (REPO, "floor"),
            "webhook": (REPO, "webhook"),
        }
        if args.base:
            base = Path(name) / "base"
            subprocess.run(
                ["git", "worktree", "add", "--quiet", "--detach", str(base), args.base],
                cwd=REPO,
                check=True,
            )
            trees["base webhook"] = (base, "webhook")
        try:
            minima: dict[str, list[float]] = {label: [] for label in trees}
            for i in range(args.processes):
                order = list(trees.items())
                for label, (tree, kind) in order if i % 2 == 0 else reversed(order):
                    minima[label].append(_child(tree, kind, args.batches, args.batch))
        finally:
            if args.base:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False
                )
    medians = {label: statistics.median(values) for label, values in minima.items()}
    for label, values in minima.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{label:13} {medians[label]:6.1f} µs per review (processes: {shown})")
    print(f"the webhook's handler costs {medians['webhook'] - medians['floor']:.1f} µs more")
    if args.base:
        gain = medians["base webhook"] - medians["webhook"]
        print(f"this tree's webhook: {gain:+.1f} µs against {args.base}'s (positive: cheaper)")
    print(json.dumps({"base": args.base, "minima": minima, "median": medians}))


if __name__ == "__main__":
    main()
