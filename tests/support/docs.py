"""The docs' yaml blocks as tests read them, and the install overlay they describe."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.support.manifests import REPO, Obj, one
from webhook.certs import pki

_BLOCK_RE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def yaml_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK_RE.finditer(text)]


def block_after(path: Path, marker: str) -> str:
    """The first yaml block whose text contains ``marker``."""
    for _, block in yaml_blocks(path):
        if marker in block:
            return block
    raise AssertionError(f"no yaml block with {marker!r} in {path.name}")


def write_install_overlay(tmp_path: Path, extra: dict[str, Any] | None = None) -> Path:
    """docs/install.md's overlay beside a copy of the project, as the docs lay it out
    (``cp pull-secret-webhook/manifests/follow-renames*.yaml my-install/`` included)."""
    shutil.copytree(REPO / "manifests", tmp_path / "pull-secret-webhook" / "manifests")
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    kustomization = yaml.safe_load(block_after(REPO / "docs" / "install.md", "configMapGenerator"))
    kustomization.update(extra or {})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    config = block_after(REPO / "docs" / "azure-workload-identity.md", "mode: workloadIdentity")
    (overlay / "config.yaml").write_text(config)
    for copied in ("follow-renames.yaml", "follow-renames-cert-manager.yaml"):
        shutil.copy(REPO / "manifests" / copied, overlay / copied)
    return overlay


def policy_username(policy: Obj) -> str:
    """The username the-webhook-itself condition compares with, as the API server would
    evaluate the expression's string literals and concatenations."""
    [condition] = policy["spec"]["matchConditions"]
    expression = condition["expression"]
    prefix = "request.userInfo.username == "
    assert expression.startswith(prefix), expression
    parts = [p.strip() for p in expression[len(prefix) :].split("+")]
    assert all(p.startswith("'") and p.endswith("'") and p.count("'") == 2 for p in parts), parts
    return "".join(p[1:-1] for p in parts)


def assert_bound_to_the_rendered_identity(objs: list[Obj]) -> None:
    """The invariants that protect the cluster, whatever the overlay renamed."""
    [deployment] = [o for o in objs if o["kind"] == "Deployment"]
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert one(objs, "ServiceAccount", account)["metadata"]["namespace"] == namespace
    username = f"system:serviceaccount:{namespace}:{account}"
    policies = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    assert policies
    for policy in policies:
        assert policy_username(policy) == username, policy["metadata"]["name"]
    bound = {
        o["spec"]["policyName"] for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    assert bound == {p["metadata"]["name"] for p in policies}
    for binding in (o for o in objs if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        for subject in binding["subjects"]:
            if subject["name"] == account or "certs-renewal" not in binding["metadata"]["name"]:
                assert (subject["name"], subject["namespace"]) == (account, namespace)
    [hook] = [o for o in objs if o["kind"] == "MutatingWebhookConfiguration"]
    service = hook["webhooks"][0]["clientConfig"]["service"]
    assert one(objs, "Service", service["name"])["metadata"]["namespace"] == service["namespace"]
    [excluded] = [
        e["values"]
        for e in hook["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded == ["kube-system", namespace]
    for cron in (o for o in objs if o["kind"] == "CronJob"):
        [c] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        args = dict(a.split("=", 1) for a in c["args"][1:])
        assert args["--service"] == service["name"]
        assert args["--webhook-config"] == hook["metadata"]["name"]
    for role in (
        o for o in objs if o["kind"] == "ClusterRole" and "certs-renewal" in o["metadata"]["name"]
    ):
        assert role["rules"][0]["resourceNames"] == [hook["metadata"]["name"]]
    for cert in (
        o for o in objs if o["kind"] == "Certificate" and o["metadata"]["name"].endswith("-serving")
    ):
        assert cert["spec"]["dnsNames"] == pki.service_dns_names(service["name"], namespace)
        assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{namespace}/{cert['metadata']['name']}"
        )
