"""Find or build what a local node runs: kubelet, kube-scheduler, containerd, crictl, pause.

Nothing here is published as a Debian or PyPI package at a version that works with
Kubernetes 1.36 (Debian's containerd 1.6 is older than the 2.2 that Kubernetes 1.36 needs),
so the Go programs are built once from the Go module proxy and cached beside the
control-plane binaries:

    ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/
        k8s-v1.36.3/bin/{kubelet,kube-scheduler}      from the control plane's wrapper module
        k8s-v1.36.3/bin/pause                        build/pause/linux/pause.c, gcc -static
        containerd-v2.3.7/bin/{containerd,containerd-shim-runc-v2}
        cri-tools-v1.37.0/bin/crictl                 removes the node's pods on stop

Debian provides the rest (``make system-deps``): runc, the CNI plugins and busybox-static
(the one program of the test image).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from devenv.controlplane.build import (
    K8S_VERSION,
    NODE_COMPONENTS,
    BuildError,
    _go_env,
    _run,
    bin_dir,
    build,
    build_lock,
    cache_root,
    check_go,
    go_env_dirs,
    is_executable,
    require_built,
)

# Kubernetes 1.36 needs containerd >= 2.2 (containerd's RELEASES.md compatibility table);
# v2.3.7 builds with `go install` (its go.mod has no replace directives).
CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
CONTAINERD_VERSION = "v2.3.7"
CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2")
# crictl of the same minor as the kubelet (cri-tools' compatibility rule).
CRICTL_MODULE = "sigs.k8s.io/cri-tools"
CRICTL_VERSION = "v1.37.0"
# The pause image's tag at this Kubernetes release (build/pause/Makefile's TAG).
PAUSE_TAG = "3.10.2"

# Debian's packages (bookworm): runc 1.1.5, containernetworking-plugins 1.1.1,
# busybox-static 1.35. Paths are the packages' own.
RUNC = Path("/usr/sbin/runc")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
BUSYBOX = Path("/bin/busybox")
SYSTEM_PACKAGES = {
    "runc": "runc",
    "cni": "containernetworking-plugins",
    "busybox": "busybox-static",
    "gcc": "gcc libc6-dev",
}


class MissingNodeBinariesError(RuntimeError):
    """Something a node needs is missing (and we were told not to build it)."""

    def __init__(self, missing: Mapping[str, str]) -> None:
        self.missing = dict(missing)
        details = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        super().__init__(
            f"node binaries missing ({details}); run `make system-deps node` "
            "(bash hack/install-system-deps.sh; python -m devenv.node build)"
        )


@dataclass(frozen=True)
class NodeBinaries:
    """Absolute paths of every executable a node runs."""

    kubelet: Path
    kube_scheduler: Path
    containerd: Path
    containerd_shim: Path
    crictl: Path
    runc: Path
    pause: Path
    busybox: Path
    cni_bin_dir: Path


def containerd_dir() -> Path:
    return cache_root() / f"containerd-{CONTAINERD_VERSION}" / "bin"


def crictl_dir() -> Path:
    return cache_root() / f"cri-tools-{CRICTL_VERSION}" / "bin"


def is_static(path: Path) -> bool:
    """True if the ELF file has no program interpreter (runs in an empty root filesystem)."""
    try:
        data = path.read_bytes()[:4096]
    except OSError:
        return False
    # Debian's dynamically linked `busybox` package also installs /bin/busybox; only the
    # static one runs in an image that holds nothing else. A dynamic ELF names its loader.
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data and b"/lib/ld-" not in data


def _system_missing() -> dict[str, str]:
    missing: dict[str, str] = {}
    if not is_executable(RUNC):
        missing["runc"] = f"{RUNC} not found (apt-get install {SYSTEM_PACKAGES['runc']})"
    for plugin in CNI_PLUGINS:
        if not is_executable(CNI_BIN_DIR / plugin):
            missing["cni"] = (
                f"{CNI_BIN_DIR / plugin} not found (apt-get install {SYSTEM_PACKAGES['cni']})"
            )
    if not is_executable(BUSYBOX) or not is_static(BUSYBOX):
        missing["busybox"] = (
            f"no statically linked {BUSYBOX} (apt-get install {SYSTEM_PACKAGES['busybox']})"
        )
    return missing


def _go_install(
    module: str, version: str, commands: tuple[str, ...], target: Path, log: TextIO | None
) -> None:
    """``go install MODULE/cmd/C@VERSION`` for each command, into ``target`` atomically."""
    go = check_go()
    env = _go_env(go, go_env_dirs())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bin-", dir=target.parent))
    env["GOBIN"] = str(tmp)
    try:
        _run(
            [
                go,
                "install",
                "-trimpath",
                "-ldflags",
                "-s -w",
                *(f"{module}/cmd/{name}@{version}" for name in commands),
            ],
            cwd=tmp,
            env=env,
            log=log,
        )
        require_built(tmp, commands, "go install")
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pause_source() -> Path:
    """pause.c from the k8s.io/kubernetes module zip (downloaded by the control-plane build)."""
    source = (
        go_env_dirs()["GOMODCACHE"]
        / f"k8s.io/kubernetes@{K8S_VERSION}"
        / "build/pause/linux/pause.c"
    )
    if not source.is_file():
        raise BuildError(f"{source} is missing: build the control plane first (make controlplane)")
    return source


def _build_pause(target: Path, log: TextIO | None) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError(f"gcc is missing: apt-get install {SYSTEM_PACKAGES['gcc']}")
    tmp = target.with_name(f".{target.name}.tmp")
    # The flags of build/pause/Makefile (CFLAGS), so `pause -v` names the same version.
    _run(
        [
            gcc,
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            f"-DVERSION=v{PAUSE_TAG}-{K8S_VERSION}",
            "-o",
            str(tmp),
            str(_pause_source()),
        ],
        cwd=target.parent,
        env=os.environ,
        log=log,
    )
    tmp.rename(target)


def _say(log: TextIO | None, message: str) -> None:
    stream = log if log is not None else sys.stderr
    stream.write(message + "\n")
    stream.flush()


def locate_node(*, allow_build: bool = False, log: TextIO | None = None) -> NodeBinaries:
    """Every binary a node runs; builds the missing Go programs first if ``allow_build``.

    Raises MissingNodeBinariesError naming everything that is missing otherwise (Debian's
    packages are never installed from here: that is `make system-deps`).
    """
    kube = bin_dir()
    wanted = {
        "kubelet": kube / "kubelet",
        "kube-scheduler": kube / "kube-scheduler",
        "pause": kube / "pause",
        "containerd": containerd_dir() / "containerd",
        "containerd-shim-runc-v2": containerd_dir() / "containerd-shim-runc-v2",
        "crictl": crictl_dir() / "crictl",
    }
    if allow_build and not all(is_executable(path) for path in wanted.values()):
        started = time.monotonic()
        build(log=log, components=NODE_COMPONENTS)
        with build_lock():  # one Go build at a time on the machine, as for the control plane
            if not all(is_executable(containerd_dir() / c) for c in CONTAINERD_COMMANDS):
                _say(log, f"building containerd {CONTAINERD_VERSION} into {containerd_dir()}")
                _go_install(
                    CONTAINERD_MODULE,
                    CONTAINERD_VERSION,
                    CONTAINERD_COMMANDS,
                    containerd_dir(),
                    log,
                )
            if not is_executable(crictl_dir() / "crictl"):
                _say(log, f"building crictl {CRICTL_VERSION} into {crictl_dir()}")
                _go_install(CRICTL_MODULE, CRICTL_VERSION, ("crictl",), crictl_dir(), log)
            if not is_executable(kube / "pause"):
                _build_pause(kube / "pause", log)
        _say(log, f"node binaries ready in {time.monotonic() - started:.1f}s")

    missing = {
        name: f"not built yet (expected {path})"
        for name, path in wanted.items()
        if not is_executable(path)
    }
    missing.update(_system_missing())
    if missing:
        raise MissingNodeBinariesError(missing)
    return NodeBinaries(
        kubelet=wanted["kubelet"],
        kube_scheduler=wanted["kube-scheduler"],
        containerd=wanted["containerd"],
        containerd_shim=wanted["containerd-shim-runc-v2"],
        crictl=wanted["crictl"],
        runc=RUNC,
        pause=wanted["pause"],
        busybox=BUSYBOX,
        cni_bin_dir=CNI_BIN_DIR,
    )


def system_problems() -> dict[str, str]:
    """What Debian's packages are missing (for messages before any build starts)."""
    return _system_missing()


__all__ = [
    "CONTAINERD_VERSION",
    "CRICTL_VERSION",
    "PAUSE_TAG",
    "MissingNodeBinariesError",
    "NodeBinaries",
    "locate_node",
    "system_problems",
]
