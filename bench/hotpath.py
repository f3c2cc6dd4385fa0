"""The hot path against the floor of its stack, with wrk, in one run.

Every scenario starts the floor and the webhook in turn, alternating round by
round, so both see the same neighbours on a shared machine; figures are the
medians of the rounds and the webhook/floor ratios are taken per round.

Scenarios:
- ``saturated``: 16 keep-alive connections, as fast as they go, one worker.
- ``half_rate``: the same connections paced to half the webhook's saturating rate
  (each connection waits between requests), for the latency the API server sees.
- ``workers``: one worker against two (SO_REUSEPORT), 32 connections, two wrk threads.
- ``json_floor``: the saturated load against the floor as first measured, before orjson:
  decoding with the standard library's ``json`` (``floor-json``), beside the floor
  with orjson and the webhook; ratios against ``floor-json``.
- ``handshake``: a new TLS connection per request (``Connection: close``).
- ``apiserver_burst``: what kube-apiserver does under a burst of 64 concurrent
  admissions: at most 25 idle connections are kept per host (client-go
  ``transport/cache.go`` ``idleConnsPerHost = 25``), so 25 connections are reused
  while the other 39 open a new TLS connection for each request.

Every webhook run must answer only "patched" and make no network call (asserted).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import workload, wrk
from bench.servers import Server, write_tls

KEEPALIVE_CONNECTIONS = 16
#: client-go keeps at most this many idle connections per host (transport/cache.go).
APISERVER_IDLE_CONNS = 25
BURST_CONCURRENCY = 64


@dataclass
class Settings:
    rounds: int = 3
    seconds: float = 5.0
    warmup_seconds: float = 1.0


@dataclass
class Run:
    server: str
    workers: int
    result: wrk.Result
    cpu_seconds: float = 0.0
    """CPU time the server's workers used during the measured load."""
    memory_kib: list[dict[str, int]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(self.result.requests, 1) * 1e6

    def row(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "workers": self.workers,
            **self.result.summary(),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_us_per_request": round(self.cpu_us_per_request, 1),
            "memory_kib": self.memory_kib,
            **self.extra,
        }


Load = Callable[[Server], wrk.Result]


def _serve(kind: str, tls: tuple[Path, Path], workers: int, load: Load, s: Settings) -> Run:
    with Server(kind, tls, workers=workers) as server:
        wrk.run(server.url, workload.review_body(), connections=8, seconds=s.warmup_seconds)
        cpu = server.cpu()
        result = load(server)
        cpu = server.cpu() - cpu
        server.sample_memory()
    memory = [server.memory[pid] for pid in server.pids]
    run = Run(kind, workers, result, cpu, memory)
    if kind == "webhook":
        admissions = server.admissions()
        calls = server.network_calls()
        run.extra = {"admissions": admissions, "network_calls": calls}
        # The hot path proven: every review patched from memory, nothing reached for.
        assert calls == {}, f"the hot path made network calls: {calls}"
        assert set(admissions) == {"patched"}, f"not every review was patched: {admissions}"
        assert admissions["patched"] >= result.requests, (admissions, result.requests)
    assert result.errors == 0, f"{kind}: wrk saw errors: {result.summary()}"
    return run


def _alternate(
    tls: tuple[Path, Path], s: Settings, load: Load, pairs: list[tuple[str, int]]
) -> list[list[Run]]:
    """``rounds`` rounds; in each, every (server, workers) pair in turn."""
    rounds: list[list[Run]] = []
    for i in range(s.rounds):
        order = pairs if i % 2 == 0 else list(reversed(pairs))
        runs = [_serve(kind, tls, workers, load, s) for kind, workers in order]
        rounds.append(sorted(runs, key=lambda r: pairs.index((r.server, r.workers))))
    return rounds


def _keepalive(connections: int, seconds: float, threads: int = 1, delay_ms: float = 0) -> Load:
    body = workload.review_body()

    def load(server: Server) -> wrk.Result:
        return wrk.run(
            server.url,
            body,
            connections=connections,
            seconds=seconds,
            threads=threads,
            delay_ms=delay_ms,
        )

    return load


def _burst(seconds: float) -> Load:
    """25 reused connections and 39 new-connection-per-request ones, at once."""
    body = workload.review_body()

    def load(server: Server) -> wrk.Result:
        with ThreadPoolExecutor(2) as pool:
            kept = pool.submit(
                wrk.run, server.url, body, connections=APISERVER_IDLE_CONNS, seconds=seconds
            )
            fresh = pool.submit(
                wrk.run,
                server.url,
                body,
                connections=BURST_CONCURRENCY - APISERVER_IDLE_CONNS,
                seconds=seconds,
                close=True,
            )
            a, b = kept.result(), fresh.result()
        # One result for the table: requests summed, latency of the slower group.
        slow = max(a, b, key=lambda r: r.p99_us)
        return wrk.Result(
            requests=a.requests + b.requests,
            duration_us=max(a.duration_us, b.duration_us),
            connect_errors=a.connect_errors + b.connect_errors,
            read_errors=a.read_errors + b.read_errors,
            write_errors=a.write_errors + b.write_errors,
            status_errors=a.status_errors + b.status_errors,
            timeouts=a.timeouts + b.timeouts,
            p50_us=slow.p50_us,
            p90_us=slow.p90_us,
            p99_us=slow.p99_us,
            p999_us=slow.p999_us,
            max_us=max(a.max_us, b.max_us),
            mean_us=slow.mean_us,
        )

    return load


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise(name: str, rounds: list[list[Run]], base: tuple[str, int]) -> dict[str, Any]:
    """Medians per (server, workers), and per-round ratios against ``base``."""
    keys = [(r.server, r.workers) for r in rounds[0]]
    out: dict[str, Any] = {"scenario": name, "rounds": [[r.row() for r in rd] for rd in rounds]}
    rows = []
    for key in keys:
        runs = [next(r for r in rd if (r.server, r.workers) == key) for rd in rounds]
        bases = [next(r for r in rd if (r.server, r.workers) == base) for rd in rounds]
        ratios = [r.result.rate / b.result.rate for r, b in zip(runs, bases, strict=True)]
        # CPU per request is what a shared machine disturbs least: capacity = 1 / it.
        cpu_ratios = [
            b.cpu_us_per_request / r.cpu_us_per_request for r, b in zip(runs, bases, strict=True)
        ]
        rows.append(
            {
                "server": key[0],
                "workers": key[1],
                "rate": _median([r.result.rate for r in runs]),
                "cpu_us_per_request": _median([r.cpu_us_per_request for r in runs]),
                "capacity_ratio": _median(cpu_ratios),
                "capacity_ratios": [round(x, 3) for x in cpu_ratios],
                "p50_ms": _median([r.result.p50_us / 1000 for r in runs]),
                "p99_ms": _median([r.result.p99_us / 1000 for r in runs]),
                "p999_ms": _median([r.result.p999_us / 1000 for r in runs]),
                "ratio_to_" + "_".join(map(str, base)): _median(ratios),
                "ratios": [round(x, 3) for x in ratios],
                "pss_kib_per_worker": [m.get("pss", 0) for m in runs[len(runs) // 2].memory_kib],
            }
        )
    out["summary"] = rows
    return out


def run_all(s: Settings, only: set[str] | None = None) -> list[dict[str, Any]]:
    wanted = only or {
        "saturated",
        "half_rate",
        "workers",
        "json_floor",
        "handshake",
        "apiserver_burst",
    }
    results: list[dict[str, Any]] = []
    floor_webhook = [("floor", 1), ("webhook", 1)]
    with tempfile.TemporaryDirectory() as tmp:
        tls = write_tls(Path(tmp))
        saturated = _alternate(tls, s, _keepalive(KEEPALIVE_CONNECTIONS, s.seconds), floor_webhook)
        results.append(summarise("saturated", saturated, ("floor", 1)))
        if "half_rate" in wanted:
            webhook_rate = _median([rd[1].result.rate for rd in saturated])
            # Each connection waits so that all of them together offer half that rate.
            delay_ms = 1000 * KEEPALIVE_CONNECTIONS / (webhook_rate / 2)
            rounds = _alternate(
                tls,
                s,
                _keepalive(KEEPALIVE_CONNECTIONS, s.seconds, delay_ms=delay_ms),
                floor_webhook,
            )
            half = summarise("half_rate", rounds, ("floor", 1))
            half["offered_rate"] = webhook_rate / 2
            results.append(half)
        if "workers" in wanted:
            pairs = [("floor", 1), ("webhook", 1), ("floor", 2), ("webhook", 2)]
            rounds = _alternate(tls, s, _keepalive(32, s.seconds, threads=2), pairs)
            results.append(summarise("workers", rounds, ("webhook", 1)))
        if "json_floor" in wanted:
            pairs = [("floor", 1), ("floor-json", 1), ("webhook", 1)]
            rounds = _alternate(tls, s, _keepalive(KEEPALIVE_CONNECTIONS, s.seconds), pairs)
            results.append(summarise("json_floor", rounds, ("floor-json", 1)))
        if "handshake" in wanted:
            body = workload.review_body()

            def fresh(server: Server) -> wrk.Result:
                return wrk.run(
                    server.url,
                    body,
                    connections=KEEPALIVE_CONNECTIONS,
                    seconds=s.seconds,
                    close=True,
                )

            rounds = _alternate(tls, s, fresh, floor_webhook)
            results.append(summarise("handshake", rounds, ("floor", 1)))
        if "apiserver_burst" in wanted:
            rounds = _alternate(tls, s, _burst(s.seconds), floor_webhook)
            results.append(summarise("apiserver_burst", rounds, ("floor", 1)))
    return results
