"""A real node beside a running ``ControlPlane``: containerd, kubelet and kube-scheduler.

Pods scheduled on it really run: the kubelet asks containerd to pull their images with the
pod's ``imagePullSecrets`` (read through the Node authorizer, as on any cluster), runc
starts them, and their output lands in log files under ``pod_logs_dir``.

    with ControlPlane() as cp, Node(cp) as node:
        node.trust_registry("127.0.0.1:5000", ca=None)   # plain HTTP
        cp.kubectl("run", ...)

Everything lives in one temporary directory; ``stop()`` removes the pods, ends every
process it started (shims included, by PID), unmounts, deletes the CNI bridge, puts back
the sysctls the kubelet changed and removes the host paths it created (see host.py). One
node runs on the machine at a time: a second one waits for the first (a file lock), since
a kubelet owns host-wide paths such as ``/var/lib/kubelet/device-plugins``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from devenv.controlplane.cluster import ControlPlane
from devenv.lifecycle import Running
from devenv.node.build import PAUSE_TAG, NodeBinaries, locate_node
from devenv.node.host import HostSnapshot, processes_in_cgroups, unmount_under
from devenv.peers.oci import build_oci_layout, skopeo_push, write_authfile
from devenv.peers.registry import DockerRegistry
from devenv.processes import kill_left, log_tails, spawn, terminate
from devenv.serve import free_port

NODE_NAME = "local-node"
# Node identities as the Node authorizer expects them (kubernetes.io/docs: "Node Authorization").
NODE_USER = f"system:node:{NODE_NAME}"
NODE_GROUP = "system:nodes"
SCHEDULER_USER = "system:kube-scheduler"
# A bridge and subnet no other tool on the machine is likely to use.
BRIDGE = "pswnode0"
POD_SUBNET = "10.244.77.0/24"
PAUSE_REPOSITORY = "pause"
# containerd ready ~0.15 s and kubelet start to node Ready ~1 s when measured here; the
# margin covers a machine shared with compilers.
STARTUP_TIMEOUT_SECONDS = 90.0
STOP_GRACE_SECONDS = 10.0
# crictl stops and removes every pod sandbox; each stop takes ~0.1 s here.
REMOVE_PODS_TIMEOUT_SECONDS = 120.0
# Machine-wide (not in the cache, which XDG_CACHE_HOME may move): the bridge, the subnet and
# the kubelet's fixed host paths are the machine's. /run/lock is a tmpfs (FHS 3.0, 5.9).
LOCK_PATH = Path("/run/lock/pull-secret-webhook-node.lock")
# Another node on the machine (a test run, a playground) is waited for this long.
LOCK_WAIT_SECONDS = 900.0


class NodeError(RuntimeError):
    """The node failed to start or a component died; carries the log tails."""


@dataclass
class _Running:
    workdir: Path
    snapshot: HostSnapshot
    lock: IO[str]
    kubelet_port: int = 0
    registry: DockerRegistry | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)


class Node(Running["_Running"]):
    """containerd + kubelet + kube-scheduler on this machine, registered as ``local-node``."""

    WHAT = "node"
    ERROR = NodeError

    def __init__(
        self,
        controlplane: ControlPlane,
        binaries: NodeBinaries | None = None,
        *,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
        verbosity: int = 1,
    ) -> None:
        self.controlplane = controlplane
        self.binaries = binaries if binaries is not None else locate_node()
        self.startup_timeout = startup_timeout
        self.verbosity = verbosity
        self.name = NODE_NAME
        self.startup_seconds: float | None = None
        self.cleanup_problems: list[str] = []
        #: The host as this node found it (taken once the machine's node lock is held) and
        #: as it left it (taken before releasing the lock), for before/after comparisons.
        self.host_before: HostSnapshot | None = None
        self.host_after: HostSnapshot | None = None
        self._running: _Running | None = None

    # --- attributes --------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self._state.workdir

    @property
    def pod_logs_dir(self) -> Path:
        return self._state.workdir / "pod-logs"

    @property
    def containerd_socket(self) -> Path:
        return self._state.workdir / "containerd" / "containerd.sock"

    @property
    def pause_image(self) -> str:
        registry = self._state.registry
        assert registry is not None
        return f"{registry.host}/{PAUSE_REPOSITORY}:{PAUSE_TAG}"

    # --- lifecycle (``with`` starts and stops it: devenv.lifecycle.Component) ---

    def start(self) -> None:
        """Start containerd, the kubelet and the scheduler; return once the node is Ready."""
        if self._running is not None:
            raise RuntimeError("the node is already running")
        started = time.monotonic()
        lock = _take_lock(LOCK_PATH)
        try:
            # Taken after the lock: another node's leftovers are not ours to keep.
            snapshot = self.host_before = HostSnapshot.take()
        except BaseException:
            lock.close()
            raise
        workdir = Path(tempfile.mkdtemp(prefix="node-"))
        workdir.chmod(0o755)  # containers' users traverse it to reach their mounts
        self._running = _Running(workdir=workdir, snapshot=snapshot, lock=lock)
        # From the lock on: the wait for another node is LOCK_WAIT_SECONDS's to bound.
        deadline = time.monotonic() + self.startup_timeout
        try:
            self._start_registry()
            self._write_containerd_config()
            self._spawn("containerd", self._containerd_args())
            self._wait("containerd's socket", deadline, self.containerd_socket.exists)
            kubeconfig = self.controlplane.issue_kubeconfig(
                "kubelet.kubeconfig", NODE_USER, [NODE_GROUP]
            )
            self._write_kubelet_config()
            self._spawn("kubelet", self._kubelet_args(kubeconfig))
            scheduler_kubeconfig = self.controlplane.issue_kubeconfig(
                "kube-scheduler.kubeconfig", SCHEDULER_USER
            )
            self._spawn("kube-scheduler", self._scheduler_args(scheduler_kubeconfig))
            self._wait(f"node {self.name} Ready", deadline, self._node_ready)
        except BaseException as exc:
            tails = self.log_tails()
            self.stop()
            if isinstance(exc, NodeError):
                raise NodeError(f"{exc}\n{tails}") from None
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Remove the pods, end every process (shims by PID), put the host back as found."""
        running, self._running = self._running, None
        if running is None:
            return
        problems: list[str] = []
        try:
            self._stop_processes(running, problems)
            problems += unmount_under(running.workdir)
            if BRIDGE not in running.snapshot.links and Path(f"/sys/class/net/{BRIDGE}").exists():
                proc = subprocess.run(
                    ["ip", "link", "delete", BRIDGE], capture_output=True, text=True, check=False
                )
                if proc.returncode != 0:
                    problems.append(f"ip link delete {BRIDGE}: {proc.stderr.strip()}")
            problems += running.snapshot.restore()
            if running.registry is not None:
                running.registry.stop()
            shutil.rmtree(running.workdir, ignore_errors=True)
            self.host_after = HostSnapshot.take()
        finally:
            fcntl.flock(running.lock, fcntl.LOCK_UN)
            running.lock.close()
        self.cleanup_problems = problems

    def _stop_processes(self, running: _Running, problems: list[str]) -> None:
        for name in ("kube-scheduler", "kubelet"):
            if name in running.processes:
                terminate(running.processes[name], STOP_GRACE_SECONDS)
        if self.controlplane.running:
            self.controlplane.kubectl(
                "delete", "node", self.name, "--ignore-not-found", "--wait=false", check=False
            )
        containerd = running.processes.get("containerd")
        if containerd is not None and containerd.poll() is None:
            # Stops each sandbox (CNI DEL: the network namespace and veth go) and removes
            # it with its containers (the rootfs mounts go), through the CRI.
            proc = subprocess.run(
                [
                    str(self.binaries.crictl),
                    f"--runtime-endpoint=unix://{running.workdir / 'containerd/containerd.sock'}",
                    "--timeout=60s",
                    "rmp",
                    "--all",
                    "--force",
                ],
                capture_output=True,
                text=True,
                timeout=REMOVE_PODS_TIMEOUT_SECONDS,
                check=False,
            )
            if proc.returncode != 0:
                problems.append(f"crictl rmp: {proc.stderr.strip()[-500:]}")
            terminate(containerd, STOP_GRACE_SECONDS)
        kill_left(running.processes)
        # Shims are started by containerd in their own sessions and outlive it.
        for pid in self._shim_pids(running.workdir):
            _end(pid)
        for pid in processes_in_cgroups():
            problems.append(f"pid {pid} was left in a kubepods cgroup: killed")
            _end(pid, signal.SIGKILL)

    def _shim_pids(self, workdir: Path) -> list[int]:
        """Shims of this node's containerd (their command line names its socket)."""
        shim = str(self.binaries.containerd_shim)
        address = str(workdir / "containerd" / "containerd.sock")
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in argv]
            if args and args[0] == shim and address in args:
                pids.append(int(entry.name))
        return pids

    def check_alive(self) -> None:
        for name, process in self._state.processes.items():
            if process.poll() is not None:
                raise NodeError(f"{name} exited with {process.returncode}\n{self.log_tails()}")

    # --- helpers for tests and the playground -----------------------------------------

    def trust_registry(self, host: str, *, ca: Path | None) -> None:
        """Let containerd pull from ``host``: over HTTPS trusting ``ca``, or plain HTTP.

        containerd reads ``certs.d/HOST/hosts.toml`` at every pull, so this works while
        the node runs (docs/hosts.md in containerd).
        """
        directory = self._state.workdir / "containerd" / "certs.d" / host
        directory.mkdir(parents=True, exist_ok=True)
        scheme = "https" if ca is not None else "http"
        lines = [
            f'server = "{scheme}://{host}"',
            "",
            f'[host."{scheme}://{host}"]',
            '  capabilities = ["pull", "resolve"]',
        ]
        if ca is not None:
            lines.append(f'  ca = "{ca}"')
        (directory / "hosts.toml").write_text("\n".join(lines) + "\n")

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run crictl against this node's containerd (e.g. ``rmi`` to force a new pull)."""
        proc = subprocess.run(
            [
                str(self.binaries.crictl),
                f"--runtime-endpoint=unix://{self.containerd_socket}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            raise NodeError(f"crictl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def container_log(self, namespace: str, pod: str, container: str) -> list[str]:
        """The lines a container wrote, from the kubelet's CRI log files.

        ``kubectl logs`` needs the node's address, which a loopback-only node does not have;
        the files are ``POD_LOGS_DIR/NS_POD_UID/CONTAINER/N.log`` in the CRI format
        ``TIMESTAMP STREAM P|F MESSAGE``.
        """
        lines = []
        for directory in sorted(self.pod_logs_dir.glob(f"{namespace}_{pod}_*/{container}")):
            for log in sorted(directory.glob("*.log")):
                for line in log.read_text(errors="replace").splitlines():
                    parts = line.split(" ", 3)
                    lines.append(parts[3] if len(parts) == 4 else "")
        return lines

    def log_tails(self, lines: int = 40) -> str:
        if self._running is None:
            return "(node not running: no logs)"
        return log_tails(self._running.logs, self._running.processes, lines)

    # --- internals ---------------------------------------------------------------------

    def _start_registry(self) -> None:
        """An anonymous registry on loopback holding the pause image containerd pulls."""
        state = self._state
        images = state.workdir / "images"
        pause = build_oci_layout(
            images / "pause",
            PAUSE_TAG,
            files={},
            executables={"pause": self.binaries.pause.read_bytes()},
            entrypoint=["/pause"],
        )
        state.registry = DockerRegistry(state.workdir / "registry", None)
        state.registry.start()
        authfile = write_authfile(images / "anonymous.json", {"auths": {}})
        pushed = asyncio.run(skopeo_push(pause, self.pause_image, authfile, tls_verify=False))
        if not pushed.ok:
            raise NodeError(f"pushing the pause image failed: {pushed.stderr}")

    def _write_containerd_config(self) -> None:
        workdir = self._state.workdir
        base = workdir / "containerd"
        (base / "certs.d").mkdir(parents=True)
        cni_conf = workdir / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-pswnode.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "pswnode",
                    "plugins": [
                        {
                            # Pods need no traffic of their own for pulls (containerd pulls
                            # on the host side): a plain bridge, no gateway, no NAT rules.
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": False,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "dataDir": str(workdir / "cni" / "ipam"),
                            },
                        }
                    ],
                },
                indent=2,
            )
        )
        registry = self._state.registry
        assert registry is not None
        self.trust_registry(registry.host, ca=None)
        config = f"""\
version = 3
root = "{base / "root"}"
state = "{base / "state"}"
# NRI would open /run/nri: off, nothing here uses it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{base / "containerd.sock"}"

[ttrpc]
  address = "{base / "containerd.sock.ttrpc"}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    # No public registry is reachable: the sandbox image comes from the node's own.
    sandbox = "{self.pause_image}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{base / "certs.d"}"

[plugins.'io.containerd.cri.v1.runtime']
  # This VM withholds CAP_SYS_RESOURCE: without this runc cannot set oom_score_adj and
  # every sandbox fails ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{self.binaries.cni_bin_dir}"]
    conf_dir = "{cni_conf}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{self.binaries.runc}"
        # runc's state under our directory, not /run/containerd/runc.
        Root = "{base / "runc"}"
        # cgroup v1 host, kubelet on the cgroupfs driver.
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  # The streaming server (exec/attach/port-forward) stays on loopback.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        (base / "config.toml").write_text(config)

    def _containerd_args(self) -> list[str]:
        base = self._state.workdir / "containerd"
        return [str(self.binaries.containerd), "--config", str(base / "config.toml")]

    def _write_kubelet_config(self) -> None:
        state = self._state
        state.kubelet_port = free_port()
        self.pod_logs_dir.mkdir()
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": "127.0.0.1",
            "port": state.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "podLogsDir": str(self.pod_logs_dir),
            # Loopback only, and nothing but the API server would call it.
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            # This machine: cgroup v1 (the kubelet refuses it unless told), swap allowed.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            # Otherwise the kubelet adds KUBE-FIREWALL and canary chains that outlive it.
            "makeIPTablesUtilChains": False,
            # A shared machine's disk and memory are not the node's to police.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "registerNode": True,
            "rotateCertificates": False,
            "serializeImagePulls": False,
            "volumeStatsAggPeriod": "0s",
        }
        (state.workdir / "kubelet-config.yaml").write_text(yaml.safe_dump(config))

    def _kubelet_args(self, kubeconfig: Path) -> list[str]:
        workdir = self._state.workdir
        return [
            str(self.binaries.kubelet),
            f"--config={workdir / 'kubelet-config.yaml'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={workdir / 'kubelet'}",
            # Its serving certificate would otherwise go to /var/lib/kubelet/pki.
            f"--cert-dir={workdir / 'kubelet' / 'pki'}",
            f"--hostname-override={self.name}",
            f"--v={self.verbosity}",
        ]

    def _scheduler_args(self, kubeconfig: Path) -> list[str]:
        return [
            str(self.binaries.kube_scheduler),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--v={self.verbosity}",
        ]

    def _spawn(self, name: str, args: list[str]) -> None:
        state = self._state
        log_path = state.workdir / f"{name}.log"
        state.logs[name] = log_path
        env = dict(os.environ)
        # containerd finds its shim and runc on PATH.
        env["PATH"] = os.pathsep.join(
            [str(self.binaries.containerd.parent), str(self.binaries.runc.parent), env["PATH"]]
        )
        state.processes[name] = spawn(args, log_path, cwd=state.workdir, env=env)

    def _node_ready(self) -> bool:
        response = self.controlplane.api("GET", f"/api/v1/nodes/{self.name}")
        if response.status != http.HTTPStatus.OK:
            return False
        conditions: list[Mapping[str, Any]] = response.body["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _take_lock(path: Path) -> IO[str]:
    """One node per machine: the kubelet owns host-wide paths (device-plugins, ...)."""
    lock = path.open("w")
    try:
        return _wait_for_lock(path, lock)
    except BaseException:
        # A timeout or an interrupt while waiting: the file is ours to close, or it is
        # reported as unclosed in whatever test runs next.
        lock.close()
        raise


def _wait_for_lock(path: Path, lock: IO[str]) -> IO[str]:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    said = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise NodeError(
                    f"another local node held {path} for {LOCK_WAIT_SECONDS:.0f}s: stop it first"
                ) from None
            if not said:
                print("# another local node runs on this machine: waiting for it", flush=True)
                said = True
            time.sleep(0.5)


def _end(pid: int, first: signal.Signals = signal.SIGTERM) -> None:
    """Signal a process that is not our child, then SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
