"""Before and after: ``serve --names-only`` of another revision against this tree's, with wrk.

The same request path (decode, plan, respond, metrics, logs) without a secret source,
so any revision of the project can be compared. The base revision is checked out in
a temporary git worktree; the two servers are started in turn, round after round.

    .venv/bin/python -m bench.compare --base main [--rounds 3] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import yaml

from bench import servers, workload, wrk
from devenv.serve import Serve, free_port
from devenv.support.configs import sample_document

REPO = Path(__file__).resolve().parents[1]


def serve(tree: Path, tmp: Path, tls: tuple[Path, Path]) -> tuple[subprocess.Popen[bytes], str]:
    port, health = free_port(), free_port()
    serve = Serve(tmp / "config.yaml", *tls, port, health, names_only=True, log_level="warning")
    process = subprocess.Popen(serve.command(), cwd=tree, stderr=subprocess.DEVNULL)
    try:
        serve.wait_ready(process)
    except RuntimeError as e:
        raise RuntimeError(f"serve from {tree} did not start: {e}") from None
    return process, f"https://127.0.0.1:{port}/mutate"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    body = workload.review_body()
    results: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        base = tmp / "base"
        subprocess.run(
            ["git", "worktree", "add", "--quiet", "--detach", str(base), args.base],
            cwd=REPO,
            check=True,
        )
        try:
            tls = servers.write_tls(tmp)
            (tmp / "config.yaml").write_text(yaml.safe_dump(sample_document()))
            for i in range(args.rounds):
                order = [("base", base), ("this", REPO)]
                for label, tree in order if i % 2 == 0 else reversed(order):
                    process, url = serve(tree, tmp, tls)
                    try:
                        wrk.run(url, body, connections=8, seconds=1)
                        cpu = servers.cpu_seconds(process.pid)
                        r = wrk.run(url, body, connections=16, seconds=args.seconds)
                        cpu = servers.cpu_seconds(process.pid) - cpu
                    finally:
                        process.terminate()
                        process.wait(timeout=30)
                    results[label].append(
                        {
                            "rate": r.rate,
                            "cpu_us_per_request": cpu / max(r.requests, 1) * 1e6,
                            "p99_ms": r.p99_us / 1000,
                        }
                    )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False
            )
    summary = {
        label: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for label, runs in results.items()
    }
    ratio = summary["base"]["cpu_us_per_request"] / summary["this"]["cpu_us_per_request"]
    for label, figures in summary.items():
        print(
            f"{label:5} {figures['rate']:7.0f} req/s  {figures['cpu_us_per_request']:6.0f} "
            f"CPU µs/req  p99 {figures['p99_ms']:6.1f} ms"
        )
    print(f"capacity (CPU per review) of this tree: {ratio:.2f}x the base's")
    print(json.dumps({"base": args.base, "rounds": results, "median": summary}))


if __name__ == "__main__":
    main()
