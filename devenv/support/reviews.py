"""Builders of realistic AdmissionReview requests (shaped like the API server's)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

POD_GVK = {"group": "", "version": "v1", "kind": "Pod"}
POD_GVR = {"group": "", "version": "v1", "resource": "pods"}


def make_pod(
    *images: str,
    init_images: tuple[str, ...] = (),
    ephemeral_images: tuple[str, ...] = (),
    pull_secrets: list[dict[str, Any]] | None = None,
    name: str | None = None,
    generate_name: str | None = None,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if name:
        meta["name"] = name
    if generate_name:
        meta["generateName"] = generate_name
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    spec: dict[str, Any] = {
        "containers": [
            {"name": f"c{i}", "image": img, "resources": {}} for i, img in enumerate(images)
        ],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
    }
    if init_images:
        spec["initContainers"] = [
            {"name": f"init{i}", "image": img} for i, img in enumerate(init_images)
        ]
    if ephemeral_images:
        spec["ephemeralContainers"] = [
            {"name": f"debug{i}", "image": img} for i, img in enumerate(ephemeral_images)
        ]
    if pull_secrets is not None:
        spec["imagePullSecrets"] = copy.deepcopy(pull_secrets)
    if service_account:
        spec["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def make_review(
    pod: dict[str, Any] | None,
    *,
    namespace: str = "team-a",
    operation: str = "CREATE",
    sub_resource: str | None = None,
    kind: dict[str, str] | None = None,
    resource: dict[str, str] | None = None,
    dry_run: bool = False,
    uid: str | None = None,
    api_version: str = "admission.k8s.io/v1",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": kind or POD_GVK,
        "resource": resource or POD_GVR,
        "requestKind": kind or POD_GVK,
        "requestResource": resource or POD_GVR,
        "operation": operation,
        "namespace": namespace,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod,
        "oldObject": None,
        "dryRun": dry_run,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    name = (pod or {}).get("metadata", {}).get("name")
    if name:
        request["name"] = name
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}
