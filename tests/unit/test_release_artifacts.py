"""`make release-artifacts` (hack/release-artifacts.sh) writes what a release publishes, for
the owner it is given, and nothing of the repository's placeholder owner.

The image is left out here (SKIP_IMAGE=1: a render in seconds); tests/e2e/test_release_node.py
builds it with the rest and installs all of it on a real node.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support.manifests import (
    KUBE_VERSION,
    REPO,
    Obj,
    helm_binary,
    kubectl_binary,
    objects,
    run_tool,
)
from tests.support.release import (
    images,
)

SCRIPT = REPO / "hack" / "release-artifacts.sh"
OWNER = "acme"
VERSION = "0.2.0"
IMAGE = f"ghcr.io/{OWNER}/pull-secret-webhook:{VERSION}"
PLACEHOLDER = "example-org"
#: Two renders and a `helm lint`: seconds; the limit only guards against a hung tool.
SCRIPT_TIMEOUT_SECONDS = 120
#: Every chart value that adds a pod of the webhook's image (the renewal CronJob and the
#: certs hook Jobs are on by default; the test pod too).
ALL_PODS = ("--set", "test.enabled=true")


def run_script(out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    helm_binary()  # fails under CI, skips elsewhere, when helm is not built
    kubectl_binary()
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "OUT": str(out), **env},
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    proc = run_script(out, OWNER=OWNER, VERSION=VERSION, SKIP_IMAGE="1")
    assert proc.returncode == 0, proc.stderr
    return out


def chart_files(tgz: Path) -> dict[str, bytes]:
    with tarfile.open(tgz) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile()
        }


def template(tgz: Path, *args: str) -> list[Obj]:
    return objects(
        run_tool(
            [
                helm_binary(),
                "template",
                "pull-secret-webhook",
                tgz,
                "--namespace",
                "pull-secret-webhook",
                "--kube-version",
                KUBE_VERSION,
                *args,
            ]
        )
    )


def test_the_release_is_install_yaml_and_the_chart_package(artifacts: Path) -> None:
    assert sorted(p.name for p in artifacts.iterdir()) == [
        "install.yaml",
        f"pull-secret-webhook-{VERSION}.tgz",
    ]


def test_no_file_of_the_release_names_the_placeholder_owner(artifacts: Path) -> None:
    assert PLACEHOLDER.encode() not in (artifacts / "install.yaml").read_bytes()
    files = chart_files(artifacts / f"pull-secret-webhook-{VERSION}.tgz")
    assert "pull-secret-webhook/values.yaml" in files
    assert [name for name, content in files.items() if PLACEHOLDER.encode() in content] == []


def test_every_image_of_install_yaml_is_the_owners_including_the_renewal_cronjob(
    artifacts: Path,
) -> None:
    objs = objects((artifacts / "install.yaml").read_text())
    found = [(o["kind"], o["metadata"]["name"], i) for o in objs for i in images(o)]
    kinds = {kind for kind, _, _ in found}
    # The renewal CronJob kept the placeholder once: the certificate then expired unrenewed.
    assert kinds == {"Deployment", "CronJob"}, found
    assert {i for _, _, i in found} == {IMAGE}


@pytest.mark.parametrize(
    "values",
    [
        pytest.param((), id="defaults"),
        pytest.param(ALL_PODS, id="with-test-pod"),
        pytest.param(("--set", "certManager.enabled=true"), id="cert-manager"),
    ],
)
def test_every_image_the_chart_package_renders_is_the_owners(
    artifacts: Path, values: tuple[str, ...]
) -> None:
    objs = template(artifacts / f"pull-secret-webhook-{VERSION}.tgz", *values)
    found = {i for o in objs for i in images(o)}
    assert found == {IMAGE}


def test_the_chart_package_carries_the_version_and_the_owners_urls(artifacts: Path) -> None:
    files = chart_files(artifacts / f"pull-secret-webhook-{VERSION}.tgz")
    chart = yaml.safe_load(io.BytesIO(files["pull-secret-webhook/Chart.yaml"]))
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)
    url = f"https://github.com/{OWNER}/pull-secret-webhook"
    assert chart["home"] == url and chart["sources"] == [url]
    values = yaml.safe_load(io.BytesIO(files["pull-secret-webhook/values.yaml"]))
    assert values["image"] == {**values["image"], "repository": IMAGE.rsplit(":", 1)[0], "tag": ""}


def checkout_state() -> tuple[str, str]:
    status = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    digest = hashlib.sha256()
    for tree in ("manifests", "charts"):
        for path in sorted((REPO / tree).rglob("*")):
            if path.is_file():
                digest.update(str(path).encode() + path.read_bytes())
    return status, digest.hexdigest()


def test_the_script_leaves_the_checkout_as_it_was(tmp_path: Path) -> None:
    before = checkout_state()
    proc = run_script(tmp_path / "out", OWNER="other", VERSION="1.2.3", SKIP_IMAGE="1")
    assert proc.returncode == 0, proc.stderr
    assert checkout_state() == before


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"OWNER": "example-org", "VERSION": "0.2.0"}, "placeholder", id="placeholder"),
        pytest.param({"OWNER": "acme", "VERSION": "v0.2.0"}, "not x.y.z", id="v-prefix"),
        pytest.param({"OWNER": "-acme", "VERSION": "0.2.0"}, "not a GitHub owner", id="owner"),
        pytest.param({"VERSION": "0.2.0"}, "OWNER is required", id="no-owner"),
        pytest.param(
            {"OWNER": "acme", "VERSION": "0.2.0", "BASE_IMAGE": "x"}, "local or pinned", id="base"
        ),
    ],
)
def test_the_script_refuses_bad_input_with_a_clear_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    clean = {k: "" for k in ("OWNER", "VERSION", "BASE_IMAGE")}
    proc = run_script(tmp_path / "out", **{**clean, "SKIP_IMAGE": "1", **env})
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "install.yaml").exists()
