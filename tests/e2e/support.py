"""Helpers shared by the end-to-end tests: polling, names, manifests, reads as admin."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from devenv.controlplane import ControlPlane
from devenv.peers.acr import AcrRegistry
from webhook.pullsecrets.secret import MANAGED_SELECTOR

RECORDS = "managedpullsecrets.pull-secret-webhook.io"
WEBHOOK_NAMESPACE = "pull-secret-webhook"


@contextmanager
def refused(registry: AcrRegistry, principal: str) -> Iterator[None]:
    """``registry`` grants ``principal`` no role inside the block, whatever tests before
    granted it on the session's shared emulator (test_webhook_e2e grants AcrPull on
    acr-denied to show recovery); the roles it had are given back after."""
    had = set(registry.role_assignments.get(principal, set()))
    registry.remove_role(principal)
    try:
        yield
    finally:
        for role in had:
            registry.assign_role(principal, role)


def ns_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod_manifest(name: str, *images: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": f"c{i}", "image": img} for i, img in enumerate(images)]},
    }


def get_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl("get", *args, "-o", "json").stdout)


def managed_secrets(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cp, "secrets", "-n", namespace, "-l", MANAGED_SELECTOR)[
        "items"
    ]
    return items


def admission_results(metrics: str) -> dict[str, float]:
    """The admissions counter of one replica's /metrics, by result."""
    prefix = 'pull_secret_webhook_admissions_total{result="'
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith(prefix):
            label, _, value = line[len(prefix) :].partition('"} ')
            out[label] = float(value)
    return out


def pull_secret_names(pod: dict[str, Any]) -> list[str]:
    return [r["name"] for r in pod["spec"].get("imagePullSecrets") or []]


def record_of(cp: ControlPlane, namespace: str, secret: str) -> dict[str, Any]:
    """The webhook's ManagedPullSecret record of a Secret (empty when there is none)."""
    proc = cp.kubectl(
        "get",
        RECORDS,
        f"{namespace}.{secret}",
        "-n",
        WEBHOOK_NAMESPACE,
        "-o",
        "json",
        "--ignore-not-found",
    )
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def secret_name_preview(cp: ControlPlane, namespace: str, image: str) -> str:
    """The pull secret name the webhook would give a pod with ``image``, as anyone who
    may create pods there can learn it: a server-side dry run (which writes nothing)."""
    preview = json.loads(
        cp.kubectl(
            "apply",
            "-n",
            namespace,
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(pod_manifest("p", image)),
        ).stdout
    )
    [name] = pull_secret_names(preview)
    return name


def delete_install(cp: ControlPlane, kustomization: Path) -> None:
    """``kubectl delete -k`` of an install, but for its CustomResourceDefinitions: they
    are cluster-wide and shared with the other installs of the session (deleting one
    deletes every install's records), as with any operator's CRDs."""
    rendered = yaml.safe_load_all(cp.kubectl("kustomize", str(kustomization)).stdout)
    mine = [o for o in rendered if o and o.get("kind") != "CustomResourceDefinition"]
    cp.kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump_all(mine), check=False)


def as_webhook_api(
    cp: ControlPlane,
    kubeconfig: Path,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    """One request straight to the API server with the webhook's real ServiceAccount token
    (read from its kubeconfig; no client certificate, so the token alone authenticates).
    Unlike ``kubectl label`` or ``edit``, which read first and are stopped by RBAC, a direct
    PUT or PATCH reaches admission, and so the write policy."""
    import http.client
    import ssl

    [user] = yaml.safe_load(kubeconfig.read_text())["users"]
    token = user["user"]["token"]
    server = cp.server.removeprefix("https://")
    host, _, port = server.partition(":")
    context = ssl.create_default_context(cafile=str(cp.ca_cert))
    conn = http.client.HTTPSConnection(host, int(port or 443), context=context, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    payload = None if body is None else json.dumps(body).encode()
    if payload is not None:
        headers["Content-Type"] = content_type
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return response.status, parsed


def refused_by_policy(status: int, body: Any, policy: str = "pull-secret-webhook") -> bool:
    """Was the request refused by one of the webhook's ValidatingAdmissionPolicies (so it
    passed RBAC and reached admission)? The API server names the policy in its message."""
    message = body.get("message", "") if isinstance(body, dict) else str(body)
    return status in (403, 422) and f"ValidatingAdmissionPolicy '{policy}" in message
