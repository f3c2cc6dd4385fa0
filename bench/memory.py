"""Memory of one replica under hostile load, and whether it comes back down.

Starts ``python -m webhook serve --names-only`` as its own process (the numbers are that
process's RSS from /proc), then:

1. baseline: RSS after start and a few normal admissions; the normal admission latency;
2. burst: opens N TLS connections (half idle after the handshake, half trickling header
   bytes) and, while they are open, posts the largest review the size and value limits let
   through; records the peak RSS and the latency of a normal admission meanwhile;
3. recovery: closes everything and reads RSS again after a short settle time.

Two more scenarios (``--scenario``):

- ``half-open``: N plain TCP connections that never start TLS (each reconnects a second
  after the replica closes it, as a persistent attacker would), held for ``--hold``
  seconds while normal admissions go on; RSS before, during (the peak of samples taken
  every 0.2 s) and after, and the normal admissions' statuses and slowest time;
- ``decoded``: ``--reviews`` concurrent copies of the review that decodes largest for its
  size (one string filling the 7 MiB body, ending in one astral character, so Python
  stores every character in 4 bytes), then the same body in ASCII; the peak RSS of each.

Every figure is printed next to the baseline measured in the same run, and against the
Deployment's memory limit (256 MiB, manifests/base/deployment.yaml).

    .venv/bin/python -m bench.memory [--connections 1000] [--settle 15]
    .venv/bin/python -m bench.memory --scenario half-open --connections 10000 --hold 30
    .venv/bin/python -m bench.memory --scenario decoded --reviews 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devenv.serve import Serve, free_port
from devenv.support.configs import sample_document
from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import write_serving_pair
from webhook.admission.reviews import MAX_VALUES
from webhook.certs.pki import make_ca
from webhook.server.app import MAX_BODY_BYTES

LIMIT_MIB = 256
ACR = "contoso.azurecr.io/app:1"


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def post(ctx: ssl.SSLContext, port: int, body: bytes) -> tuple[int, float]:
    """One request on a fresh connection; (status, seconds)."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    head = (
        f"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        writer.write(head + body)
        await writer.drain()
        data = await reader.read()
    except (OSError, ssl.SSLError):
        data = b""  # reset by the replica (refused mid-body): no status
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, time.perf_counter() - started


def normal_review() -> bytes:
    return json.dumps(make_review(make_pod(ACR, generate_name="web-"))).encode()


def maximal_review() -> bytes:
    """As many empty objects as the value limit admits, padded up to the body size limit.

    The issue's worst case: ``containers: [{},{},…]``. The limit counts '{' and ',' before
    decoding, so each ``{}`` in a list costs two of MAX_VALUES.
    """
    review = make_review(make_pod(ACR, generate_name="web-"))
    pod = review["request"]["object"]
    pod["spec"]["containers"] += [{}] * (MAX_VALUES // 2 - 200)
    body = json.dumps(review, separators=(",", ":")).encode()
    pad = MAX_BODY_BYTES - len(body) - 64
    pod["metadata"]["annotations"] = {"pad": "x" * max(pad, 0)}
    return json.dumps(review, separators=(",", ":")).encode()


def decoded_review(astral: bool = True) -> bytes:
    """The review that decodes largest for its size: one string filling the body up to the
    size limit. Ending it in one character beyond U+FFFF makes Python store every
    character of it in 4 bytes (PEP 393): 28 MiB for 7 MiB of body."""
    review = make_review(make_pod(ACR, generate_name="web-"))
    pod = review["request"]["object"]
    body = json.dumps(review, separators=(",", ":")).encode()
    tail = "\U0001f600" if astral else "xxxx"
    pod["metadata"]["annotations"] = {"pad": "x" * (MAX_BODY_BYTES - len(body) - 64) + tail}
    return json.dumps(review, separators=(",", ":"), ensure_ascii=False).encode()


async def half_open(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """A TCP connection that never starts TLS; opened again a second after it is closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(1.0)
            continue
        opened[0] += 1
        try:
            closed = asyncio.create_task(reader.read(1))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            stopped.cancel()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


def attack(port: int, connections: int, seconds: float) -> None:
    """``connections`` half-open connections for ``seconds``; prints how many were made."""

    async def main() -> int:
        stop = asyncio.Event()
        opened = [0]
        holders = [asyncio.create_task(half_open(port, stop, opened)) for _ in range(connections)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*holders)
        return opened[0]

    print(asyncio.run(main()))


async def measure_half_open(
    pid: int, cadata: str, port: int, connections: int, settle: float, hold_seconds: float
) -> dict[str, Any]:
    ctx = ssl.create_default_context(cadata=cadata)
    await wait_serving(ctx, port)
    rss_base = status_kib(pid, "VmRSS")
    # The attacker in a process of its own: in this one, its 10,000 tasks would slow down
    # the measuring client, not the replica.
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"import bench.memory as m; m.attack({port}, {connections}, {hold_seconds})",
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(min(5.0, hold_seconds / 4))  # the connections are made
    peak = rss_base
    admissions: list[tuple[int, float]] = []
    while attacker.returncode is None:  # for as long as the attack lasts
        try:
            admissions.append(await post(ctx, port, normal_review()))
        except OSError:
            admissions.append((0, 0.0))
        peak = max(peak, status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM"))
        await asyncio.sleep(0.2)
    out, _ = await attacker.communicate()
    opened = [int(out.decode().strip() or 0)]
    await asyncio.sleep(settle)
    rss_after = status_kib(pid, "VmRSS")
    times = sorted(s for _, s in admissions)
    return {
        "half_open_connections": connections,
        "half_open_connects_made": opened[0],
        "seconds_held": hold_seconds,
        "rss_before": mib(rss_base),
        "rss_peak_during": mib(peak),
        "rss_peak_share_of_limit": f"{peak / 1024 / LIMIT_MIB:.0%}",
        "rss_after": mib(rss_after),
        "rss_after_minus_before": mib(rss_after - rss_base),
        "normal_admissions_during": len(admissions),
        "normal_admission_statuses": sorted({st for st, _ in admissions}),
        "normal_admission_median_ms": round(times[len(times) // 2] * 1000, 1),
        "normal_admission_slowest_ms": round(times[-1] * 1000, 1),
    }


async def measure_decoded(pid: int, cadata: str, port: int, reviews: int) -> dict[str, Any]:
    ctx = ssl.create_default_context(cadata=cadata)
    await wait_serving(ctx, port)
    out: dict[str, Any] = {"rss_before": mib(status_kib(pid, "VmRSS")), "reviews": reviews}
    # ASCII first: VmHWM only grows, so the astral run's peak is read after its own run.
    for label, astral in (("ascii", False), ("astral", True)):
        body = decoded_review(astral)
        results = await asyncio.gather(*(post(ctx, port, body) for _ in range(reviews)))
        out[f"{label}_body_bytes"] = len(body)
        out[f"{label}_statuses"] = sorted({st for st, _ in results})
        out[f"{label}_slowest_s"] = round(max(s for _, s in results), 2)
        out[f"{label}_rss_peak_so_far"] = mib(status_kib(pid, "VmHWM"))
    return out


async def wait_serving(ctx: ssl.SSLContext, port: int) -> None:
    for _ in range(100):
        try:
            status, _ = await post(ctx, port, normal_review())
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the replica did not answer")


async def hold(ctx: ssl.SSLContext, port: int, trickle: bool, stop: asyncio.Event) -> bool:
    """Open a connection and keep it; trickle a header byte a second if asked."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    except (OSError, ssl.SSLError):
        return False
    try:
        if trickle:
            writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while not stop.is_set():
                writer.write(b"a")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        else:
            await stop.wait()
        return True
    except (OSError, ssl.SSLError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def run(
    connections: int,
    settle: float,
    hold_seconds: float,
    scenario: str = "burst",
    reviews: int = 64,
) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the server inherits it
    with tempfile.TemporaryDirectory() as tmp:
        ca = make_ca()
        write_serving_pair(ca, Path(tmp))
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(sample_document()))
        port, health = free_port(), free_port()
        serve = Serve(
            Path(tmp) / "config.yaml",
            Path(tmp) / "tls.crt",
            Path(tmp) / "tls.key",
            port,
            health,
            names_only=True,
            log_level="error",
        )
        proc = subprocess.Popen(serve.command(), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            cadata = ca.cert_pem.decode()
            if scenario == "half-open":
                return asyncio.run(
                    measure_half_open(proc.pid, cadata, port, connections, settle, hold_seconds)
                )
            if scenario == "decoded":
                return asyncio.run(measure_decoded(proc.pid, cadata, port, reviews))
            return asyncio.run(measure(proc.pid, cadata, port, connections, settle, hold_seconds))
        finally:
            proc.terminate()
            proc.wait(30)


async def measure(
    pid: int, cadata: str, port: int, connections: int, settle: float, hold_seconds: float
) -> dict[str, Any]:
    ctx = ssl.create_default_context(cadata=cadata)
    for _ in range(100):
        try:
            status, _ = await post(ctx, port, normal_review())
            if status == 200:
                break
        except OSError:
            pass
        await asyncio.sleep(0.1)
    lat = [(await post(ctx, port, normal_review()))[1] for _ in range(20)]
    base_latency = sorted(lat)[len(lat) // 2]
    rss_base = status_kib(pid, "VmRSS")

    stop = asyncio.Event()
    holders = [
        asyncio.create_task(hold(ctx, port, trickle=i % 2 == 1, stop=stop))
        for i in range(connections)
    ]
    await asyncio.sleep(min(hold_seconds, 5.0))  # handshakes done
    rss_connected = status_kib(pid, "VmRSS")
    peak_connected = status_kib(pid, "VmHWM")
    big = maximal_review()
    big_status, big_seconds = await post(ctx, port, big)
    under_load = [(await post(ctx, port, normal_review())) for _ in range(20)]
    load_latency = sorted(s for _, s in under_load)[len(under_load) // 2]
    statuses = sorted({st for st, _ in under_load})
    await asyncio.sleep(max(0.0, hold_seconds - 5.0))
    rss_held = status_kib(pid, "VmRSS")
    stop.set()
    held = sum(await asyncio.gather(*holders))
    rss_peak = status_kib(pid, "VmHWM")
    await asyncio.sleep(settle)
    rss_after = status_kib(pid, "VmRSS")
    return {
        "connections": connections,
        "connections_still_open_at_end": held,
        "maximal_review_bytes": len(big),
        "maximal_review_status": big_status,
        "maximal_review_seconds": round(big_seconds, 3),
        "rss_baseline": mib(rss_base),
        "rss_after_handshakes": mib(rss_connected),
        "rss_peak_during_handshakes": mib(peak_connected),
        "rss_with_connections_open": mib(rss_held),
        "rss_peak": mib(rss_peak),
        "rss_peak_share_of_limit": f"{rss_peak / 1024 / LIMIT_MIB:.0%}",
        "rss_after_close": mib(rss_after),
        "rss_after_minus_baseline": mib(rss_after - rss_base),
        "normal_admission_median_baseline_ms": round(base_latency * 1000, 1),
        "normal_admission_median_under_load_ms": round(load_latency * 1000, 1),
        "normal_admission_statuses_under_load": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before the last read")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to hold connections")
    parser.add_argument("--scenario", choices=["burst", "half-open", "decoded"], default="burst")
    parser.add_argument("--reviews", type=int, default=64, help="decoded: reviews at once")
    args = parser.parse_args()
    result = run(args.connections, args.settle, args.hold, args.scenario, args.reviews)
    for key, value in result.items():
        print(f"{key:42} {value}")


if __name__ == "__main__":
    main()
