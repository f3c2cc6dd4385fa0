"""``make bench``: the hot path against its floor, workers, handshakes and bursts, with wrk.

    .venv/bin/python -m bench [--rounds 3] [--seconds 5] [--only saturated,workers]
                              [--out bench/results]

Prints a table, writes ``OUT/hotpath.json`` (every round, the machine, the medians)
and ``OUT/latency.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import hotpath, plot, workload
from bench.wrk import wrk_binary
from webhook.admission import decision as admission
from webhook.admission.reviews import decode_review
from webhook.admission.verdicts import encode

SCENARIOS = ("saturated", "half_rate", "workers", "json_floor", "handshake", "apiserver_burst")


def decision_us(n: int = 20000) -> dict[str, float]:
    """In-process CPU cost of the pure parts of one admission of the workload's review."""
    config = workload.config()
    body = workload.review_body()
    started = time.process_time()
    for _ in range(n):
        decode_review(body)
    decode = (time.process_time() - started) / n
    _, request = decode_review(body)
    started = time.process_time()
    for _ in range(n):
        plan = admission.plan(request, config)
        assert isinstance(plan, admission.Plan)
        encode(admission.respond(plan, admission.Outcome(), fail_closed=False))
    decide = (time.process_time() - started) / n
    return {"decode_us": decode * 1e6, "plan_and_respond_us": decide * 1e6}


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    wrk_version = subprocess.run(
        [wrk_binary(), "-v"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "aiohttp": version("aiohttp"),
        "orjson": version("orjson"),
        "wrk": wrk_version.strip(),
        "review_bytes": len(workload.review_body()),
        "loadavg_start": os.getloadavg(),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'scenario':16} {'server':10} {'wk':>2} {'req/s':>7} {'CPU µs/req':>10} "
        f"{'capacity x':>9} {'rate x':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} "
        f"{'PSS MiB/wk':>10}"
    )
    lines = [head, "-" * len(head)]
    for scenario in results:
        for row in scenario["summary"]:
            ratio_key = next(k for k in row if k.startswith("ratio_to_"))
            pss = "/".join(f"{p / 1024:.0f}" for p in row["pss_kib_per_worker"])
            lines.append(
                f"{scenario['scenario']:16} {row['server']:10} {row['workers']:>2} "
                f"{row['rate']:>7.0f} {row['cpu_us_per_request']:>10.0f} "
                f"{row['capacity_ratio']:>9.2f} {row[ratio_key]:>6.2f} {row['p50_ms']:>7.2f} "
                f"{row['p99_ms']:>7.2f} {row['p999_ms']:>7.2f} {pss:>10}"
            )
    return "\n".join(lines)


def latency_plot(results: list[dict[str, Any]], path: Path) -> None:
    panels = []
    labels = ["P50", "P90", "P99", "P99.9"]
    for scenario in results:
        if scenario["scenario"] not in ("half_rate", "saturated", "apiserver_burst"):
            continue
        series = []
        for name, color in (("floor", plot.BLUE), ("webhook", plot.ORANGE)):
            runs = [r for rd in scenario["rounds"] for r in rd if r["server"] == name]
            runs.sort(key=lambda r: r["p99_us"])
            mid = runs[len(runs) // 2]  # the round with the median p99
            points = [
                (i, mid[key] / 1000)
                for i, key in enumerate(("p50_us", "p90_us", "p99_us", "p999_us"))
            ]
            series.append(plot.Series(name, color, points))
        title = {
            "half_rate": f"HALF RATE ({scenario.get('offered_rate', 0):.0f}/S)",
            "saturated": "SATURATED (16 CONNECTIONS)",
            "apiserver_burst": "BURST: 25 KEPT + 39 NEW CONNECTIONS",
        }[scenario["scenario"]]
        panels.append(plot.Panel(title, labels, "LATENCY MS", series))
    if panels:
        plot.render(
            path,
            "/MUTATE LATENCY: WEBHOOK HOT PATH VS FLOOR",
            panels,
            note="MEDIAN ROUND, WRK OVER TLS ON LOOPBACK, ONE WORKER",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    info = machine()
    pure = decision_us()
    print(
        f"in-process, per review: decode {pure['decode_us']:.0f} µs, "
        f"plan + respond {pure['plan_and_respond_us']:.0f} µs"
    )
    results = hotpath.run_all(hotpath.Settings(rounds=args.rounds, seconds=args.seconds), only)
    info["loadavg_end"] = os.getloadavg()
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": info,
        "settings": {"rounds": args.rounds, "seconds": args.seconds},
        "in_process": pure,
        "scenarios": results,
    }
    (args.out / "hotpath.json").write_text(json.dumps(doc, indent=1))
    latency_plot(results, args.out / "latency.png")
    print(f"wrote {args.out / 'hotpath.json'} and {args.out / 'latency.png'}")


if __name__ == "__main__":
    main()
