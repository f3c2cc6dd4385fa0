"""Rendering the install artefacts: kustomize (kubectl's built-in) and the Helm chart
(the helpers that render them are tests/support/manifests.py's)."""

from __future__ import annotations

import pytest

from tests.support.manifests import (
    CHART,
    MANIFESTS,
    by_key,
    helm_binary,
    kustomize,
    run_tool,
)

OVERLAYS = ("cert-manager", "prometheus")


# ----------------------------------------------------------------------------- tests


def test_the_base_builds_with_the_kustomize_in_kubectl() -> None:
    kinds = sorted(o["kind"] for o in kustomize())

    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            # The records' shape (validatingadmissionpolicy.yaml).
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration",
            # certs-renewal.yaml: the CronJob and its own identity.
            "CronJob",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_on_the_whole_base(overlay: str) -> None:
    """(And each component: a user's kustomization adding it still has the whole base.)"""
    base = by_key(kustomize())
    built = by_key(kustomize(MANIFESTS / "overlays" / overlay))
    renewal = {k for k in base if k[1] == "pull-secret-webhook-certs-renewal"}

    assert len(renewal) == 6
    if overlay == "cert-manager":
        # cert-manager renews: the renewal CronJob and its identity and grants go.
        assert set(base) - renewal <= set(built)
        assert not renewal & set(built)
    else:
        assert set(base) <= set(built)


def test_helm_lint_passes_in_strict_mode() -> None:
    out = run_tool([helm_binary(), "lint", "--strict", CHART])

    assert "0 chart(s) failed" in out


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([], id="defaults"),
        pytest.param(["--set", "certManager.enabled=true"], id="cert-manager"),
        pytest.param(["--set", "serviceMonitor.enabled=true"], id="service-monitor"),
        pytest.param(["--set", "certsJob.enabled=false"], id="no-certs-job"),
        pytest.param(
            ["--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=corp"],
            id="own-issuer",
        ),
        pytest.param(
            ["--set", "hostNetwork=true", "--set", "webhook.port=10260"], id="host-network"
        ),
        pytest.param(["--set", "test.enabled=false"], id="no-helm-test"),
        pytest.param(["--set", "flowSchema.enabled=true"], id="flow-schema"),
    ],
)
def test_helm_lint_passes_with_each_option(values: list[str]) -> None:
    out = run_tool([helm_binary(), "lint", "--strict", CHART, *values])

    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("component", ["pod-identity", "network-policy", "flow-schema"])
def test_each_component_adds_to_the_whole_base(component: str) -> None:
    base = by_key(kustomize())
    built = by_key(kustomize(components=[f"components/{component}"]))

    assert set(base) < set(built)


def test_the_local_node_overlay_leaves_its_certificates_to_the_harness() -> None:
    base = by_key(kustomize())
    built = by_key(kustomize(MANIFESTS / "overlays" / "local-node"))
    renewal = {k for k in base if k[1] == "pull-secret-webhook-certs-renewal"}

    assert renewal and not renewal & set(built)
    assert set(base) - renewal <= set(built)
