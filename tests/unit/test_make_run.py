"""`make run ARGS="--no-playground ..."` runs only the webhook against an existing cluster:
it must not install system packages or build a control plane and node (it would as root,
for minutes, for nothing)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.manifests import REPO

HEAVY = ("install-system-deps.sh", "devenv.controlplane build", "devenv.node build")


def planned(args: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # -n: print what would run, run nothing.
    return subprocess.run(
        [make, "-n", "run", f"ARGS={args}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def test_the_webhook_alone_installs_and_builds_nothing() -> None:
    out = planned("--no-playground --config my-config.yaml")

    assert "devenv.playground --no-playground --config my-config.yaml" in out
    assert not [step for step in HEAVY if step in out]


def test_the_playground_still_prepares_its_cluster() -> None:
    out = planned("")

    assert all(step in out for step in HEAVY)
