"""Install the webhook's image as a Pod on the local node with ``kubectl apply -k``.

The kustomization written here builds on ``manifests/overlays/local-node`` (which says
why the local network needs host networking and a url clientConfig) and fills in what is
known only at run time: the image pushed to the node's registry, free ports, the API
server's address, the serving certificate's CA, and the stack's registry configuration
(with the emulator's CA, and the projected token that Azure workload identity's own
webhook would inject on AKS).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devenv.node.harness import Node
from devenv.node.image import build_image, push_image
from devenv.serve import free_port
from devenv.stack import NAMESPACE, REPO, Stack
from webhook.certs.pki import make_ca, make_serving_cert

OVERLAY = REPO / "manifests" / "overlays" / "local-node"
# The image the base Deployment names (manifests/base/deployment.yaml); `images:` renames it.
MANIFEST_IMAGE = "ghcr.io/example-org/pull-secret-webhook"
DEPLOYMENT = "pull-secret-webhook"
TLS_SECRET = "pull-secret-webhook-tls"
CONFIG_DIR = "/etc/pull-secret-webhook"
# Where AKS's workload identity webhook mounts the federated token (azure-workload-identity
# docs, "Quick start"), with the audience Entra ID expects.
AZURE_TOKEN_DIR = "/var/run/secrets/azure/tokens"
AZURE_AUDIENCE = "api://AzureADTokenExchange"
READY_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class WebhookPod:
    image: str
    https_port: int
    health_port: int
    pod_name: str

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/metrics"


def _json6902(*ops: dict[str, Any]) -> str:
    return yaml.safe_dump(list(ops))


def write_kustomization(
    stack: Stack, directory: Path, *, image: str, https_port: int, health_port: int
) -> Path:
    """The run-time kustomization over the local-node overlay; returns its directory."""
    assert stack.config_path is not None and stack.emulator is not None
    directory.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(stack.config_path.read_text())
    config["caFile"] = f"{CONFIG_DIR}/emulator-ca.crt"
    ca = make_ca("local-node-webhook-ca")
    serving = make_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    serving.write(directory / "tls.crt", directory / "tls.key")
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "emulator-ca.crt").write_bytes(stack.emulator.ca_path.read_bytes())
    name, _, tag = image.rpartition(":")
    api_port = stack.controlplane.ports.apiserver
    container = "/spec/template/spec/containers/0"
    probe = {"path": "/healthz", "port": health_port, "host": "127.0.0.1"}
    deployment_ops: list[dict[str, Any]] = [
        {
            "op": "replace",
            "path": f"{container}/args",
            "value": [
                "serve",
                f"--config={CONFIG_DIR}/config.yaml",
                f"--cert-file={CONFIG_DIR}/tls/tls.crt",
                f"--key-file={CONFIG_DIR}/tls/tls.key",
                # Host network: listen on loopback only, on ports free on this machine.
                "--bind=127.0.0.1",
                f"--port={https_port}",
                "--health-bind=127.0.0.1",
                f"--health-port={health_port}",
                "--log-level=debug",
                "--log-format=json",
                "--shutdown-delay=0",
            ],
        },
        {
            "op": "replace",
            "path": f"{container}/ports",
            "value": [
                {"name": "https", "containerPort": https_port, "protocol": "TCP"},
                {"name": "metrics", "containerPort": health_port, "protocol": "TCP"},
            ],
        },
        # The probes' default host is the pod IP; the webhook listens on loopback.
        {
            "op": "replace",
            "path": f"{container}/readinessProbe/httpGet",
            "value": {**probe, "path": "/readyz"},
        },
        {"op": "replace", "path": f"{container}/livenessProbe/httpGet", "value": probe},
        # No ClusterIP route (no kube-proxy): the in-cluster client goes to the API server's
        # loopback address (client libraries read these two variables).
        {
            "op": "add",
            "path": f"{container}/env/-",
            "value": {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        },
        {
            "op": "add",
            "path": f"{container}/env/-",
            "value": {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
        },
        # What AKS's workload identity webhook injects; EKS's would inject AWS variables,
        # here moto's test keys.
        {
            "op": "add",
            "path": f"{container}/env/-",
            "value": {
                "name": "AZURE_FEDERATED_TOKEN_FILE",
                "value": f"{AZURE_TOKEN_DIR}/azure-identity-token",
            },
        },
        {
            "op": "add",
            "path": f"{container}/env/-",
            "value": {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
        },
        {
            "op": "add",
            "path": f"{container}/env/-",
            "value": {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"},
        },
        {
            "op": "add",
            "path": f"{container}/volumeMounts/-",
            "value": {
                "name": "azure-identity-token",
                "mountPath": AZURE_TOKEN_DIR,
                "readOnly": True,
            },
        },
        {
            "op": "add",
            "path": "/spec/template/spec/volumes/-",
            "value": {
                "name": "azure-identity-token",
                "projected": {
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "path": "azure-identity-token",
                                "audience": AZURE_AUDIENCE,
                                "expirationSeconds": 3600,
                            }
                        }
                    ]
                },
            },
        },
        # The emulator's CA beside config.yaml (config caFile).
        {
            "op": "add",
            "path": "/spec/template/spec/volumes/0/projected/sources/0/configMap/items/-",
            "value": {"key": "emulator-ca.crt", "path": "emulator-ca.crt"},
        },
    ]
    webhook_ops = [
        {
            "op": "replace",
            "path": "/webhooks/0/clientConfig",
            "value": {
                "url": f"https://127.0.0.1:{https_port}/mutate",
                "caBundle": base64.b64encode(ca.cert_pem).decode(),
            },
        }
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, directory)],
        "images": [{"name": MANIFEST_IMAGE, "newName": name, "newTag": tag}],
        "configMapGenerator": [
            {
                "name": "pull-secret-webhook-config",
                "namespace": NAMESPACE,
                "behavior": "replace",
                "files": ["config.yaml", "emulator-ca.crt"],
            }
        ],
        "secretGenerator": [
            {
                "name": TLS_SECRET,
                "namespace": NAMESPACE,
                "type": "kubernetes.io/tls",
                "files": ["tls.crt", "tls.key"],
                "options": {"disableNameSuffixHash": True},
            }
        ],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": DEPLOYMENT},
                "patch": _json6902(*deployment_ops),
            },
            {
                "target": {"kind": "MutatingWebhookConfiguration"},
                "patch": _json6902(*webhook_ops),
            },
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def install_webhook_pod(stack: Stack, node: Node, workdir: Path) -> WebhookPod:
    """Build and push the image, ``kubectl apply -k``, wait for the pod to be Ready."""
    cp = stack.controlplane
    image = node.pause_image.rsplit("/", 1)[0] + "/pull-secret-webhook:dev"
    build_image()
    push_image(image)
    https_port, health_port = free_port(), free_port()
    directory = write_kustomization(
        stack, workdir, image=image, https_port=https_port, health_port=health_port
    )
    cp.kubectl("apply", "-k", str(directory))
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    selector = "app.kubernetes.io/name=pull-secret-webhook"
    while True:
        pods = json.loads(
            cp.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
        )["items"]
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]
        if ready:
            return WebhookPod(image, https_port, health_port, ready[0]["metadata"]["name"])
        if time.monotonic() > deadline:
            states = [(p["metadata"]["name"], p.get("status")) for p in pods]
            events = cp.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
            raise AssertionError(
                f"the webhook pod is not Ready: {json.dumps(states)[:3000]}\n{events[-3000:]}"
            )
        time.sleep(0.5)
