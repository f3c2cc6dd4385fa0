"""Every kustomize and Helm snippet of the README and docs/, rendered exactly as shown.

Each kustomization fragment is added to docs/install.md's overlay ("Your overlay", beside a
copy of the project, with its follow-renames.yaml) the way the docs say to add it; each
Helm values fragment is rendered as a values file. Whatever the snippet, the invariants
that protect the cluster must hold in what it renders:

- the write policies (ValidatingAdmissionPolicy) name the ServiceAccount the webhook's
  pods run as, and every grant is bound to it;
- every container runs the documented image;
- no NetworkPolicy rule for the webhook port admits every source (an empty or absent
  ``from``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.charts import assert_everything_names_the_rendered_account
from tests.support.docs import (
    assert_bound_to_the_rendered_identity,
    block_after,
    write_install_overlay,
    yaml_blocks,
)
from tests.support.manifests import CHART, REPO, Obj, helm_template, kustomize

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INSTALL_MD = REPO / "docs" / "install.md"
#: Keys that make a yaml block a kustomization (or a fragment of one).
KUSTOMIZATION_KEYS = {
    "resources", "components", "patches", "replacements", "namespace", "namePrefix",
    "nameSuffix", "images", "configMapGenerator",
}  # fmt: skip
#: Lists a fragment adds to the overlay's; any other key replaces the overlay's value.
APPENDED = ("components", "patches", "replacements")
VALUES_KEYS = set(yaml.safe_load((CHART / "values.yaml").read_text()))
#: The image "Your overlay" runs (its images: entry) and the chart's default.
OVERLAY_IMAGE = "myregistry.example.com/pull-secret-webhook:0.1.0"
CHART_IMAGE = "ghcr.io/example-org/pull-secret-webhook:0.1.0"


def snippets() -> tuple[list[Any], list[Any]]:
    kustomizations, values = [], []
    for path in DOCS:
        for line, block in yaml_blocks(path):
            try:
                doc = yaml.safe_load(block)
            except yaml.YAMLError:
                continue  # several documents (other projects' objects), not ours to render
            if not isinstance(doc, dict) or doc.get("kind", "Kustomization") != "Kustomization":
                continue
            where = f"{path.name}:{line}"
            if set(doc) & KUSTOMIZATION_KEYS:
                if any("://" in str(r) for r in doc.get("resources", [])):
                    continue  # a remote base: tests/unit/test_docs_overlay_images.py
                kustomizations.append(pytest.param(doc, id=where))
            elif set(doc) <= VALUES_KEYS:
                values.append(pytest.param(block, id=where))
    return kustomizations, values


KUSTOMIZATIONS, VALUES = snippets()


def test_the_docs_have_snippets_of_both_kinds() -> None:
    # A guard against the extraction silently finding nothing (10 and 6 when written).
    assert len(KUSTOMIZATIONS) >= 10 and len(VALUES) >= 5


def pod_spec(obj: Obj) -> dict[str, Any] | None:
    spec: dict[str, Any] = obj.get("spec", {})
    if obj["kind"] in {"Deployment", "Job"}:
        return dict(spec["template"]["spec"])
    if obj["kind"] == "CronJob":
        return dict(spec["jobTemplate"]["spec"]["template"]["spec"])
    return spec if obj["kind"] == "Pod" else None


def images(objs: list[Obj]) -> set[str]:
    found = set()
    for obj in objs:
        pod = pod_spec(obj)
        if pod is not None:
            found |= {c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]}
    return found


def assert_no_open_network_policy(objs: list[Obj], webhook_port: int) -> None:
    for policy in (o for o in objs if o["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if webhook_port in ports:
                assert rule.get("from"), (policy["metadata"]["name"], rule)


@pytest.mark.parametrize("fragment", KUSTOMIZATIONS)
def test_each_kustomize_snippet_renders_with_the_cluster_protected(
    tmp_path: Path, fragment: dict[str, Any]
) -> None:
    base = yaml.safe_load(block_after(INSTALL_MD, "configMapGenerator"))
    overlay = write_install_overlay(tmp_path)
    if fragment.get("kind") == "Kustomization":  # a whole overlay: rendered as it is
        text = yaml.safe_dump(fragment)
    else:  # additions to "Your overlay", lists extended as the docs say
        additions = dict(fragment)
        for key in APPENDED:
            if key in additions:
                kept = base.get(key) or []
                additions[key] = [*kept, *[x for x in additions[key] if x not in kept]]
        text = yaml.safe_dump({**base, **additions})
    (overlay / "kustomization.yaml").write_text(text)

    objs = kustomize(overlay)

    assert_bound_to_the_rendered_identity(objs)
    assert images(objs) == {OVERLAY_IMAGE}
    [deployment] = [o for o in objs if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    webhook_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "https")
    assert_no_open_network_policy(objs, webhook_port)


@pytest.mark.parametrize("block", VALUES)
def test_each_helm_values_snippet_renders_with_the_cluster_protected(
    tmp_path: Path, block: str
) -> None:
    values = tmp_path / "my-values.yaml"
    values.write_text(block)

    objs = helm_template("-f", str(values))

    assert_everything_names_the_rendered_account(objs)
    assert images(objs) == {CHART_IMAGE}
    port = yaml.safe_load(block).get("webhook", {}).get("port", 8443)
    assert_no_open_network_policy(objs, port)
