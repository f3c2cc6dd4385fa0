"""A throw-away Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Everything binds to 127.0.0.1 on free ports and lives in one temporary directory that
``stop()`` removes. There are no nodes, kubelet or scheduler: pods stay Pending, which is
all an admission webhook needs (it sees every pod create).

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces")
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devenv.controlplane.build import Binaries, locate
from devenv.lifecycle import Running
from devenv.processes import (
    kill_left,
    log_tails,
    spawn,
    terminate,
    wait_until,
)
from webhook.certs.pki import KeyPair, issue, make_ca

# What Kubernetes clusters conventionally call themselves; the issuer also becomes the
# default audience of service-account tokens.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Any private range works; the first address is the `kubernetes` Service's ClusterIP.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
# The smallest RSA size every token consumer accepts.
SERVICE_ACCOUNT_KEY_BITS = 2048
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"
# The identity the bootstrap RBAC policy grants kube-controller-manager's permissions to.
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
# Long enough for a playground left running for a while, and nothing here outlives a run.
CERT_VALIDITY_DAYS = 365
# Each component gets this long after SIGTERM before SIGKILL; they normally exit in < 1 s.
STOP_GRACE_SECONDS = 5.0
# A stolen port (picked free, bound by someone else before the component) is retried.
PORT_CONFLICT_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or a component died; carries the log tails."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; unlike CalledProcessError, str() shows its output."""

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited with {self.returncode}\n"
            f"stdout: {self.stdout}\nstderr: {self.stderr}"
        )


@dataclass(frozen=True)
class Ports:
    apiserver: int
    etcd_client: int
    etcd_peer: int


@dataclass(frozen=True)
class AdminCredentials:
    """A client certificate the API server maps to user ``admin`` in ``system:masters``."""

    client_cert: Path
    client_key: Path
    username: str = ADMIN_USER
    groups: tuple[str, ...] = (ADMIN_GROUP,)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any


@dataclass
class _Running:
    workdir: Path
    ports: Ports
    ca_cert: Path
    admin: AdminCredentials
    kubeconfig: Path
    logs: dict[str, Path]
    pki: _Pki
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


#: What the API server audits: the writes of ServiceAccounts (the identities the tests
#: check, a webhook's among them) and their reads of ServiceAccounts, at the Metadata level
#: (who, verb, resource, namespace, name, code; never a body), once per request.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
    verbs: ["get"]
    resources: [{group: "", resources: ["serviceaccounts"]}]
  - level: None
"""


def _audit_files(pki: _Pki) -> tuple[Path, Path]:
    directory = pki.ca_cert.parent
    return directory / "audit-policy.yaml", directory / "audit.log"


# --- certificates ------------------------------------------------------------------------


def _new_service_account_key() -> rsa.RSAPrivateKey:
    # RSA, so tokens are RS256 as on kubeadm, AKS and EKS clusters: Entra ID workload
    # identity federation (and most OIDC relying parties) accept only RS256 issuer keys.
    return rsa.generate_private_key(public_exponent=65537, key_size=SERVICE_ACCOUNT_KEY_BITS)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@dataclass(frozen=True)
class _Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin: AdminCredentials
    controller_manager_cert: Path
    controller_manager_key: Path
    service_account_key: Path
    service_account_pub: Path


def _generate_pki(directory: Path) -> _Pki:
    """One CA signs the serving certificate and the client certificates (as kubeadm does)."""
    directory.mkdir(mode=0o700)
    ca = make_ca("pull-secret-webhook-test-ca", days=CERT_VALIDITY_DAYS)
    serving = issue(
        ca,
        "kube-apiserver",
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ip_addresses=["127.0.0.1", KUBERNETES_SERVICE_IP],
        days=CERT_VALIDITY_DAYS,
    )
    admin = issue(ca, ADMIN_USER, organizations=[ADMIN_GROUP], client=True, days=CERT_VALIDITY_DAYS)
    kcm = issue(ca, CONTROLLER_MANAGER_USER, client=True, days=CERT_VALIDITY_DAYS)
    sa_key = _new_service_account_key()

    return _Pki(
        ca_cert=_write(directory / "ca.crt", ca.cert_pem, 0o644),
        ca_key=_write(directory / "ca.key", ca.key_pem),
        serving_cert=_write(directory / "apiserver.crt", serving.cert_pem, 0o644),
        serving_key=_write(directory / "apiserver.key", serving.key_pem),
        admin=AdminCredentials(
            client_cert=_write(directory / "admin.crt", admin.cert_pem, 0o644),
            client_key=_write(directory / "admin.key", admin.key_pem),
        ),
        controller_manager_cert=_write(directory / "kcm.crt", kcm.cert_pem, 0o644),
        controller_manager_key=_write(directory / "kcm.key", kcm.key_pem),
        service_account_key=_write(directory / "sa.key", _key_pem(sa_key)),
        service_account_pub=_write(
            directory / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        ),
    )


def _kubeconfig(server: str, ca_cert: Path, cert: Path, key: Path, user: str) -> str:
    return _kubeconfig_for(
        server,
        ca_cert,
        user,
        {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
    )


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _kubeconfig_for(server: str, ca_cert: Path, user: str, credentials: dict[str, str]) -> str:
    """A self-contained kubeconfig (credentials embedded, so it can be copied anywhere)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "controlplane",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {"name": "controlplane", "context": {"cluster": "controlplane", "user": user}}
        ],
        "current-context": "controlplane",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


# --- processes ---------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports the kernel considers free right now (all held open at once: no duplicates)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@functools.cache
def _etcd_supports(etcd: Path, flag: str) -> bool:
    help_text = subprocess.run(
        [str(etcd), "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    return flag in help_text.stdout + help_text.stderr


class ControlPlane(Running["_Running"]):
    """etcd + kube-apiserver + kube-controller-manager on loopback, for tests and playing.

    Attributes (available once started): ``server`` (https URL), ``kubeconfig`` (admin
    kubeconfig file), ``ca_cert`` (CA that signed the serving certificate and the client
    certificates), ``admin`` (client certificate and key for user ``admin`` in
    ``system:masters``), ``ports``, ``workdir``, ``logs`` (component name -> log file) and
    ``service_account_issuer``.
    """

    WHAT = "control plane"
    ERROR = ControlPlaneError

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        startup_timeout: float = 60.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        workdir_parent: Path | None = None,
        verbosity: int = 1,
    ) -> None:
        self.binaries = binaries if binaries is not None else locate()
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.extra_controller_manager_args = tuple(extra_controller_manager_args)
        self.workdir_parent = workdir_parent
        self.verbosity = verbosity
        self.service_account_issuer = SERVICE_ACCOUNT_ISSUER
        self.startup_seconds: float | None = None
        self._running: _Running | None = None

    def __repr__(self) -> str:
        where = self.server if self._running is not None else "not running"
        return f"<ControlPlane {where}>"

    # --- public attributes -----------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._state.ports.apiserver}"

    @property
    def kubeconfig(self) -> Path:
        return self._state.kubeconfig

    @property
    def ca_cert(self) -> Path:
        return self._state.ca_cert

    @property
    def admin(self) -> AdminCredentials:
        return self._state.admin

    @property
    def ports(self) -> Ports:
        return self._state.ports

    @property
    def workdir(self) -> Path:
        return self._state.workdir

    @property
    def logs(self) -> Mapping[str, Path]:
        return dict(self._state.logs)

    def pids(self) -> dict[str, int]:
        """Component name -> process id, of the components running now."""
        return {
            name: process.pid
            for name, process in self._state.processes.items()
            if process.poll() is None
        }

    # --- lifecycle (``with`` starts and stops it: devenv.lifecycle.Component) ---

    def start(self) -> None:
        """Start all components and return once the API is ready for pods."""
        if self._running is not None:
            raise RuntimeError("the control plane is already running")
        started = time.monotonic()
        for attempt in range(1, PORT_CONFLICT_ATTEMPTS + 1):
            try:
                self._start_once(started)
            except _PortConflictError:
                if attempt == PORT_CONFLICT_ATTEMPTS:
                    raise ControlPlaneError("could not bind free ports after retries") from None
                continue
            break
        self.startup_seconds = time.monotonic() - started

    def _start_once(self, started: float) -> None:
        deadline = started + self.startup_timeout
        workdir = Path(tempfile.mkdtemp(prefix="controlplane-", dir=self.workdir_parent))
        try:
            pki = _generate_pki(workdir / "pki")
            etcd_client, etcd_peer, apiserver = _free_ports(3)
            ports = Ports(apiserver=apiserver, etcd_client=etcd_client, etcd_peer=etcd_peer)
            server = f"https://127.0.0.1:{apiserver}"
            kubeconfig = workdir / "admin.kubeconfig"
            kubeconfig.write_text(
                _kubeconfig(
                    server, pki.ca_cert, pki.admin.client_cert, pki.admin.client_key, ADMIN_USER
                )
            )
            kubeconfig.chmod(0o600)
            kcm_kubeconfig = workdir / "kube-controller-manager.kubeconfig"
            kcm_kubeconfig.write_text(
                _kubeconfig(
                    server,
                    pki.ca_cert,
                    pki.controller_manager_cert,
                    pki.controller_manager_key,
                    CONTROLLER_MANAGER_USER,
                )
            )
            (workdir / "logs").mkdir()
            self._running = _Running(
                workdir=workdir,
                ports=ports,
                ca_cert=pki.ca_cert,
                admin=pki.admin,
                kubeconfig=kubeconfig,
                logs={},
                pki=pki,
            )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

        try:
            self._spawn("etcd", self._etcd_args(workdir, ports))
            self._wait("etcd /health", deadline, self._etcd_healthy)
            self._spawn("kube-apiserver", self._apiserver_args(ports, pki))
            self._wait("kube-apiserver /readyz", deadline, self._apiserver_ready)
            self._spawn(
                "kube-controller-manager", self._controller_manager_args(kcm_kubeconfig, pki)
            )
            self._wait(
                "the default ServiceAccount in namespace default",
                deadline,
                lambda: (
                    self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default").status
                    == http.HTTPStatus.OK
                ),
            )
        except BaseException as exc:
            tails = self.log_tails()
            conflict = "address already in use" in tails
            self.stop()
            if conflict:
                raise _PortConflictError from exc
            if isinstance(exc, ControlPlaneError):
                raise ControlPlaneError(f"{exc}\n{tails}") from None
            raise

    def stop(self) -> None:
        """Stop every component (controller manager, apiserver, then etcd); remove files."""
        running, self._running = self._running, None
        if running is None:
            return
        try:
            for name in reversed(list(running.processes)):
                terminate(running.processes[name], STOP_GRACE_SECONDS)
        finally:
            kill_left(running.processes)
            shutil.rmtree(running.workdir, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (SIGTERM, as a restart or an upgrade does); etcd,
        the controller manager and every file stay. ``start_apiserver`` brings it back."""
        state = self._state
        process = state.processes.pop("kube-apiserver", None)
        if process is not None:
            terminate(process, STOP_GRACE_SECONDS)

    def start_apiserver(self, timeout: float | None = None) -> float:
        """Start kube-apiserver again on its port, with its certificates and etcd, and
        wait until /readyz answers ok; returns the seconds that took."""
        state = self._state
        if "kube-apiserver" in state.processes:
            raise RuntimeError("kube-apiserver is already running")
        started = time.monotonic()
        self._spawn("kube-apiserver", self._apiserver_args(state.ports, state.pki))
        self._wait(
            "kube-apiserver /readyz",
            started + (timeout if timeout is not None else self.startup_timeout),
            self._apiserver_ready,
        )
        return time.monotonic() - started

    def check_alive(self) -> None:
        """Raise ControlPlaneError (with the log tails) if any component has exited."""
        for name, process in self._state.processes.items():
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}\n{self.log_tails()}"
                )

    # --- helpers for tests -----------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # same name as subprocess.run's
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this control plane as admin."""
        cmd = [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig), *args]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def wait_for_service_account(
        self, namespace: str, name: str = "default", *, timeout: float = 30.0
    ) -> None:
        """Wait until kube-controller-manager has created ``name`` in ``namespace``.

        Pods cannot be created in a namespace before its default ServiceAccount exists (the
        ServiceAccount admission plugin rejects them), so tests wait for it after creating one.
        """
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        wait_until(
            lambda: self.api("GET", path).status == http.HTTPStatus.OK,
            timeout=timeout,
            what=f"ServiceAccount {namespace}/{name}",
        )

    def issue_kubeconfig(self, file_name: str, user: str, groups: Sequence[str] = ()) -> Path:
        """Write a kubeconfig for ``user`` (in ``groups``) into the work directory.

        The client certificate is signed by the cluster CA, which is how kubeadm gives the
        kubelet (``system:node:NAME`` in ``system:nodes``, for the Node authorizer) and the
        scheduler (``system:kube-scheduler``) their identities.
        """
        pki = self.workdir / "pki"
        ca = KeyPair(self.ca_cert.read_bytes(), (pki / "ca.key").read_bytes())
        leaf = issue(ca, user, organizations=groups, client=True, days=CERT_VALIDITY_DAYS)
        stem = file_name.removesuffix(".kubeconfig")
        cert_path = _write(pki / f"{stem}.crt", leaf.cert_pem, 0o644)
        key_path = _write(pki / f"{stem}.key", leaf.key_pem)
        path = self.workdir / f"{stem}.kubeconfig"
        path.write_text(_kubeconfig(self.server, self.ca_cert, cert_path, key_path, user))
        path.chmod(0o600)
        return path

    def token_kubeconfig(
        self,
        path: Path,
        namespace: str,
        service_account: str,
        *,
        seconds: int = 3600,
        audience: str = "",
    ) -> Path:
        """Write a kubeconfig holding a real token of the ServiceAccount (a TokenRequest
        made as admin): the identity a pod running as it would have."""
        path.write_text(
            _kubeconfig_for(
                self.server,
                self.ca_cert,
                service_account,
                {"token": self.service_account_token(namespace, service_account, seconds=seconds,
                                                      audience=audience)},
            )
        )  # fmt: skip
        path.chmod(0o600)
        return path

    def service_account_token(
        self, namespace: str, service_account: str, *, seconds: int = 3600, audience: str = ""
    ) -> str:
        """A TokenRequest token of the ServiceAccount, requested as admin."""
        args = ["create", "token", service_account, "-n", namespace, f"--duration={seconds}s"]
        if audience:
            args.append(f"--audience={audience}")
        return self.kubectl(*args).stdout.strip()

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the API server and presenting the admin cert."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(str(self.admin.client_cert), str(self.admin.client_key))
        return context

    def api(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> ApiResponse:
        """One request to the API server as admin; JSON in and out."""
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.ports.apiserver, context=self.ssl_context(), timeout=timeout
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            # JSON preferred, anything else accepted: some endpoints only offer their own
            # JSON media type (/openid/v1/jwks serves only application/jwk-set+json).
            headers = {"Accept": "application/json, */*;q=0.5"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return ApiResponse(status=response.status, body=parsed)

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` of each component's log, for failure reports."""
        if self._running is None:
            return "(control plane not running: no logs)"
        return log_tails(self._running.logs, self._running.processes, lines)

    # --- internals -------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        state = self._state
        log_path = state.workdir / "logs" / f"{name}.log"
        state.logs[name] = log_path
        state.processes[name] = spawn(args, log_path, cwd=state.workdir)

    def _etcd_healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports.etcd_client, timeout=2)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            return response.status == http.HTTPStatus.OK and b"true" in response.read()
        finally:
            conn.close()

    def _apiserver_ready(self) -> bool:
        return self.api("GET", "/readyz", timeout=2).status == http.HTTPStatus.OK

    def _etcd_args(self, workdir: Path, ports: Ports) -> list[str]:
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        args = [
            str(self.binaries.etcd),
            "--name=controlplane",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=controlplane={peer}",
            "--log-level=warn",
        ]
        # Throw-away data: skipping fsync makes every API write much faster.
        if _etcd_supports(self.binaries.etcd, "--unsafe-no-fsync"):
            args.append("--unsafe-no-fsync")
        return args

    def _apiserver_args(self, ports: Ports, pki: _Pki) -> list[str]:
        policy, log = _audit_files(pki)
        policy.write_text(AUDIT_POLICY)
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service's Endpoints may not hold a loopback address, and
            # nothing runs in-cluster to use them: do not reconcile them.
            "--endpoint-reconciler-type=none",
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC,Node",
            # On by default already; explicit because the tests depend on it.
            "--enable-admission-plugins=ServiceAccount",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--v={self.verbosity}",
            # What ServiceAccounts write (and which ServiceAccounts they read), as the API
            # server saw it: the tests count a webhook's writes from here (audit_events).
            f"--audit-policy-file={policy}",
            f"--audit-log-path={log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            # A long session stays on disk within bounds; the tests read recent events.
            "--audit-log-maxsize=200",
            "--audit-log-maxbackup=1",
            *self.extra_apiserver_args,
        ]

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event logged so far (AUDIT_POLICY: ServiceAccounts' writes and their
        ServiceAccount reads, at the Metadata level, once each on ResponseComplete)."""
        assert self._running is not None, "control plane not running"
        _, log = _audit_files(self._running.pki)
        if not log.exists():
            return []
        events = []
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def _controller_manager_args(self, kubeconfig: Path, pki: _Pki) -> list[str]:
        return [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            # No HTTPS endpoint: nothing scrapes it, and it would need another port.
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=*",
            # Each controller acts as its own ServiceAccount (system:controller:*), the only
            # identities the bootstrap RBAC policy grants what the controllers need.
            "--use-service-account-credentials=true",
            # The default client rate limit (20 QPS, burst 30) throttles the serial start of
            # ~40 controllers, each fetching its ServiceAccount token: seconds of startup.
            "--kube-api-qps=500",
            "--kube-api-burst=1000",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--v={self.verbosity}",
            *self.extra_controller_manager_args,
        ]


class _PortConflictError(Exception):
    pass
