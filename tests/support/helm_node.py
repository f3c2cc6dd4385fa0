"""The Helm chart on the real node: a control plane of its own with endpoint routing (the API
server calls a Service's endpoint), an ECR-style registry with moto's ECR API, the node
trusting it, the pinned helm, and `helm` runs against them. Module-scoped fixtures: each
test module that imports them gets its own."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.controlplane import Binaries, ControlPlane
from devenv.node.build import NodeBinaries
from devenv.node.harness import Node
from devenv.node.images import seed_image
from devenv.peers.aws import MotoServer, ThreadedMotoProxy, ecr_client
from devenv.peers.fixtures import require_binaries
from devenv.peers.oci import dockerconfigjson, skopeo_push, write_authfile
from devenv.peers.registry import (
    ECR_USERNAME,
    REGISTRY_BINARY,
    SEED_REPOSITORY,
    SEED_TAG,
    SKOPEO_BINARY,
    DockerRegistry,
)
from tests.support.manifests import helm_binary
from tests.support.node import require_image_tools

ECR_REGION = "us-east-1"


@dataclass(frozen=True)
class Registry:
    """An ECR-style registry (basic auth) whose password moto's ECR API hands out, through
    the proxy that dates ECR tokens as ECR does (moto's are dated 2015)."""

    ecr_api: ThreadedMotoProxy
    registry: DockerRegistry

    @property
    def image(self) -> str:
        return f"{self.registry.host}/{SEED_REPOSITORY}:{SEED_TAG}"


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    workdir = tmp_path_factory.mktemp("registry")
    with MotoServer() as moto:
        token = ecr_client(moto.endpoint_url, ECR_REGION).get_authorization_token()
        user, password = (
            base64.b64decode(token["authorizationData"][0]["authorizationToken"])
            .decode()
            .split(":", 1)
        )
        assert user == ECR_USERNAME
        ecr_api = ThreadedMotoProxy(moto.endpoint_url)
        ecr_api.start()
        registry = DockerRegistry.htpasswd_auth(workdir / "ecr", {ECR_USERNAME: password})
        registry.start()
        try:
            auth = write_authfile(
                workdir / "push.json", dockerconfigjson(registry.host, user, password)
            )
            image = seed_image(workdir / "image", SEED_TAG)
            target = f"{registry.host}/{SEED_REPOSITORY}:{SEED_TAG}"
            pushed = asyncio.run(skopeo_push(image, target, auth, tls_verify=False))
            auth.unlink()
            assert pushed.ok, pushed.stderr
            yield Registry(ecr_api, registry)
        finally:
            registry.stop()
            ecr_api.stop()


def run_helm(helm: Path, cp: ControlPlane, workdir: Path, *args: str) -> str:
    env = {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        # Nothing of the user's helm repositories, plugins or registry logins.
        "HELM_CACHE_HOME": str(workdir / "cache"),
        "HELM_CONFIG_HOME": str(workdir / "config"),
        "HELM_DATA_HOME": str(workdir / "data"),
    }
    proc = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


@pytest.fixture(scope="module")
def controlplane(controlplane_binaries: Binaries) -> Iterator[ControlPlane]:
    """Endpoint routing: the API server dials the Service's ready endpoint (the webhook
    pod's host address) instead of the ClusterIP, which nothing here routes."""
    with ControlPlane(
        controlplane_binaries, extra_apiserver_args=["--enable-aggregator-routing=true"]
    ) as cp:
        yield cp


@pytest.fixture(scope="module")
def node(
    controlplane: ControlPlane, node_binaries: NodeBinaries, registry: Registry
) -> Iterator[Node]:
    require_image_tools()
    with Node(controlplane, node_binaries) as running:
        running.trust_registry(registry.registry.host, ca=None)
        yield running
    assert running.cleanup_problems == []


def registry_config(registry: Registry) -> dict[str, Any]:
    """The webhook's config: one ECR entry for the module's registry and moto's ECR API."""
    return {
        "registries": [
            {
                "name": "ecr",
                "kind": "ecr",
                "hosts": [registry.registry.host],
                "region": ECR_REGION,
                "endpointUrl": registry.ecr_api.endpoint_url,
                "stsEndpointUrl": registry.ecr_api.endpoint_url,
            }
        ]
    }


def api_env(cp: ControlPlane) -> list[dict[str, str]]:
    """The in-cluster client reads these; the kubelet's values name an unrouted ClusterIP."""
    return [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(cp.ports.apiserver)},
    ]


def local_node_values(
    cp: ControlPlane, registry: Registry, service: str, https_port: int, health_port: int
) -> dict[str, Any]:
    """What hack/local-node-values.yaml leaves to the run (its header says why), for the
    release whose webhook Service is ``service`` (NAME.NAMESPACE.svc)."""
    return {
        "webhook": {"port": https_port, "healthPort": health_port},
        # moto's documented test keys, for the ECR entry's default credential chain.
        "extraEnv": [
            *api_env(cp),
            {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
            {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"},
        ],
        "hookPods": {
            "extraEnv": api_env(cp),
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": [service]}],
        },
        "test": {"url": f"https://{service}:{https_port}/mutate"},
        "config": registry_config(registry),
    }
