"""Drive a server with wrk (Debian's ``wrk`` 4.x, an external C load generator).

The Lua script POSTs one review body, optionally paces each connection (``delay``)
or asks for ``Connection: close`` (a new TLS handshake per request), and prints
one JSON line of results from ``done()``, which this module parses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
if os.getenv("BENCH_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end
function done(s, latency, requests)
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    s.requests, s.duration, s.errors.connect, s.errors.read, s.errors.write,
    s.errors.status, s.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""


@dataclass(frozen=True)
class Result:
    requests: int
    duration_us: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int
    p50_us: int
    p90_us: int
    p99_us: int
    p999_us: int
    max_us: int
    mean_us: float

    @property
    def rate(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
        )

    def summary(self) -> dict[str, float]:
        return {**asdict(self), "rate": round(self.rate, 1), "errors": self.errors}


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "error: wrk is not installed (Debian: apt-get install wrk; `make system-deps`)"
        )
    return path


def run(
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    delay_ms: float = 0.0,
    close: bool = False,
) -> Result:
    """One wrk run; raises if wrk fails or prints no result line."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT)
        body_file = Path(tmp) / "body.json"
        body_file.write_bytes(body)
        env = {
            "BENCH_BODY": str(body_file),
            "BENCH_DELAY_MS": f"{delay_ms:.3f}",
            "BENCH_CLOSE": "1" if close else "0",
            "PATH": "/usr/bin:/bin",
        }
        proc = subprocess.run(
            [
                wrk_binary(),
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return Result(**json.loads(line[len("BENCH ") :]))
    raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
