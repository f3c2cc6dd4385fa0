"""What the docs tell operators to paste works: every config example is valid, the
install overlay builds with the identity guides' patches, the Helm values example renders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_manifests_render import REPO, Obj, helm_template, kustomize, one
from webhook import pki
from webhook.configload import parse_config

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "certs" / "README.md"]
_BLOCK_RE = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def yaml_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK_RE.finditer(text)]


def config_examples() -> list[Any]:
    """Blocks that are a whole config (``registries:``) or a list of registry entries."""
    params = []
    for path in DOCS:
        for line, block in yaml_blocks(path):
            try:
                docs = list(yaml.safe_load_all(block))
            except yaml.YAMLError:
                continue  # fragments such as kustomize patches with `…` placeholders
            for doc in docs:
                if isinstance(doc, dict) and "registries" in doc and "config" not in doc:
                    params.append(pytest.param(doc, id=f"{path.name}:{line}"))
                elif (
                    isinstance(doc, list)
                    and doc
                    and all(isinstance(e, dict) and "kind" in e for e in doc)
                ):
                    params.append(pytest.param({"registries": doc}, id=f"{path.name}:{line}"))
    return params


def test_the_docs_have_config_examples_to_check() -> None:
    # A guard against the extraction silently finding nothing (13 when written).
    assert len(config_examples()) >= 12


@pytest.mark.parametrize("document", config_examples())
def test_every_config_example_in_the_docs_is_valid(document: dict[str, Any]) -> None:
    parse_config(document, source="docs example")


def block_after(path: Path, marker: str) -> str:
    """The first yaml block whose text contains ``marker``."""
    for _, block in yaml_blocks(path):
        if marker in block:
            return block
    raise AssertionError(f"no yaml block with {marker!r} in {path.name}")


def patches_in(guide: str) -> list[Any]:
    patches: list[Any] = yaml.safe_load(block_after(REPO / "docs" / guide, "patches:"))["patches"]
    return patches


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


def test_the_install_overlay_with_two_guides_patches_keeps_both_annotations(
    tmp_path: Path,
) -> None:
    patches = patches_in("azure-workload-identity.md") + patches_in("aws-irsa.md")
    overlay = write_install_overlay(tmp_path, {"patches": patches})

    objs = kustomize(overlay)

    sa = one(objs, "ServiceAccount", "pull-secret-webhook")
    assert set(sa["metadata"]["annotations"]) == {
        "azure.workload.identity/client-id",
        "eks.amazonaws.com/role-arn",
    }
    deployment = one(objs, "Deployment", "pull-secret-webhook")
    template = deployment["spec"]["template"]
    # The patch adds its label; the selector labels stay.
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "pull-secret-webhook"
    assert template["spec"]["containers"][0]["image"] == (
        "myregistry.example.com/pull-secret-webhook:0.1.0"
    )
    [cm] = [o for o in objs if o["kind"] == "ConfigMap"]
    assert [e.name for e in parse_config(yaml.safe_load(cm["data"]["config.yaml"])).registries] == [
        "contoso"
    ]
    # The replaced config gets its own hashed name, and the Deployment follows it.
    mounted = {
        src["configMap"]["name"]
        for volume in template["spec"]["volumes"]
        for src in volume.get("projected", {}).get("sources", [])
        if "configMap" in src
    }
    assert mounted == {cm["metadata"]["name"]}


def test_a_config_change_in_the_overlay_renames_the_config_map(tmp_path: Path) -> None:
    overlay = write_install_overlay(tmp_path)
    before = [o for o in kustomize(overlay) if o["kind"] == "ConfigMap"]
    (overlay / "config.yaml").write_text(
        (overlay / "config.yaml").read_text() + "secretPrefix: other\n"
    )

    after = [o for o in kustomize(overlay) if o["kind"] == "ConfigMap"]

    assert before[0]["metadata"]["name"] != after[0]["metadata"]["name"]


def test_the_identity_guides_patch_with_strategic_merge_never_a_whole_map() -> None:
    # A JSON patch `add /metadata/annotations` replaces every annotation another guide's
    # patch added; strategic-merge patches (a partial object) merge.
    for guide in ("azure-workload-identity.md", "aws-irsa.md", "azure-managed-identity.md"):
        for patch in patches_in(guide):
            body = yaml.safe_load(patch["patch"])
            assert isinstance(body, dict) and body.get("kind"), (guide, patch)


RENAMES = yaml.safe_load(block_after(REPO / "docs" / "install.md", "namePrefix: team-"))
CERT_MANAGER_RENAMES = yaml.safe_load(
    block_after(REPO / "docs" / "install.md", "- path: follow-renames-cert-manager.yaml")
)


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


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="as-documented"),
        pytest.param({"namespace": "tools"}, id="namespace"),
        pytest.param(RENAMES, id="namespace-and-prefix"),
        pytest.param({**RENAMES, "nameSuffix": "-v2"}, id="prefix-and-suffix"),
        pytest.param(
            {**RENAMES, "components": ["../pull-secret-webhook/manifests/components/pod-identity"]},
            id="pod-identity",
        ),
        pytest.param({**RENAMES, **CERT_MANAGER_RENAMES}, id="cert-manager"),
        pytest.param(
            {
                **RENAMES,
                **CERT_MANAGER_RENAMES,
                "components": [
                    *CERT_MANAGER_RENAMES["components"],
                    "../pull-secret-webhook/manifests/components/pod-identity",
                    "../pull-secret-webhook/manifests/components/network-policy",
                    "../pull-secret-webhook/manifests/components/flow-schema",
                ],
            },
            id="every-component",
        ),
    ],
)
def test_a_renamed_or_moved_overlay_keeps_the_policies_bound_to_the_rendered_account(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    overlay = write_install_overlay(tmp_path, extra)

    objs = kustomize(overlay)

    assert_bound_to_the_rendered_identity(objs)
    namespace = extra.get("namespace", "pull-secret-webhook")
    assert {o["metadata"].get("namespace", namespace) for o in objs} == {namespace}
    if "namePrefix" in extra:
        assert one(
            objs, "ServiceAccount", "team-" + "pull-secret-webhook" + extra.get("nameSuffix", "")
        )


def test_the_overlay_without_follow_renames_would_leave_the_policy_naming_nobody(
    tmp_path: Path,
) -> None:
    # The guard above can fail: the same rename without the replacements desyncs.
    overlay = write_install_overlay(tmp_path, {**RENAMES, "replacements": []})

    with pytest.raises(AssertionError):
        assert_bound_to_the_rendered_identity(kustomize(overlay))


def test_the_helm_values_example_renders_a_valid_config(tmp_path: Path) -> None:
    values = tmp_path / "my-values.yaml"
    values.write_text(block_after(REPO / "docs" / "install.md", "podLabels:"))

    objs = helm_template("-f", str(values))

    cm = one(objs, "ConfigMap", "pull-secret-webhook-config")
    config = parse_config(yaml.safe_load(cm["data"]["config.yaml"]))
    assert [e.name for e in config.registries] == ["contoso", "aws"]
    sa = one(objs, "ServiceAccount", "pull-secret-webhook")
    assert set(sa["metadata"]["annotations"]) == {
        "azure.workload.identity/client-id",
        "eks.amazonaws.com/role-arn",
    }


def test_the_readme_overlay_builds_with_the_example_config(tmp_path: Path) -> None:
    (tmp_path / "pull-secret-webhook").symlink_to(REPO)
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        block_after(REPO / "README.md", "configMapGenerator")
    )
    # "cp pull-secret-webhook/manifests/base/config.yaml my-install/config.yaml" and
    # "cp pull-secret-webhook/manifests/follow-renames.yaml my-install/"
    (overlay / "config.yaml").write_text((REPO / "manifests" / "base" / "config.yaml").read_text())
    shutil.copy(REPO / "manifests" / "follow-renames.yaml", overlay / "follow-renames.yaml")

    objs = kustomize(overlay)

    [c] = one(objs, "Deployment", "pull-secret-webhook")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "myregistry.example.com/pull-secret-webhook:0.1.0"
    [cm] = [o for o in objs if o["kind"] == "ConfigMap"]
    assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).registries


def test_the_per_pod_identity_overlay_adds_the_token_grant_bound_to_the_webhook(
    tmp_path: Path,
) -> None:
    additions = yaml.safe_load(block_after(REPO / "docs" / "per-pod-identity.md", "components:"))
    overlay = write_install_overlay(tmp_path, {**RENAMES, **additions})

    objs = kustomize(overlay)

    assert_bound_to_the_rendered_identity(objs)
    one(objs, "ValidatingAdmissionPolicy", "team-pull-secret-webhook-tokens")
    one(objs, "ClusterRole", "team-pull-secret-webhook-pod-identity")


def test_your_own_issuer_signs_the_serving_certificate(tmp_path: Path) -> None:
    additions = yaml.safe_load(block_after(REPO / "docs" / "install.md", "with your issuer"))
    overlay = write_install_overlay(
        tmp_path,
        {**additions, "replacements": CERT_MANAGER_RENAMES["replacements"], "namespace": "tools"},
    )

    objs = kustomize(overlay)

    assert_bound_to_the_rendered_identity(objs)
    serving = one(objs, "Certificate", "pull-secret-webhook-serving")
    assert serving["spec"]["issuerRef"] == {
        "name": "private-ca",
        "kind": "AWSPCAClusterIssuer",
        "group": "awspca.cert-manager.io",
    }


def test_your_own_issuer_with_helm(tmp_path: Path) -> None:
    values = tmp_path / "my-values.yaml"
    values.write_text(block_after(REPO / "docs" / "install.md", "# my-values.yaml (additions)"))

    objs = helm_template("-f", str(values))

    serving = one(objs, "Certificate", "pull-secret-webhook-serving")
    assert serving["spec"]["issuerRef"]["kind"] == "AWSPCAClusterIssuer"
    assert not [o for o in objs if o["kind"] == "Issuer"]
