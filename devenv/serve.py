"""The real ``webhook serve`` on loopback, started one way by the stack, tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def readyz(health_port: int) -> bool:
    """Does the webhook on this health port say it is ready?"""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class Serve:
    """The options of one ``python -m webhook serve`` on 127.0.0.1."""

    config: Path
    cert: Path
    key: Path
    port: int
    health_port: int
    kubeconfig: Path | None = None
    """None with ``names_only``: no Kubernetes at all."""
    service_account: Path | None = None
    """In-cluster instead of a kubeconfig: the ServiceAccount's ``token`` and ``ca.crt``
    in this directory (``devenv.incluster``), the API server at ``api_server``."""
    api_server: str = ""
    names_only: bool = False
    pod_name: str = ""
    workers: int = 1
    log_level: str = ""
    log_format: str = ""
    shutdown_delay: float = 0.0
    """Nothing routes by readiness on loopback: no need to linger after SIGTERM."""

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "webhook", "serve"]
        if self.service_account is not None:
            args[2:3] = ["devenv.incluster", str(self.service_account)]
        if self.names_only:
            args.append("--names-only")
        if self.workers != 1:
            args += ["--workers", str(self.workers)]
        args += ["--config", str(self.config)]
        args += ["--cert-file", str(self.cert), "--key-file", str(self.key)]
        args += ["--bind", "127.0.0.1", "--port", str(self.port)]
        args += ["--health-bind", "127.0.0.1", "--health-port", str(self.health_port)]
        if self.kubeconfig is not None:
            args += ["--kubeconfig", str(self.kubeconfig)]
        if self.pod_name:
            args += ["--pod-name", self.pod_name]
        if self.log_level:
            args += ["--log-level", self.log_level]
        if self.log_format:
            args += ["--log-format", self.log_format]
        args += ["--shutdown-delay", f"{self.shutdown_delay:g}"]
        return args

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` plus, in-cluster, where the API server is (as the kubelet says)."""
        env = dict(base)
        if self.service_account is not None:
            where = urlsplit(self.api_server)
            env.pop("KUBECONFIG", None)
            env["KUBERNETES_SERVICE_HOST"] = where.hostname or ""
            env["KUBERNETES_SERVICE_PORT"] = str(where.port or 443)
        return env

    def ready(self) -> bool:
        return readyz(self.health_port)

    def wait_ready(
        self,
        process: subprocess.Popen[bytes],
        timeout: float = 30.0,
        also: Callable[[], bool] = lambda: True,
    ) -> None:
        """Until /readyz answers 200 (and ``also`` holds); a cold interpreter imports
        aiohttp, azure-identity and boto3 first. Raises when the process exits or time
        runs out."""
        deadline = time.monotonic() + timeout
        while not (self.ready() and also()):
            if process.poll() is not None:
                raise RuntimeError(f"webhook serve exited early ({process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"webhook serve not ready within {timeout:g} s")
            time.sleep(0.1)
