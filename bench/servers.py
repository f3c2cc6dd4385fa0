"""Start ``bench.serve`` in its own processes, and read what it reports when stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devenv.serve import free_port
from webhook.certs.pki import make_ca, make_serving_cert


def write_tls(directory: Path) -> tuple[Path, Path]:
    """A CA and an ECDSA P-256 serving certificate for 127.0.0.1, as ``webhook certs`` makes."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    make_serving_cert(make_ca(), ["localhost"], ["127.0.0.1"]).write(cert, key)
    return cert, key


def pss_kib(pid: int) -> dict[str, int]:
    """Resident, proportional and private memory of a process (``smaps_rollup``), in KiB."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty"):
            fields[name.lower()] = int(rest.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (``/proc/PID/stat``), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # Fields 14 and 15 (utime, stime) of proc(5), counted after the ")" of the command.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """``python -m bench.serve KIND`` with ``workers`` processes on one port."""

    kind: str
    tls: tuple[Path, Path]
    workers: int = 1
    loop: str = "asyncio"
    port: int = field(default_factory=free_port)
    pids: list[int] = field(default_factory=list)
    memory: dict[int, dict[str, int]] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def __enter__(self) -> Server:
        cert, key = self.tls
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.serve",
                self.kind,
                "--port",
                str(self.port),
                "--cert-file",
                str(cert),
                "--key-file",
                str(key),
                "--workers",
                str(self.workers),
                "--loop",
                self.loop,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 60
        try:
            while len(self.pids) < self.workers:
                line = self._proc.stdout.readline()
                if not line or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.kind} server did not start")
                if line.startswith("ready "):
                    self.pids.append(int(line.split()[1]))
        except BaseException:
            self._proc.kill()  # the workers follow their primary (PR_SET_PDEATHSIG)
            self._proc.communicate()
            raise
        return self

    def cpu(self) -> float:
        """CPU seconds used so far by all the workers together."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def sample_memory(self) -> None:
        for pid in self.pids:
            self.memory[pid] = pss_kib(pid)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        for line in out.splitlines():
            if line.startswith("{"):
                self.reports.append(json.loads(line))

    def admissions(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for report in self.reports:
            for result, count in report["admissions"].items():
                total[result] = total.get(result, 0) + count
        return total

    def network_calls(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for report in self.reports:
            for call, count in report["network_calls"].items():
                total[call] = total.get(call, 0) + count
        return total
