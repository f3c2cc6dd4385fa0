"""The review every benchmark sends: a realistic 10-container pod (~8 KB of JSON).

Shaped like what a Deployment's ReplicaSet controller sends through the API server:
a generated name, labels, env, resources, probes and volume mounts per container,
images from ACR, ECR and Docker Hub. Two registries of the config match, so the
answer is a two-secret JSONPatch.
"""

from __future__ import annotations

import json
from typing import Any

from devenv.support.configs import sample_config
from devenv.support.reviews import make_pod, make_review
from webhook.config.schema import Config

NAMESPACE = "team-a"
ACR = "contoso.azurecr.io"
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
IMAGES = (
    f"{ACR}/shop/frontend:2.14.1",
    f"{ACR}/shop/cart@sha256:{'a' * 64}",
    f"{ECR}/payments/api:v3.2.0",
    f"{ECR}/payments/worker:v3.2.0",
    f"{ACR}/shop/search:1.9",
    "docker.io/library/nginx:1.27",
    "quay.io/prometheus/node-exporter:v1.8.2",
    f"{ECR}/platform/envoy:1.31",
    "busybox",
    f"{ACR}/platform/otel-collector:0.110.0",
)


def _container(i: int, image: str) -> dict[str, Any]:
    return {
        "name": f"c{i}",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": 8080 + i, "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4317"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": 8080 + i, "scheme": "HTTP"},
            "periodSeconds": 10,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            {
                "name": "kube-api-access-x7k2p",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
    }


def pod() -> dict[str, Any]:
    doc = make_pod(*IMAGES, generate_name="shop-7c9d5b8f4-", namespace=NAMESPACE)
    doc["metadata"]["labels"] = {"app": "shop", "pod-template-hash": "7c9d5b8f4"}
    doc["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "shop-7c9d5b8f4",
            "uid": "0b3f6a3e-6f7c-4d0e-9a51-0d8f4f7e2c11",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = doc["spec"]
    spec["containers"] = [_container(i, image) for i, image in enumerate(IMAGES)]
    spec["volumes"] = [
        {"name": "config", "configMap": {"name": "shop-config", "defaultMode": 420}},
        {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": []}},
    ]
    spec.update(
        serviceAccountName="default",
        terminationGracePeriodSeconds=30,
        schedulerName="default-scheduler",
        enableServiceLinks=True,
        preemptionPolicy="PreemptLowerPriority",
        priority=0,
        securityContext={},
        tolerations=[
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
    )
    return doc


def review_body() -> bytes:
    return json.dumps(make_review(pod(), namespace=NAMESPACE)).encode()


def config() -> Config:
    return sample_config()
