"""What the docs tell operators to paste works: every config example is valid, the
install overlay builds with the identity guides' patches, the Helm values example renders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docs import (
    assert_bound_to_the_rendered_identity,
    block_after,
    write_install_overlay,
    yaml_blocks,
)
from tests.support.manifests import REPO, helm_template, kustomize, one
from webhook.config.load import parse_config

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "certs" / "README.md"]


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


def patches_in(guide: str) -> list[Any]:
    patches: list[Any] = yaml.safe_load(block_after(REPO / "docs" / guide, "patches:"))["patches"]
    return patches


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
