"""What a node changes on the machine outside its own directory, to put back and to compare.

A kubelet and containerd write to a few host-wide places whatever their configuration
says (checked on kube v1.36.3 and containerd v2.3.7):

- sysctls the kubelet sets at start (``setupKernelTunables``, with
  ``protectKernelDefaults: false``): saved before and written back after;
- fixed paths: ``/var/lib/kubelet/device-plugins``, ``/var/log/containers``,
  ``/run/containerd/s`` (shim sockets), ``/run/netns``, ``/var/lib/cni`` (libcni's cache):
  removed afterwards when they did not exist before;
- the ``kubepods`` cgroups (cgroupfs driver) in every cgroup v1 hierarchy;
- the CNI bridge, which outlives every pod.

``HostSnapshot`` also records what must come back exactly (mounts, iptables rules,
network links, network namespaces) so a test can compare before and after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Set by the kubelet at start (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables)
# and by the CNI bridge plugin (forwarding); restored to what they were.
TOUCHED_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Host paths the kubelet, containerd or the CNI plugins use regardless of their configured
# directories (FACTS: "paths that ignore the configured dirs").
FIXED_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
    Path("/run/netns"),
    Path("/run/nri"),
    Path("/var/lib/cni"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The cgroupfs driver's name for the kubelet's pod cgroup tree (cgroupsPerQOS: true).
KUBEPODS = "kubepods"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _run(*cmd: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"({cmd[0]} unavailable: {exc})"
    return proc.stdout


def _iptables(save: str) -> list[str]:
    """Rules and chains, without comments and packet counters (which change by themselves)."""
    out = _run(save)
    lines = []
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(":"):  # ":CHAIN POLICY [packets:bytes]"
            line = line.rsplit(" ", 1)[0]
        lines.append(line)
    return lines


def _mount_points() -> list[str]:
    points = []
    for line in (_read(Path("/proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(fields[4])
    return sorted(points)


def _cgroup_children() -> list[str]:
    found = []
    if CGROUP_ROOT.is_dir():
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            if hierarchy.is_dir() and not hierarchy.is_symlink():
                found += [f"{hierarchy.name}/{c.name}" for c in hierarchy.iterdir() if c.is_dir()]
    return sorted(found)


@dataclass(frozen=True)
class HostSnapshot:
    """The host-wide state a node may change, taken at one moment."""

    sysctls: dict[str, str | None]
    paths: dict[str, bool]
    mounts: list[str] = field(default_factory=list)
    iptables: list[str] = field(default_factory=list)
    ip6tables: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)

    @classmethod
    def take(cls) -> HostSnapshot:
        netns_dir = Path("/run/netns")
        return cls(
            sysctls={key: _read(Path("/proc/sys") / key) for key in TOUCHED_SYSCTLS},
            paths={str(path): path.exists() for path in FIXED_PATHS},
            mounts=_mount_points(),
            iptables=_iptables("iptables-save"),
            ip6tables=_iptables("ip6tables-save"),
            links=sorted(p.name for p in Path("/sys/class/net").iterdir()),
            netns=sorted(p.name for p in netns_dir.iterdir()) if netns_dir.is_dir() else [],
            cgroups=_cgroup_children(),
        )

    def differences(self, other: HostSnapshot) -> list[str]:
        """Human-readable differences from ``other`` (empty when the host is as it was)."""
        diffs = []
        for name in ("sysctls", "paths"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    diffs.append(f"{name} {key}: {mine.get(key)!r} -> {theirs.get(key)!r}")
        for name in ("mounts", "iptables", "ip6tables", "links", "netns", "cgroups"):
            mine, theirs = set(getattr(self, name)), set(getattr(other, name))
            diffs += [f"{name}: + {item}" for item in sorted(theirs - mine)]
            diffs += [f"{name}: - {item}" for item in sorted(mine - theirs)]
        return diffs

    def restore(self) -> list[str]:
        """Write back the saved sysctls; remove fixed paths and cgroups that are new.

        Call once every node process is gone. Returns what could not be restored.
        """
        problems = []
        for key, value in self.sysctls.items():
            path = Path("/proc/sys") / key
            if value is not None and _read(path) != value:
                try:
                    path.write_text(value + "\n")
                except OSError as exc:
                    problems.append(f"sysctl {key}: {exc}")
        for name, existed in self.paths.items():
            if not existed and Path(name).exists():
                _remove_tree(Path(name), problems)
        before = set(self.cgroups)
        for hierarchy_child in _cgroup_children():
            if hierarchy_child not in before and hierarchy_child.endswith("/" + KUBEPODS):
                _remove_cgroup(CGROUP_ROOT / hierarchy_child, problems)
        return problems


def _remove_tree(path: Path, problems: list[str]) -> None:
    """rm -rf that first unmounts whatever is mounted inside (network namespaces, tmpfs)."""
    for point in sorted(_mount_points(), key=len, reverse=True):
        if point == str(path) or point.startswith(str(path) + "/"):
            unmount(Path(point), problems)
    try:
        shutil.rmtree(path)
    except OSError as exc:
        problems.append(f"remove {path}: {exc}")


def unmount(point: Path, problems: list[str]) -> None:
    try:
        subprocess.run(["umount", str(point)], capture_output=True, check=True, timeout=30)
    except subprocess.CalledProcessError:
        # Busy (a process still inside): detach it, the kernel frees it when unused.
        proc = subprocess.run(
            ["umount", "--lazy", str(point)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            problems.append(f"umount {point}: {proc.stderr.strip()}")


def unmount_under(directory: Path) -> list[str]:
    """Unmount everything mounted at or below ``directory``, deepest first."""
    problems: list[str] = []
    prefix = str(directory.resolve())
    for point in sorted(_mount_points(), key=len, reverse=True):
        if point == prefix or point.startswith(prefix + "/"):
            unmount(Path(point), problems)
    return problems


def _remove_cgroup(path: Path, problems: list[str]) -> None:
    """rmdir a cgroup tree bottom-up (a cgroup directory is removed with rmdir, not unlink)."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(FileNotFoundError):
            try:
                child.rmdir()
            except OSError as exc:
                problems.append(f"rmdir {child}: {exc}")
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"rmdir {path}: {exc}")


def processes_in_cgroups(name: str = KUBEPODS) -> list[int]:
    """PIDs inside any ``name`` cgroup tree (what a node leaves running if a pod leaks)."""
    pids: set[int] = set()
    if not CGROUP_ROOT.is_dir():
        return []
    for hierarchy in CGROUP_ROOT.iterdir():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            for line in (_read(procs) or "").splitlines():
                if line.strip().isdigit():
                    pids.add(int(line))
    pids.discard(os.getpid())
    return sorted(pids)
