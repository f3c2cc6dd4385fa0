"""An install from a checkout or a git ref runs the image its overlay names, in every pod.

The repository's manifests name a placeholder image (``ghcr.io/example-org/…``, which no
registry serves); only the release's install.yaml names a real one
(tests/unit/test_release_artifacts.py). So every overlay the README and docs/install.md
show for a checkout or a remote base carries the ``images:`` entry, says it is required,
and, rendered exactly as written, names that image in every workload: the webhook's
Deployment and the certificate renewal CronJob alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docs import yaml_blocks
from tests.support.manifests import REPO, kustomize
from tests.support.release import images

PLACEHOLDER = "ghcr.io/example-org/pull-secret-webhook"
#: The remote base a `?ref=` overlay names: rendered from this checkout (no network here).
REMOTE_BASE = "https://github.com/example-org/pull-secret-webhook//manifests?ref="


def overlays() -> list[Any]:
    """Every documented kustomization that builds on the repository's manifests."""
    found = []
    for path in (REPO / "README.md", REPO / "docs" / "install.md"):
        for line, block in yaml_blocks(path):
            doc = yaml.safe_load(block)
            if not isinstance(doc, dict) or doc.get("kind") != "Kustomization":
                continue
            if any(
                str(r).endswith("manifests") or REMOTE_BASE in str(r)
                for r in doc.get("resources", [])
            ):
                found.append(pytest.param(block, doc, id=f"{path.name}:{line}"))
    return found


def test_the_docs_show_overlays_for_a_checkout_and_a_git_ref() -> None:
    ids = [p.values[1]["resources"][0] for p in overlays()]
    assert any(REMOTE_BASE in r for r in ids) and any(r.startswith("../") for r in ids), ids


def test_the_repository_manifests_alone_name_the_placeholder_in_every_workload() -> None:
    """Why the entry is required: without it every pod would pull the placeholder."""
    found = {i.rsplit(":", 1)[0] for o in kustomize() for i in images(o)}
    assert found == {PLACEHOLDER}


@pytest.mark.parametrize(("block", "doc"), overlays())
def test_each_documented_overlay_names_its_image_in_every_workload(
    tmp_path: Path, block: str, doc: dict[str, Any]
) -> None:
    assert "required" in block.split("images:", 1)[1].split("newName")[0], (
        "the docs must say the images entry is required"
    )
    [entry] = doc["images"]
    assert entry["name"] == PLACEHOLDER
    (tmp_path / "pull-secret-webhook").symlink_to(REPO)
    overlay = tmp_path / "my-install"
    overlay.mkdir()
    text = block
    for resource in doc["resources"]:
        if REMOTE_BASE in resource:  # the same tree, from this checkout
            text = text.replace(resource, "../pull-secret-webhook/manifests")
    (overlay / "kustomization.yaml").write_text(text)
    # `cp pull-secret-webhook/manifests/base/config.yaml my-install/config.yaml` (README)
    (overlay / "config.yaml").write_text((REPO / "manifests" / "base" / "config.yaml").read_text())
    # `cp pull-secret-webhook/manifests/follow-renames.yaml my-install/`, where it is listed
    for copied in ("follow-renames.yaml", "follow-renames-cert-manager.yaml"):
        if f"path: {copied}" in block:
            (overlay / copied).write_text((REPO / "manifests" / copied).read_text())

    objs = kustomize(overlay)

    found = [(o["kind"], i) for o in objs for i in images(o)]
    assert {kind for kind, _ in found} == {"Deployment", "CronJob"}
    assert {i for _, i in found} == {f"{entry['newName']}:{entry['newTag']}"}
