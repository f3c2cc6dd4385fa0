"""What the docs tell operators to paste works: every config example is valid, the
install overlay builds with the identity guides' patches, the Helm values example renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_manifests_render import REPO, helm_template, kustomize, one
from webhook.config import parse_config

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


def test_the_install_overlay_builds_with_the_workload_identity_patches(tmp_path: Path) -> None:
    (tmp_path / "pull-secret-webhook").symlink_to(REPO)
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    kustomization = yaml.safe_load(block_after(REPO / "docs" / "install.md", "configMapGenerator"))
    patches = yaml.safe_load(block_after(REPO / "docs" / "azure-workload-identity.md", "patches:"))[
        "patches"
    ]
    kustomization["patches"] = patches
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    config = block_after(REPO / "docs" / "azure-workload-identity.md", "mode: workloadIdentity")
    (overlay / "config.yaml").write_text(config)

    objs = kustomize(overlay)

    sa = one(objs, "ServiceAccount", "pull-secret-webhook")
    assert "azure.workload.identity/client-id" in sa["metadata"]["annotations"]
    deployment = one(objs, "Deployment", "pull-secret-webhook")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["spec"]["containers"][0]["image"].startswith("myregistry.example.com/")
    cm = one(objs, "ConfigMap", "pull-secret-webhook-config")
    assert [e.name for e in parse_config(yaml.safe_load(cm["data"]["config.yaml"])).registries] == [
        "contoso"
    ]


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
