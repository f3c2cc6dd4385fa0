"""The GitHub workflows: every action pinned by commit, the release gated on the tests and
built only by the release script.

A tag such as ``@v4`` is a pointer its owner (or whoever takes over the account) can move
to any commit, and the release job holds ``id-token: write`` and ``packages: write``: a
moved tag would run foreign code with the right to sign and publish as this project. A full
commit SHA cannot be moved; the version it stands for is kept in a comment for readers and
for Dependabot (.github/dependabot.yml), which updates both together.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
# owner/repo[/path]@<40 hex> # vX.Y.Z (the comment Dependabot keeps in step with the SHA)
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")


def load(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def uses_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, the action reference, the whole line) of each ``uses:``."""
    found = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.match(r"^\s*(?:-\s+)?uses:\s*([^\s#]+)", line)
        if match:
            found.append((number, match.group(1).strip("'\""), line))
    return found


def test_there_are_workflows_to_check() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yaml", "release.yaml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_full_commit_sha_with_its_version_in_a_comment(
    path: Path,
) -> None:
    refs = uses_lines(path)
    assert refs, f"{path.name} uses no action: the check would prove nothing"
    for number, ref, line in refs:
        if ref.startswith("./"):
            continue  # a workflow of this repository, at the same commit
        assert PINNED.match(ref), (
            f"{path.name}:{number}: {ref} is not pinned by a full commit SHA "
            "(owner/repo@<40 hex> # vX.Y.Z)"
        )
        assert VERSION_COMMENT.search(line), f"{path.name}:{number}: no `# vX.Y.Z` after {ref}"


def test_the_pin_check_refuses_a_tag_a_branch_and_a_short_sha() -> None:
    for ref in ("actions/checkout@v4", "actions/checkout@main", "actions/checkout@34e1148"):
        assert not PINNED.match(ref), ref
    assert PINNED.match("actions/checkout@34e114876b0b11c390a56381ad16ebd13914f8d5")
    assert PINNED.match(
        "anchore/sbom-action/download-syft@e22c389904149dbc22b58101806040fa8d37a610"
    )


def test_the_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for _, ref, line in uses_lines(path):
            if not ref.startswith("./"):
                action, sha = ref.split("@")
                pins.setdefault(action, set()).add(f"{sha} {line.split('#')[-1].strip()}")
    assert {a: s for a, s in pins.items() if len(s) > 1} == {}


def test_the_release_runs_only_after_the_test_workflow_passes() -> None:
    release = load(REPO / ".github" / "workflows" / "release.yaml")
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yaml"
    publishing = [name for name, job in jobs.items() if name != "test"]
    assert publishing
    for name in publishing:
        needs = jobs[name].get("needs")
        assert "test" in ([needs] if isinstance(needs, str) else needs or []), name
    ci = load(REPO / ".github" / "workflows" / "ci.yaml")
    # PyYAML reads the key `on` as True.
    assert "workflow_call" in ci[True]
    assert "make test" in "\n".join(s.get("run", "") for s in ci["jobs"]["test"]["steps"])


def test_the_release_builds_its_artifacts_only_with_the_release_script() -> None:
    """What the tests install is what the release publishes: the workflow neither renders
    nor packages nor edits anything itself."""
    release = load(REPO / ".github" / "workflows" / "release.yaml")
    runs = "\n".join(
        step.get("run", "") for job in release["jobs"].values() for step in job.get("steps", [])
    )
    assert "make release-artifacts" in runs
    for forbidden in ("kubectl kustomize", "helm package", "sed -i", "buildah bud", "docker build"):
        assert forbidden not in runs, forbidden


def test_dependabot_keeps_the_actions_and_the_python_dependencies_current() -> None:
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u["directory"] for u in config["updates"]}
    assert ecosystems == {"github-actions": "/", "pip": "/"}


def test_the_dockerfile_base_is_pinned_by_digest() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    [default] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert re.fullmatch(r"docker\.io/library/python:[\w.-]+@sha256:[0-9a-f]{64}", default)
