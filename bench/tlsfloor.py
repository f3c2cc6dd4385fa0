"""The lower bound of an admission on this machine: ``bench/tlsfloor.go``, a few dozen
lines of Go's net/http and crypto/tls answering every review with one fixed patch.

Built once with the machine's Go toolchain (the standard library only: nothing from the
module proxy) into ``~/.cache/pull-secret-webhook/tools/tlsfloor-<hash of the source>/``,
with the Go build cache the control plane's build uses. ``bench.storm`` registers it,
behind a balancer as the replicas are, in the same run as the webhook's storms.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from devenv.controlplane.build import cache_root, go_env_dirs
from devenv.processes import terminate
from devenv.serve import free_port, readyz
from devenv.stack import Replica

SOURCE = Path(__file__).resolve().parent / "tlsfloor.go"
#: Seconds the server may take to answer /readyz once started.
START_SECONDS = 10.0


def binary() -> Path:
    """The built server, building it first when this source was never built."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = cache_root() / "tools" / f"tlsfloor-{digest}" / "tlsfloor"
    if out.exists():
        return out
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go not found: bench/tlsfloor.go is built with the Go toolchain")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **{k: str(v) for k, v in go_env_dirs().items()},
        # The standard library only: no module, no toolchain download.
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    partial = out.with_suffix(".partial")
    subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), str(SOURCE)],
        env=env,
        check=True,
        timeout=600,
    )
    partial.rename(out)
    return out


def fixed_patch(secret_names: Sequence[str]) -> str:
    """The JSONPatch the webhook gives a pod without pull secrets that needs these."""
    value = [{"name": n} for n in secret_names]
    return json.dumps([{"op": "add", "path": "/spec/imagePullSecrets", "value": value}])


@dataclass(frozen=True)
class SecretMaking:
    """What the server needs to make Secrets before it answers (its ``-apiserver`` mode):
    the API server, its CA, a file with the bearer token to write with, and the names of
    the Secrets to make in each namespace."""

    server: str
    ca: Path
    token_file: Path
    names: tuple[str, ...]

    def flags(self) -> list[str]:
        return [
            f"-apiserver={self.server}",
            f"-ca={self.ca}",
            f"-token-file={self.token_file}",
            f"-secrets={','.join(self.names)}",
        ]


def secrets_created(server: Replica) -> int:
    """How many Secrets the server in its ``-apiserver`` mode was answered 201 for."""
    for line in server.metrics().splitlines():
        if line.startswith("tlsfloor_secrets_created_total "):
            return int(line.rpartition(" ")[2])
    return 0


@contextlib.contextmanager
def serving(
    cert: Path, key: Path, patch: str, workdir: Path, making: SecretMaking | None = None
) -> Iterator[Replica]:
    """The server on a loopback port, as a ``Replica`` the stack can route to; with
    ``making``, it makes each namespace's Secrets on that namespace's first review."""
    port, health = free_port(), free_port()
    log = workdir / "tlsfloor.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(binary()),
                f"-listen=127.0.0.1:{port}",
                f"-health=127.0.0.1:{health}",
                f"-cert={cert}",
                f"-key={key}",
                f"-patch={patch}",
                *(making.flags() if making is not None else []),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not readyz(health):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tlsfloor did not start: {log.read_text()[-500:]}")
            time.sleep(0.05)
        yield Replica("tlsfloor", port, health, process, log)
    finally:
        terminate(process, 5.0)
