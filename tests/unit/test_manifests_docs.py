"""What the docs tell operators to paste works: every config example is valid, the
install overlay builds with the identity guides' patches, the Helm values example renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_manifests_render import REPO, helm_template, kustomize, one
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
    """docs/install.md's overlay beside a checkout, as the docs lay it out."""
    (tmp_path / "pull-secret-webhook").symlink_to(REPO)
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    kustomization = yaml.safe_load(block_after(REPO / "docs" / "install.md", "configMapGenerator"))
    kustomization.update(extra or {})
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    config = block_after(REPO / "docs" / "azure-workload-identity.md", "mode: workloadIdentity")
    (overlay / "config.yaml").write_text(config)
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


def test_the_namespace_overlay_leaves_no_reference_to_the_default_namespace(
    tmp_path: Path,
) -> None:
    block = yaml.safe_load(block_after(REPO / "docs" / "install.md", "replacements:"))
    overlay = write_install_overlay(
        tmp_path,
        {
            **block,
            "components": [
                "../pull-secret-webhook/manifests/components/cert-manager",
                "../pull-secret-webhook/manifests/components/pod-identity",
            ],
        },
    )

    text = yaml.safe_dump_all(kustomize(overlay))
    objs = kustomize(overlay)

    namespace = block["namespace"]
    assert {o["metadata"].get("namespace", namespace) for o in objs} == {namespace}
    hook = one(objs, "MutatingWebhookConfiguration", "pull-secret-webhook")
    [excluded] = [
        e["values"]
        for e in hook["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded == ["kube-system", namespace]
    assert hook["webhooks"][0]["clientConfig"]["service"]["namespace"] == namespace
    assert hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{namespace}/pull-secret-webhook-serving"
    )
    serving = one(objs, "Certificate", "pull-secret-webhook-serving")
    assert serving["spec"]["dnsNames"] == pki.service_dns_names("pull-secret-webhook", namespace)
    # The write policies are bound to the webhook's ServiceAccount in its new namespace.
    policies = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    assert policies
    for policy in policies:
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == (
            f"request.userInfo.username == 'system:serviceaccount:{namespace}:pull-secret-webhook'"
        )
    # Nothing else names the default namespace (labels and names say pull-secret-webhook
    # too, so look for it where a namespace would be written).
    assert ".pull-secret-webhook.svc" not in text
    assert "pull-secret-webhook/pull-secret-webhook" not in text
    assert "namespace: pull-secret-webhook" not in text


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
    # "cp pull-secret-webhook/manifests/base/config.yaml my-install/config.yaml"
    (overlay / "config.yaml").write_text((REPO / "manifests" / "base" / "config.yaml").read_text())

    objs = kustomize(overlay)

    [c] = one(objs, "Deployment", "pull-secret-webhook")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "myregistry.example.com/pull-secret-webhook:0.1.0"
    [cm] = [o for o in objs if o["kind"] == "ConfigMap"]
    assert parse_config(yaml.safe_load(cm["data"]["config.yaml"])).registries


def test_the_renamed_install_renews_its_own_service_and_registration(tmp_path: Path) -> None:
    renewal = "pull-secret-webhook-certs-renewal"
    block = yaml.safe_load(block_after(REPO / "docs" / "install.md", f"name: {renewal}}}"))
    overlay = write_install_overlay(
        tmp_path, {"namespace": "tools", "namePrefix": "team-", **block}
    )

    objs = kustomize(overlay)

    service = one(objs, "Service", "team-pull-secret-webhook")["metadata"]
    registration = one(objs, "MutatingWebhookConfiguration", "team-pull-secret-webhook")
    cron = one(objs, "CronJob", f"team-{renewal}")
    [c] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = {a.split("=")[0]: a.split("=")[1] for a in c["args"][1:]}
    assert args["--service"] == service["name"]
    assert args["--webhook-config"] == registration["metadata"]["name"]
    assert args["--namespace"] == "$(POD_NAMESPACE)" and cron["metadata"]["namespace"] == "tools"
    [rule] = one(objs, "ClusterRole", f"team-{renewal}")["rules"]
    assert rule["resourceNames"] == [registration["metadata"]["name"]]
    # The Secrets keep their names (no kustomize object renames them): the Deployment
    # mounts, and the renewal may write, the same two.
    [secrets] = one(objs, "Role", f"team-{renewal}")["rules"]
    volumes = one(objs, "Deployment", "team-pull-secret-webhook")["spec"]["template"]["spec"]
    mounted = {
        src["secret"]["name"]
        for v in volumes["volumes"]
        for src in v.get("projected", {}).get("sources", [])
        if "secret" in src
    }
    assert mounted == {args["--secret"]}
    assert secrets["resourceNames"] == [args["--secret"], f"{args['--secret']}-ca"]
