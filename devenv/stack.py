"""The whole product on a real local control plane, for end-to-end tests and the playground.

``Stack`` starts, around a running ``ControlPlane``: the Azure emulator (Entra ID,
an ACR login server in front of a real docker-registry with token auth), the Google
Cloud emulator (a metadata server holding a service account, an Artifact Registry host
in front of its own docker-registry), a
docker-registry with basic auth standing in for an ECR registry, moto for the
ECR API, the webhook's RBAC and MutatingWebhookConfiguration from
``manifests/`` (pointed at a local URL with its caBundle), and webhook replicas
as separate processes running under the webhook's own ServiceAccount token,
behind a round-robin TCP balancer that, like a Service, sends new connections only to
ready replicas.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devenv.controlplane import ControlPlane
from devenv.controlplane.cluster import SERVICE_ACCOUNT_ISSUER
from devenv.node.images import seed_image
from devenv.peers.acr import ACR_ISSUER, TOKEN_USERNAME, AcrRegistry
from devenv.peers.artifactregistry import GAR_ISSUER, ArtifactRegistryHost
from devenv.peers.artifactregistry import TOKEN_USERNAME as GAR_USERNAME
from devenv.peers.aws import MotoServer, ThreadedMotoProxy, ecr_client
from devenv.peers.azure import AzureEmulator, EmulatorThread
from devenv.peers.gcp import GcpEmulator
from devenv.peers.gcp_iam import CLOUD_PLATFORM_SCOPE
from devenv.peers.oci import (
    OciImage,
    SkopeoResult,
    dockerconfigjson,
    skopeo_copy_to_dir,
    skopeo_push,
    write_authfile,
)
from devenv.peers.registry import (
    ECR_USERNAME,
    GAR_SEED_REPOSITORY,
    SEED_REPOSITORY,
    SEED_TAG,
    DockerRegistry,
)
from devenv.peers.tls import CertificateAuthority
from devenv.processes import terminate
from devenv.serve import Serve, free_port, readyz
from webhook.certs.pki import KeyPair, make_ca, make_serving_cert
from webhook.server.workers import PUSH_SECONDS

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "pull-secret-webhook"
SERVICE_ACCOUNT = "pull-secret-webhook"
WEBHOOK_CONFIGURATION = "pull-secret-webhook"
INJECT_LABEL = "pull-secret-webhook/inject"
ECR_REGION = "us-east-1"
#: The Google service account the replicas' metadata server holds (GKE Workload Identity).
GAR_READER = "puller@e2e-project.iam.gserviceaccount.com"
GAR_PROJECT_NUMBER = "123456789012"


#: The provider audience docs/gcp-federation.md's examples name.
DOCUMENTED_GAR_AUDIENCE = (
    "https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/"
    "clusters/providers/my-cluster"
)


def gar_audience_patch(audience: str) -> dict[str, Any]:
    """docs/gcp-federation.md's kustomize patch of the per-pod policy's audiences, as
    written there, with its example provider replaced by ``audience``."""
    text = (REPO / "docs" / "gcp-federation.md").read_text()
    for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        if "pull-secret-webhook-tokens" in block and DOCUMENTED_GAR_AUDIENCE in block:
            [patch] = yaml.safe_load(block.replace(DOCUMENTED_GAR_AUDIENCE, audience))["patches"]
            assert isinstance(patch, dict)
            return patch
    raise LookupError("docs/gcp-federation.md has no patch of pull-secret-webhook-tokens")


RECORDS_CRD = "managedpullsecrets.pull-secret-webhook.io"
#: Manifests kinds that make sense without a kubelet: identity, RBAC, the records' CRD,
#: the policies that bound the webhook's writes, and registration.
CLUSTER_KINDS = {
    "Namespace",
    "ServiceAccount",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "MutatingWebhookConfiguration",
}
#: The webhook's ServiceAccount token lifetime for the test run (TokenRequest minimum
#: is 10 minutes; a test session is shorter than 2 hours).
TOKEN_SECONDS = 7200
#: Lifetime of the short-lived registry's tokens: long enough to stay usable (the
#: webhook wants a minute left), short enough that with refresh.fraction 0.1 a
#: renewal comes due 15 s after issue, plus the secret's own place in the first half of
#: what is left before the expiry margin (webhook.pullsecrets.renewals): between 15 and 52.5 s.
SHORT_TOKEN_SECONDS = 150
#: Replicas behind the balancer serve this long, not ready, after SIGTERM: longer than the
#: balancer takes to stop sending them connections (Balancer.READY_POLL_SECONDS), as the
#: webhook's 5 s default is longer than endpoints take in a cluster; shorter, to keep the
#: suite quick.
SHUTDOWN_DELAY = 2.0
#: How long a stopped replica may take to exit before it is killed.
REPLICA_STOP_SECONDS = 30.0


class Balancer:
    """A TCP round-robin balancer in a thread: what a Service and kube-proxy do for the
    replicas. New connections go only to replicas whose /readyz says ok (polled every
    READY_POLL_SECONDS, as the endpoints controller and kube-proxy follow readiness); a
    connection once made stays with its replica until either side closes it (conntrack).

    A replica that answers "not ready" is dropped at the next poll (a draining replica
    says so at once). One that does not answer within a second is dropped only after
    MISSES_TO_DROP polls in a row, as the Deployment's readinessProbe (failureThreshold 2)
    lets a kubelet wait out a busy moment instead of emptying the Service.
    """

    #: How often each backend's readiness is read: the endpoints controller and kube-proxy
    #: together take about a second to follow a readiness change in a cluster.
    READY_POLL_SECONDS = 1.0
    #: Unanswered polls in a row before a replica is dropped: the manifests' readinessProbe
    #: failureThreshold.
    MISSES_TO_DROP = 2

    def __init__(self, backends: list[Replica]) -> None:
        self.backends = list(backends)
        self.port = free_port()
        self.connections: dict[str, int] = {}
        """New connections sent to each replica, by name."""
        self._ready: set[int] = set()
        self._misses: dict[int, int] = {}
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        #: Both ends of every connection made: stop() aborts whichever are still open.
        self._transports: weakref.WeakSet[asyncio.WriteTransport] = weakref.WeakSet()

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self._server = fut.result(10)

    async def _start(self) -> asyncio.Server:
        await self._poll_once()
        self._loop.create_task(self._poll())
        return await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def set_backends(self, backends: list[Replica]) -> None:
        """Replace the endpoints (taken up by the next poll, as endpoints are)."""
        self._loop.call_soon_threadsafe(setattr, self, "backends", list(backends))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.READY_POLL_SECONDS)
            await self._poll_once()

    async def _poll_once(self) -> None:
        backends = list(self.backends)
        answers = await asyncio.gather(*(_ready(b.health_port) for b in backends))
        ready = set()
        for backend, answer in zip(backends, answers, strict=True):
            missed = self._misses.get(backend.port, 0) + 1 if answer is None else 0
            self._misses[backend.port] = missed
            if answer or (
                answer is None and backend.port in self._ready and missed < self.MISSES_TO_DROP
            ):
                ready.add(backend.port)
        self._ready = ready

    def _pick(self) -> Replica | None:
        ready = [b for b in self.backends if b.port in self._ready]
        if not ready:
            return None
        backend = ready[self._next % len(ready)]
        self._next += 1
        return backend

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self._pick()
        if backend is None:  # no ready endpoint: the connection is refused
            writer.close()
            return
        self.connections[backend.name] = self.connections.get(backend.name, 0) + 1
        self._transports.add(writer.transport)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend.port)
        except OSError:
            writer.close()
            return
        self._transports.add(up_writer.transport)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    dst.close()

        # Cancelled: the balancer is stopping, and aborts both ends (stop); the task ends
        # quietly rather than "cancelled".
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        if self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                # Every end still open is aborted, not closed: a close() waits for unsent
                # bytes to drain, which a stopped loop never does, and would leave the
                # collector open sockets to find. Each closes its socket (a callback of
                # the loop's) before the loop stops.
                for transport in list(self._transports):
                    transport.abort()
                for _ in range(2):
                    await asyncio.sleep(0)

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def _ready(health_port: int) -> bool | None:
    """Does the replica's /readyz answer 200? None: no answer within a second (a refused
    connection is an answer: nothing listens)."""
    try:
        async with asyncio.timeout(1.0):
            reader, writer = await asyncio.open_connection("127.0.0.1", health_port)
            try:
                writer.write(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                status = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return None
    except OSError:
        return False
    return status.split(b" ")[1:2] == [b"200"]


@dataclass
class Replica:
    name: str
    port: int
    health_port: int
    process: subprocess.Popen[bytes]
    log: Path

    def ready(self) -> bool:
        return readyz(self.health_port)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(text)


@dataclass
class Stack:
    controlplane: ControlPlane
    workdir: Path
    replicas_wanted: int = 2
    refresh_interval: float = 1.0
    gc_grace: float = 3.0
    refresh_fraction: float = 0.5
    failure_policy: str = "Fail"
    heal_grace: float | None = None
    """healing.graceSeconds in the replicas' config (None: the default)."""
    no_prefetch: tuple[str, ...] = ("acr-slow", "acr-stall", "acr-denied")
    """Entries written with ``prefetch: false``: the registries whose exchanges tests
    slow down, stall or refuse (by taking the role away), so that the pod a test makes is
    the one that exchanges, under the test's conditions rather than those of the replica's
    start (the benchmarks, which provoke nothing, pass ``()``: every entry as installed)."""
    emulator_thread: EmulatorThread[AzureEmulator] | None = None
    emulator: AzureEmulator | None = None
    acr: AcrRegistry | None = None
    acr_slow: AcrRegistry | None = None
    acr_stall: AcrRegistry | None = None
    acr_denied: AcrRegistry | None = None
    acr_short: AcrRegistry | None = None
    acr_tenant: AcrRegistry | None = None
    gcp_thread: EmulatorThread[GcpEmulator] | None = None
    gcp: GcpEmulator | None = None
    gar: ArtifactRegistryHost | None = None
    """An Artifact Registry host the replicas read as the metadata server's account."""
    gar_tenant: ArtifactRegistryHost | None = None
    """An Artifact Registry host only pods' own ServiceAccounts read (federated)."""
    gar_audience: str = ""
    """The workload identity pool provider that trusts this cluster's tokens."""
    acr_backend: DockerRegistry | None = None
    acr_backends: list[DockerRegistry] = field(default_factory=list)
    ecr_registry: DockerRegistry | None = None
    moto: MotoServer | None = None
    ecr_api: ThreadedMotoProxy | None = None
    balancer: Balancer | None = None
    replicas: list[Replica] = field(default_factory=list)
    tenant: str = ""
    client_id: str = ""
    object_id: str = ""
    config_path: Path | None = None
    webhook_ca: KeyPair | None = None
    webhook_env: dict[str, str] = field(default_factory=dict)
    webhook_kubeconfig: Path | None = None
    service_account_dir: Path | None = None
    _serving: tuple[Path, Path] = (Path(), Path())
    _launched: int = 0

    # -- set-up ------------------------------------------------------------------

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_emulator()
            self._start_registries()
            self._install_manifests()
            self._write_config()
            self._start_replicas()
            self._register()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_emulator(self) -> None:
        ca = CertificateAuthority(self.workdir / "azure-ca")
        self.emulator = AzureEmulator(self.workdir / "azure", ca=ca)
        self.emulator_thread = EmulatorThread(self.emulator)
        self.emulator_thread.start()
        em = self.emulator
        self.tenant = em.add_tenant()
        app = em.register_app(self.tenant)
        self.client_id, self.object_id = app.client_id, app.object_id
        em.add_federated_credential(
            self.tenant,
            self.client_id,
            issuer=SERVICE_ACCOUNT_ISSUER,
            subject=f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}",
        )
        # Let the emulator verify the federated tokens with the API server's own keys.
        jwks = self.controlplane.api("GET", "/openid/v1/jwks").body
        em.register_issuer_keys(SERVICE_ACCOUNT_ISSUER, jwks)
        # Google Cloud beside it, on the same CA: the replicas' metadata server holds a
        # service account (what GKE Workload Identity gives the webhook's pods).
        self.gcp = GcpEmulator(self.workdir / "gcp", ca=ca)
        self.gcp_thread = EmulatorThread(self.gcp)
        self.gcp_thread.start()
        self.gcp.iam.add_service_account(GAR_READER)
        self.gcp.metadata.attach_service_account(GAR_READER)
        self.gar_audience = self.gcp.iam.add_provider(
            GAR_PROJECT_NUMBER, "clusters", "e2e-cluster", issuer=SERVICE_ACCOUNT_ISSUER, jwks=jwks
        ).name

    def _start_registries(self) -> None:
        assert self.emulator_thread is not None and self.emulator is not None
        em = self.emulator
        image = seed_image(self.workdir / "image", SEED_TAG)
        self.acr = self._acr_login_server("e2eacr", image)
        self.acr_backend = self.acr_backends[0]
        self.acr.assign_role(self.object_id, "AcrPull")
        # Five more login servers, each with its own registry behind it (a registry checks
        # that a token names it as audience, so login servers cannot share one): two whose
        # token service will be slowed down (one test each: a credential one test made is
        # cached for the next), one where the identity has no role yet, one whose tokens
        # live 150 s (to watch a real renewal happen), and one that only pods' own service
        # accounts can pull from (per-pod identity).
        self.acr_slow = self._acr_login_server("e2eslow", image)
        self.acr_slow.assign_role(self.object_id, "AcrPull")
        self.acr_stall = self._acr_login_server("e2estall", image)
        self.acr_stall.assign_role(self.object_id, "AcrPull")
        self.acr_denied = self._acr_login_server("e2edenied", image)
        self.acr_short = self._acr_login_server("e2eshort", image)
        self.acr_short.refresh_token_lifetime = SHORT_TOKEN_SECONDS
        self.acr_short.assign_role(self.object_id, "AcrPull")
        self.acr_tenant = self._acr_login_server("e2etenant", image)
        self.gar = self._gar_host("us", image)
        self.gar_tenant = self._gar_host("europe", image)

        self.moto = MotoServer()
        self.moto.start()
        self.ecr_api = ThreadedMotoProxy(self.moto.endpoint_url)
        self.ecr_api.start()
        token = ecr_client(self.moto.endpoint_url, ECR_REGION).get_authorization_token()
        user, password = (
            base64.b64decode(token["authorizationData"][0]["authorizationToken"])
            .decode()
            .split(":", 1)
        )
        assert user == ECR_USERNAME
        self.ecr_registry = DockerRegistry.htpasswd_auth(
            self.workdir / "registry-ecr", {ECR_USERNAME: password}
        )
        self.ecr_registry.start()
        auth = write_authfile(
            self.workdir / "seed-ecr.json",
            dockerconfigjson(self.ecr_registry.host, ECR_USERNAME, password),
        )
        pushed = asyncio.run(
            skopeo_push(
                image,
                f"{self.ecr_registry.host}/{SEED_REPOSITORY}:{SEED_TAG}",
                auth,
                tls_verify=False,
            )
        )
        auth.unlink()
        assert pushed.ok, pushed.stderr
        em.traffic.clear()

    def _acr_login_server(self, name: str, image: OciImage) -> AcrRegistry:
        """An ACR login server on the emulator in front of its own token-auth registry,
        holding the seed image (pushed under a temporary AcrPush role)."""
        assert self.emulator_thread is not None and self.emulator is not None
        em = self.emulator
        acr = self.emulator_thread.call(em.add_registry(name))
        backend = DockerRegistry.token_auth(
            self.workdir / f"registry-{name}",
            realm=acr.realm,
            service=acr.login_server,
            issuer=ACR_ISSUER,
            rootcertbundle=em.acr_signing_cert_path,
        )
        backend.start()
        self.acr_backends.append(backend)
        acr.upstream = backend.url
        acr.assign_role("seed-pusher", "AcrPush")
        auth = write_authfile(
            self.workdir / f"seed-{name}.json",
            dockerconfigjson(
                acr.login_server, TOKEN_USERNAME, acr.mint_refresh_token("seed-pusher")
            ),
        )
        pushed = asyncio.run(
            skopeo_push(
                image,
                f"{acr.login_server}/{SEED_REPOSITORY}:{SEED_TAG}",
                auth,
                cert_dir=em.cert_dir,
            )
        )
        acr.remove_role("seed-pusher")
        auth.unlink()
        assert pushed.ok, pushed.stderr
        return acr

    def _gar_host(self, location: str, image: OciImage) -> ArtifactRegistryHost:
        """An Artifact Registry host on the Google emulator in front of its own token-auth
        registry, holding the seed image at ``GAR_SEED_REPOSITORY`` (pushed with a writer's
        token, revoked after), readable by ``GAR_READER``."""
        assert self.gcp_thread is not None and self.gcp is not None
        gcp = self.gcp
        gar = self.gcp_thread.call(gcp.add_registry(location))
        backend = DockerRegistry.token_auth(
            self.workdir / f"registry-gar-{location}",
            realm=gar.realm,
            service=gar.host,
            issuer=GAR_ISSUER,
            rootcertbundle=gcp.signing_cert_path,
        )
        backend.start()
        self.acr_backends.append(backend)
        gar.upstream = backend.url
        repository = "repository:" + "/".join(GAR_SEED_REPOSITORY.split("/")[:2])
        pusher = gcp.iam.add_service_account("seed-pusher@e2e.iam.gserviceaccount.com").member
        gcp.iam.grant(repository, "roles/artifactregistry.writer", pusher)
        token, _ = gcp.iam.issue(pusher, [CLOUD_PLATFORM_SCOPE], "seed")
        auth = write_authfile(
            self.workdir / f"seed-gar-{location}.json",
            dockerconfigjson(gar.host, GAR_USERNAME, token),
        )
        pushed = asyncio.run(
            skopeo_push(
                image, f"{gar.host}/{GAR_SEED_REPOSITORY}:{SEED_TAG}", auth, cert_dir=gcp.cert_dir
            )
        )
        gcp.iam.revoke(repository, "roles/artifactregistry.writer", pusher)
        del gcp.iam.tokens[token]
        auth.unlink()
        assert pushed.ok, pushed.stderr
        gcp.iam.grant(repository, "roles/artifactregistry.reader", f"serviceAccount:{GAR_READER}")
        gcp.traffic.clear()
        return gar

    def manifest_objects(self) -> list[dict[str, Any]]:
        """The install as an operator would make it: manifests/ plus the per-pod identity
        component (this stack's config has a podServiceAccount entry)."""
        overlay = self.workdir / "install"
        overlay.mkdir(exist_ok=True)
        base = os.path.relpath(REPO / "manifests", overlay)  # kustomize wants relative paths
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [base],
                    "components": [f"{base}/components/pod-identity"],
                    # What docs/gcp-federation.md has an operator add for a gar entry of
                    # mode podServiceAccount (its patch, as written): the pool provider's
                    # audience.
                    "patches": [gar_audience_patch("https:" + self.gar_audience)],
                }
            )
        )
        out = self.controlplane.kubectl("kustomize", str(overlay)).stdout
        return [d for d in yaml.safe_load_all(out) if d and d.get("kind") in CLUSTER_KINDS]

    def _install_manifests(self) -> None:
        docs = [d for d in self.manifest_objects() if d["kind"] != "MutatingWebhookConfiguration"]
        self.controlplane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        self.controlplane.kubectl(
            "wait", "--for=condition=Established", "--timeout=30s", "crd", RECORDS_CRD
        )
        self.controlplane.wait_for_service_account(NAMESPACE, SERVICE_ACCOUNT)

    def _write_config(self) -> None:
        assert self.emulator and self.acr and self.ecr_registry and self.ecr_api
        assert self.acr_slow and self.acr_stall and self.acr_denied and self.acr_short
        assert self.acr_tenant
        azure_auth = {
            "mode": "workloadIdentity",
            "clientId": self.client_id,
            "tenantId": self.tenant,
            "authorityHost": self.emulator.authority_host,
        }
        acr_entries = [
            {"name": name, "kind": "acr", "hosts": [registry.login_server], "auth": azure_auth}
            for name, registry in (
                ("acr", self.acr),
                ("acr-slow", self.acr_slow),
                ("acr-stall", self.acr_stall),
                ("acr-denied", self.acr_denied),
                ("acr-short", self.acr_short),
            )
        ]
        per_pod = {
            "name": "acr-tenant",
            "kind": "acr",
            "hosts": [self.acr_tenant.login_server],
            "auth": {"mode": "podServiceAccount", "authorityHost": self.emulator.authority_host},
        }
        assert self.gar is not None and self.gar_tenant is not None and self.gcp is not None
        gar_entry = {
            "name": "gar",
            "kind": "gar",
            "hosts": [self.gar.host],
            "auth": {"mode": "metadataServer"},
        }
        gar_per_pod = {
            "name": "gar-tenant",
            "kind": "gar",
            "hosts": [self.gar_tenant.host],
            "stsUrl": self.gcp.sts_url,
            "iamCredentialsUrl": self.gcp.iam_credentials_url,
            "auth": {"mode": "podServiceAccount", "audience": self.gar_audience},
        }
        ecr_entry = {
            "name": "ecr",
            "kind": "ecr",
            "hosts": [self.ecr_registry.host],
            "region": ECR_REGION,
            "endpointUrl": self.ecr_api.endpoint_url,
            "stsEndpointUrl": self.ecr_api.endpoint_url,
        }
        entries: list[dict[str, Any]] = [*acr_entries, per_pod, ecr_entry, gar_entry, gar_per_pod]
        config = {
            "namespace": NAMESPACE,
            "caFile": str(self.emulator.ca_path),
            "admission": {"timeoutSeconds": 10},
            "refresh": {
                "intervalSeconds": self.refresh_interval,
                "gcGraceSeconds": self.gc_grace,
                "fraction": self.refresh_fraction,
            },
            "registries": [
                {**entry, "prefetch": False} if entry["name"] in self.no_prefetch else entry
                for entry in entries
            ],
        }
        if self.heal_grace is not None:
            config["healing"] = {"graceSeconds": self.heal_grace}
        self.config_path = self.workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))

    def _token(self, audience: str = "") -> str:
        return self.controlplane.service_account_token(
            NAMESPACE, SERVICE_ACCOUNT, seconds=TOKEN_SECONDS, audience=audience
        )

    def _start_replicas(self) -> None:
        assert self.emulator is not None and self.config_path is not None
        ca = make_ca("e2e-webhook-ca")
        self.webhook_ca = ca
        serving = make_serving_cert(ca, ["localhost"], ["127.0.0.1"])
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        serving.write(cert, key)
        kubeconfig = self.controlplane.token_kubeconfig(
            self.workdir / "webhook-kubeconfig.yaml",
            NAMESPACE,
            SERVICE_ACCOUNT,
            seconds=TOKEN_SECONDS,
        )
        # What the kubelet would mount: the replicas take the in-cluster path.
        service_account = self.workdir / "serviceaccount"
        service_account.mkdir(exist_ok=True)
        (service_account / "token").write_text(self._token())
        (service_account / "ca.crt").write_bytes(self.controlplane.ca_cert.read_bytes())
        self.service_account_dir = service_account
        federated = self.workdir / "azure-federated-token"
        federated.write_text(self._token("api://AzureADTokenExchange"))
        self.webhook_kubeconfig = kubeconfig
        self.webhook_env = {
            **os.environ,
            "AZURE_FEDERATED_TOKEN_FILE": str(federated),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": ECR_REGION,
            "PYTHONUNBUFFERED": "1",
        }
        if self.gcp is not None:
            self.webhook_env.update(self.gcp.environment())
        self._serving = (cert, key)
        self.replicas.extend(self._serving_replica() for _ in range(self.replicas_wanted))
        for replica in self.replicas:
            self._await_ready(replica)
        self.balancer = Balancer(self.replicas)
        self.balancer.start()

    def _launch(
        self,
        name: str,
        shutdown_delay: float = 0.0,
        workers: int = 1,
        config_path: Path | None = None,
    ) -> Replica:
        cert, key = self._serving
        assert self.config_path is not None
        serve = Serve(
            config_path or self.config_path,
            cert,
            key,
            free_port(),
            free_port(),
            service_account=self.service_account_dir,
            api_server=self.controlplane.server,
            pod_name=name,
            log_level="debug",
            shutdown_delay=shutdown_delay,
            workers=workers,
        )
        log = self.workdir / f"{name}.log"
        with log.open("ab") as handle:
            process = subprocess.Popen(
                serve.command(),
                cwd=REPO,
                env=serve.env(self.webhook_env),
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        return Replica(name, serve.port, serve.health_port, process, log)

    def _serving_replica(self) -> Replica:
        """A replica for behind the balancer: it lingers, not ready, after SIGTERM, as the
        Deployment's do (the balancer follows readiness)."""
        self._launched += 1
        return self._launch(f"webhook-{self._launched - 1}", SHUTDOWN_DELAY)

    def add_replica(self) -> Replica:
        """One more replica behind the balancer, once ready (a rolling update's new pod)."""
        assert self.balancer is not None
        replica = self._serving_replica()
        self._await_ready(replica)
        self.replicas.append(replica)
        self.balancer.set_backends(self.replicas)
        return replica

    def stop_replicas(self) -> int:
        """Stop every replica (an outage of the webhook): the balancer is left with no
        endpoint, so the API server's calls fail and its failurePolicy decides. Returns
        how many there were (``add_replica`` that many times to bring them back)."""
        assert self.balancer is not None
        stopped = len(self.replicas)
        self.balancer.set_backends([])
        for replica in self.replicas:
            terminate(replica.process, REPLICA_STOP_SECONDS)
        self.replicas.clear()
        return stopped

    def retire(self, replica: Replica, timeout: float = 30.0) -> int:
        """Wait for a replica sent SIGTERM to exit; drop it from the balancer's endpoints
        and from ``replicas``. Returns its exit code."""
        assert self.balancer is not None
        code = replica.process.wait(timeout)
        self.replicas.remove(replica)
        self.balancer.set_backends(self.replicas)
        return code

    @staticmethod
    def _await_ready(replica: Replica, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not replica.ready():
            if replica.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{replica.name} did not become ready:\n{replica.log_tail()}")
            time.sleep(0.1)

    def relaunch(self, replica: Replica, *, timeout: float = 30.0) -> Replica:
        """Stop one of the stack's replicas and start a new process in its place (same
        name: a leader takes its own Lease back at once)."""
        terminate(replica.process, REPLICA_STOP_SECONDS)
        fresh = self._launch(replica.name, SHUTDOWN_DELAY)
        self._await_ready(fresh, timeout)
        self.replicas[self.replicas.index(replica)] = fresh
        if self.balancer is not None:
            self.balancer.set_backends(self.replicas)
        return fresh

    @contextlib.contextmanager
    def extra_replica(
        self, name: str, workers: int = 1, config_path: Path | None = None
    ) -> Iterator[Replica]:
        """One more replica of the same install, behind no balancer: its metrics count
        only what the caller sends it (the shared replicas keep refreshing other tests'
        secrets in the background). ``workers``: its ``serve --workers``; ``config_path``:
        its own config file instead of the stack's (to reload it alone)."""
        replica = self._launch(name, workers=workers, config_path=config_path)
        try:
            self._await_ready(replica)
            yield replica
        finally:
            terminate(replica.process, REPLICA_STOP_SECONDS)

    @contextlib.contextmanager
    def unawaited_replica(self, name: str) -> Iterator[Replica]:
        """One more replica of the same install, started but not waited for: for what a
        replica that must never become ready does."""
        replica = self._launch(name)
        try:
            yield replica
        finally:
            terminate(replica.process, REPLICA_STOP_SECONDS)

    @contextlib.contextmanager
    def routed_to(self, replicas: list[Replica], namespace: str) -> Iterator[None]:
        """The API server sends its admissions to ``replicas`` only (behind a balancer of
        their own) until the block ends, then to the stack's replicas again. Each switch
        returns once a server-side dry run in ``namespace`` (opted in) reached the new
        replicas."""
        assert self.balancer is not None
        balancer = Balancer(list(replicas))
        balancer.start()
        try:
            self._register(balancer.port)
            self._await_route(replicas, namespace)
            yield
        finally:
            self._register(self.balancer.port)
            self._await_route(self.replicas, namespace)
            balancer.stop()

    def _await_route(self, replicas: list[Replica], namespace: str, timeout: float = 30) -> None:
        def admitted() -> float:
            total = 0.0
            for replica in replicas:
                for line in replica.metrics().splitlines():
                    if line.startswith("pull_secret_webhook_admissions_total{"):
                        total += float(line.rpartition(" ")[2])
            return total

        # An image no registry entry matches: the review is answered, nothing is made.
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "route-"},
            "spec": {"containers": [{"name": "c", "image": "registry.invalid/route:1"}]},
        }
        # The count is read against one baseline taken before the first try: these replicas
        # answer only what this route sends them, and a replica's secondary workers report
        # to its /metrics up to PUSH_SECONDS late. (Comparing each try with the count just
        # before it never saw an admission the API server's kept-alive connection sent to
        # a secondary worker: its count always arrived after the comparison.)
        baseline = admitted()
        deadline = time.monotonic() + timeout
        while True:
            self.controlplane.api("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)
            settle = time.monotonic() + PUSH_SECONDS + 1
            while time.monotonic() < settle:
                if admitted() > baseline:
                    return
                time.sleep(0.1)
            if time.monotonic() > deadline:
                raise RuntimeError(f"admissions did not reach {[r.name for r in replicas]}")

    def _register(self, port: int | None = None) -> None:
        assert self.balancer is not None and self.webhook_ca is not None
        [config] = [
            d for d in self.manifest_objects() if d["kind"] == "MutatingWebhookConfiguration"
        ]
        ca_bundle = base64.b64encode(self.webhook_ca.cert_pem).decode()
        for hook in config["webhooks"]:
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port or self.balancer.port}/mutate",
                "caBundle": ca_bundle,
            }
            hook["failurePolicy"] = self.failure_policy
        config["metadata"].pop("annotations", None)
        self.controlplane.kubectl("apply", "-f", "-", input=json.dumps(config))

    # -- helpers for tests -------------------------------------------------------

    def gar_tenant_service_account(self, namespace: str, name: str, *, allowed: bool) -> str:
        """A ServiceAccount annotated with a Google service account that may read the seed
        repository; ``allowed``: its principal may impersonate it
        (``roles/iam.workloadIdentityUser``). Returns the Google account's email."""
        assert self.gcp is not None
        email = f"{name}-{namespace}"[:30].rstrip("-") + "@e2e-project.iam.gserviceaccount.com"
        account = self.gcp.iam.add_service_account(email)
        repository = "repository:" + "/".join(GAR_SEED_REPOSITORY.split("/")[:2])
        self.gcp.iam.grant(repository, "roles/artifactregistry.reader", account.member)
        if allowed:
            principal = self.gcp.iam.providers[self.gar_audience].principal(
                f"system:serviceaccount:{namespace}:{name}"
            )
            self.gcp.iam.grant(account.member, "roles/iam.workloadIdentityUser", principal)
        self.controlplane.kubectl("create", "serviceaccount", name, "-n", namespace)
        self.controlplane.kubectl(
            "annotate", "serviceaccount", name, "-n", namespace,
            f"iam.gke.io/gcp-service-account={email}",
        )  # fmt: skip
        return email

    def tenant_service_account(self, namespace: str, name: str) -> str:
        """A ServiceAccount with its own Entra app (federated with it, annotated as AKS
        workload identity does, AcrPull on the per-pod registry); returns the client id."""
        assert self.emulator is not None and self.acr_tenant is not None
        app = self.emulator.register_app(self.tenant)
        self.emulator.add_federated_credential(
            self.tenant,
            app.client_id,
            issuer=SERVICE_ACCOUNT_ISSUER,
            subject=f"system:serviceaccount:{namespace}:{name}",
        )
        self.acr_tenant.assign_role(app.object_id, "AcrPull")
        self.controlplane.kubectl("create", "serviceaccount", name, "-n", namespace)
        self.controlplane.kubectl(
            "annotate",
            "serviceaccount",
            name,
            "-n",
            namespace,
            f"azure.workload.identity/client-id={app.client_id}",
            f"azure.workload.identity/tenant-id={self.tenant}",
        )
        return app.client_id

    def labelled_namespace(self, name: str, *, inject: bool = True) -> str:
        self.controlplane.kubectl("create", "namespace", name)
        if inject:
            self.controlplane.kubectl("label", "namespace", name, f"{INJECT_LABEL}=enabled")
        self.controlplane.wait_for_service_account(name)
        return name

    @property
    def acr_image(self) -> str:
        assert self.acr is not None
        return f"{self.acr.login_server}/{SEED_REPOSITORY}:{SEED_TAG}"

    @property
    def gar_image(self) -> str:
        assert self.gar is not None
        return f"{self.gar.host}/{GAR_SEED_REPOSITORY}:{SEED_TAG}"

    @property
    def ecr_image(self) -> str:
        assert self.ecr_registry is not None
        return f"{self.ecr_registry.host}/{SEED_REPOSITORY}:{SEED_TAG}"

    def pull_with_secret(self, secret: dict[str, Any], image: str, workdir: Path) -> SkopeoResult:
        """skopeo reads the whole image using exactly the secret's .dockerconfigjson
        (over the emulator's TLS for the ACR login servers, plain HTTP for the ECR one)."""
        assert self.emulator is not None
        name = secret["metadata"]["name"]
        config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
        authfile = write_authfile(workdir / f"{name}.json", config)
        secure = not image.startswith(self.ecr_image.split("/")[0] + "/")
        try:
            result: SkopeoResult = asyncio.run(
                skopeo_copy_to_dir(
                    image,
                    authfile,
                    workdir / f"pulled-{name}-{time.monotonic_ns()}",
                    cert_dir=self.emulator.cert_dir if secure else None,
                    tls_verify=secure,
                )
            )
        finally:
            authfile.unlink()
        return result

    def webhook_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m webhook ARGS`` with the replicas' environment, config and identity."""
        assert self.config_path is not None and self.webhook_kubeconfig is not None
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "webhook",
                *args,
                "--config",
                str(self.config_path),
                "--kubeconfig",
                str(self.webhook_kubeconfig),
            ],
            cwd=REPO,
            env=self.webhook_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def as_webhook(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl with the webhook's real ServiceAccount token (not impersonation)."""
        assert self.webhook_kubeconfig is not None
        return subprocess.run(
            [
                str(self.controlplane.binaries.kubectl),
                "--kubeconfig",
                str(self.webhook_kubeconfig),
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def post_review(self, replica: Replica, review: dict[str, Any]) -> dict[str, Any]:
        """POST an AdmissionReview straight to one replica, as anything in the cluster
        network that can reach the Service could."""
        assert self.webhook_ca is not None
        context = ssl.create_default_context(cadata=self.webhook_ca.cert_pem.decode())
        request = urllib.request.Request(
            f"https://127.0.0.1:{replica.port}/mutate",
            data=json.dumps(review).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=30) as r:  # noqa: S310 (https, built above)
            answer: dict[str, Any] = json.loads(r.read())
        return answer

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.log_tail()}" for r in self.replicas)

    # -- tear-down ---------------------------------------------------------------

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.controlplane.kubectl(
                "delete",
                "mutatingwebhookconfiguration",
                WEBHOOK_CONFIGURATION,
                "--ignore-not-found",
                check=False,
            )
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.terminate()
        for replica in self.replicas:
            try:
                replica.process.wait(REPLICA_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
        if self.balancer is not None:
            self.balancer.stop()
        for registry in [*self.acr_backends, self.ecr_registry]:
            if registry is not None:
                registry.stop()
        if self.ecr_api is not None:
            self.ecr_api.stop()
        if self.moto is not None:
            self.moto.stop()
        if self.emulator_thread is not None:
            self.emulator_thread.stop()
        if self.gcp_thread is not None:
            self.gcp_thread.stop()
            self.gcp_thread = None


@contextlib.contextmanager
def running_stack(controlplane: ControlPlane, workdir: Path, **kwargs: Any) -> Iterator[Stack]:
    stack = Stack(controlplane, workdir, **kwargs).start()
    try:
        yield stack
    finally:
        stack.stop()
