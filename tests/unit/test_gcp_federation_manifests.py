"""docs/gcp-federation.md's install paths, rendered as written: the webhook's own token for
mode federation (Helm's gcpFederation, the gcp-federation component) and the per-pod
policy's audiences for mode podServiceAccount."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docs import block_after
from tests.support.manifests import (
    CHART,
    KUBE_VERSION,
    MANIFESTS,
    NAMESPACE,
    RELEASE,
    REPO,
    Obj,
    by_key,
    helm_binary,
    kubectl_binary,
    objects,
    one,
    run_tool,
)

DOC = REPO / "docs" / "gcp-federation.md"
AUDIENCE = (
    "https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/"
    "clusters/providers/my-cluster"
)
#: The webhook's own volumes and mounts, in the base and the chart alike.
BASE_VOLUMES = {"config-and-tls", "tmp"}


def helm_text(*args: str) -> str:
    return run_tool(
        [helm_binary(), "template", RELEASE, CHART, "--namespace", NAMESPACE,
         "--kube-version", KUBE_VERSION, *args]
    )  # fmt: skip


def kustomize_with(tmp_path: Path, components: list[str], patches: list[Any]) -> list[Obj]:
    """An install of manifests/ with ``components`` (paths under manifests/) and the
    overlay's ``patches``, as a user's own kustomization would add them."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(MANIFESTS, tmp_path)],
                "components": [os.path.relpath(MANIFESTS / c, tmp_path) for c in components],
                "patches": patches,
            }
        )
    )
    return objects(run_tool([kubectl_binary(), "kustomize", tmp_path]))


def pod(objs: list[Obj]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objs, "Deployment")["spec"]["template"]["spec"]
    return spec


def gcp_token(objs: list[Obj]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The webhook container's gcp-token mount and the pod's gcp-token volume."""
    spec = pod(objs)
    [container] = spec["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "gcp-token"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "gcp-token"]
    return mount, volume


def without_gcp_token(objs: list[Obj]) -> dict[Any, Obj]:
    found = by_key(copy.deepcopy(objs))
    for obj in found.values():
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "gcp-token"]
            for c in spec["containers"]:
                c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "gcp-token"]
    return found


def documented_token_file() -> str:
    config = yaml.safe_load(block_after(DOC, "tokenFile:"))
    [entry] = config["registries"]
    token_file: str = entry["auth"]["tokenFile"]
    return token_file


def assert_is_the_documented_token(mount: dict[str, Any], volume: dict[str, Any]) -> None:
    """Only the provider's audience, read-only, at the path the entry's tokenFile names."""
    [source] = volume["projected"]["sources"]
    assert source == {
        "serviceAccountToken": {"path": "token", "audience": AUDIENCE, "expirationSeconds": 3600}
    }
    assert mount["readOnly"] is True
    assert f"{mount['mountPath']}/{source['serviceAccountToken']['path']}" == (
        documented_token_file()
    )


def test_the_chart_renders_byte_for_byte_the_same_while_gcp_federation_is_off() -> None:
    default = helm_text()
    off = helm_text(
        "--set", "gcpFederation.enabled=false", "--set", f"gcpFederation.audience={AUDIENCE}"
    )

    assert "gcp-token" not in default
    assert off == default


def test_the_documented_helm_values_add_only_the_webhook_token_with_the_provider_audience(
    tmp_path: Path,
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(block_after(DOC, "gcpFederation:"))

    on = objects(helm_text("-f", str(values)))

    assert_is_the_documented_token(*gcp_token(on))
    # Nothing else changes: every object, the Deployment's other volumes and mounts
    # included, is the default render's.
    assert without_gcp_token(on) == by_key(objects(helm_text()))


def test_the_chart_refuses_gcp_federation_without_the_provider_audience() -> None:
    with pytest.raises(AssertionError, match=r"set gcpFederation\.audience"):
        helm_text("--set", "gcpFederation.enabled=true")


def test_the_documented_kustomize_overlay_adds_only_the_same_token_as_the_chart(
    tmp_path: Path,
) -> None:
    overlay = yaml.safe_load(block_after(DOC, "components/gcp-federation"))
    [component] = overlay["components"]
    assert component == "../pull-secret-webhook/manifests/components/gcp-federation"
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()

    on = kustomize_with(tmp_path / "with", ["components/gcp-federation"], overlay["patches"])
    off = kustomize_with(tmp_path / "without", [], [])

    mount, volume = gcp_token(on)
    assert_is_the_documented_token(mount, volume)
    assert without_gcp_token(on) == by_key(off)
    values = tmp_path / "values.yaml"
    values.write_text(block_after(DOC, "gcpFederation:"))
    assert gcp_token(objects(helm_text("-f", str(values)))) == (mount, volume)


def test_the_gcp_federation_component_alone_carries_a_placeholder_no_provider_accepts(
    tmp_path: Path,
) -> None:
    _, volume = gcp_token(kustomize_with(tmp_path, ["components/gcp-federation"], []))

    [source] = volume["projected"]["sources"]
    assert "PROVIDER_ID" in source["serviceAccountToken"]["audience"]


def audiences_patch() -> dict[str, Any]:
    overlay = yaml.safe_load(block_after(DOC, "pull-secret-webhook-tokens"))
    [patch] = overlay["patches"]
    assert isinstance(patch, dict)
    return patch


def test_the_documented_per_pod_patch_adds_the_provider_audience_and_changes_nothing_else(
    tmp_path: Path,
) -> None:
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()

    on = one(kustomize_with(tmp_path / "with", ["components/pod-identity"], [audiences_patch()]),
             "ValidatingAdmissionPolicy", "pull-secret-webhook-tokens")  # fmt: skip
    off = one(kustomize_with(tmp_path / "without", ["components/pod-identity"], []),
              "ValidatingAdmissionPolicy", "pull-secret-webhook-tokens")  # fmt: skip

    variables = {v["name"]: v["expression"] for v in on["spec"]["variables"]}
    assert yaml.safe_load(variables["audiences"]) == [
        "api://AzureADTokenExchange", "sts.amazonaws.com", AUDIENCE
    ]  # fmt: skip
    # The rule that reads the variable, and every other rule, is the shipped one.
    assert on["spec"]["validations"] == off["spec"]["validations"]
    assert any("in variables.audiences" in v["expression"] for v in on["spec"]["validations"])
    on["spec"]["variables"] = off["spec"]["variables"]
    assert on == off


def test_the_documented_per_pod_patch_fails_the_build_once_the_audiences_variable_moves(
    tmp_path: Path,
) -> None:
    """Its replace names the variable by index; its test operation turns a reordered policy
    into a build error instead of a silently replaced rule."""
    moved = {
        "target": {"kind": "ValidatingAdmissionPolicy", "name": "pull-secret-webhook-tokens"},
        "patch": yaml.safe_dump(
            [{"op": "add", "path": "/spec/variables/0", "value": {"name": "x", "expression": "1"}}]
        ),
    }

    with pytest.raises(AssertionError, match="test failed"):
        kustomize_with(tmp_path, ["components/pod-identity"], [moved, audiences_patch()])
