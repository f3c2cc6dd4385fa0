"""The chart as users consume it: its metadata, values files, an umbrella chart that vendors
it, and the check that everything names the rendered ServiceAccount."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.support.manifests import (
    CHART,
    Obj,
    one,
)

#: The placeholder owner of the released image: the README, docs, chart, base and the
#: release workflow's rewrite step must all use the same one.
RELEASED_IMAGE = "ghcr.io/example-org/pull-secret-webhook"


def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def write_values(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def umbrella(tmp_path: Path) -> Path:
    """An umbrella chart that vendors this chart under charts/ and sets global values."""
    root = tmp_path / "platform"
    (root / "charts").mkdir(parents=True)
    shutil.copytree(CHART, root / "charts" / "pull-secret-webhook")
    version = chart_meta()["version"]
    (root / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {
                        "name": "pull-secret-webhook",
                        "version": version,
                        "condition": "pull-secret-webhook.enabled",
                    }
                ],
            }
        )
    )
    (root / "values.yaml").write_text(
        yaml.safe_dump(
            {
                # What umbrella charts commonly share; the subchart must accept it.
                "global": {"imageRegistry": "registry.example.com", "team": "platform"},
                "pull-secret-webhook": {"enabled": True, "replicaCount": 3},
            }
        )
    )
    return root


def username(objs: list[Obj]) -> str:
    deployment = one(objs, "Deployment")
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return f"system:serviceaccount:{namespace}:{account}"


def assert_everything_names_the_rendered_account(objs: list[Obj]) -> str:
    """Every binding, policy and FlowSchema of the webhook's identity names the account
    its pods run as; returns that account's username."""
    deployment = one(objs, "Deployment")
    namespace = deployment["metadata"]["namespace"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    user = username(objs)
    policies = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    assert policies
    for policy in policies:
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == f"request.userInfo.username == '{user}'"
    webhook_bindings = [
        o
        for o in objs
        if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        and "certs" not in o["metadata"]["name"]
    ]
    assert webhook_bindings
    for binding in webhook_bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        ]
    for schema in (o for o in objs if o["kind"] == "FlowSchema"):
        [subject] = schema["spec"]["rules"][0]["subjects"]
        assert subject["serviceAccount"] == {"name": account, "namespace": namespace}
    return user
