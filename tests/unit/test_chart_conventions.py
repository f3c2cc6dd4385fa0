"""The chart's conventions, as operators of other charts (cert-manager, External Secrets,
Kyverno) expect them: it works as a dependency, takes the usual extra*/override values,
and its image, release pipeline and kustomize base agree on what is published."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.charts import (
    RELEASED_IMAGE,
    chart_meta,
    umbrella,
    write_values,
)
from tests.support.manifests import (
    CHART,
    KUBE_VERSION,
    REPO,
    Obj,
    helm_binary,
    helm_template,
    is_hook,
    kustomize,
    objects,
    one,
    run_tool,
)
from webhook.cli import build_parser


def webhook_container(objs: list[Obj]) -> dict[str, Any]:
    [c] = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


# ------------------------------------------------------------------ as a dependency


def test_the_chart_renders_as_a_dependency_of_an_umbrella_chart(tmp_path: Path) -> None:
    root = umbrella(tmp_path)

    rendered = objects(
        run_tool(
            [
                helm_binary(),
                "template",
                "platform",
                root,
                "--namespace",
                "pull-secret-webhook",
                "--kube-version",
                KUBE_VERSION,
            ]
        )
    )
    linted = run_tool([helm_binary(), "lint", "--strict", root, "--kube-version", KUBE_VERSION])

    deployment = one(rendered, "Deployment", "platform-pull-secret-webhook")
    assert deployment["spec"]["replicas"] == 3
    assert "0 chart(s) failed" in linted


def test_umbrella_keys_global_and_enabled_are_accepted_and_typos_refused() -> None:
    helm_template("--set", "global.anything=1", "--set", "enabled=true")

    with pytest.raises(AssertionError, match="additional properties"):
        helm_template("--set", "globals.anything=1")


def test_kubernetes_older_than_admission_policies_v1_is_refused() -> None:
    assert chart_meta()["kubeVersion"] == ">=1.30.0-0"

    with pytest.raises(AssertionError, match="kubeVersion"):
        helm_template("--kube-version", "1.29.9")
    # Providers' pre-release suffixes count as the version they extend.
    helm_template("--kube-version", "v1.30.4-eks-a737599")


# --------------------------------------------------------------------- extra values


def test_extra_args_env_volumes_and_mounts_reach_the_webhook_container(tmp_path: Path) -> None:
    values = write_values(
        tmp_path,
        {
            "extraArgs": ["--shutdown-delay=10"],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca"}],
        },
    )

    objs = helm_template("-f", values)

    c = webhook_container(objs)
    args = build_parser().parse_args(c["args"])
    assert args.shutdown_delay == 10.0
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in c["env"]
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca"} in c["volumeMounts"]
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]


def test_the_documented_proxy_values_reach_the_webhook_container(tmp_path: Path) -> None:
    """docs/install.md, "Behind an HTTP proxy": its values block, as written."""
    text = (REPO / "docs" / "install.md").read_text()
    marker = "# my-values.yaml (additions): behind a proxy"
    block = text[text.index(marker) :].split("```", 1)[0]
    values = tmp_path / "my-values.yaml"
    values.write_text(block)

    env = webhook_container(helm_template("-f", str(values)))["env"]

    assert {"name": "HTTPS_PROXY", "value": "http://proxy.corp.example:3128"} in env
    no_proxy = next(e["value"] for e in env if e["name"] == "NO_PROXY")
    assert no_proxy.split(",") == ["10.96.0.1", "169.254.169.254", "metadata.google.internal"]


def test_extra_objects_are_rendered_with_tpl(tmp_path: Path) -> None:
    values = write_values(
        tmp_path,
        {
            "extraObjects": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "extra", "namespace": "{{ .Release.Namespace }}"},
                },
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: '{{ .Release.Name }}-text'\n",
            ]
        },
    )

    objs = helm_template("-f", values, namespace="platform")

    assert one(objs, "ConfigMap", "extra")["metadata"]["namespace"] == "platform"
    one(objs, "ConfigMap", "pull-secret-webhook-text")


def test_common_labels_are_on_every_object() -> None:
    objs = helm_template(
        "--set", "commonLabels.team=platform", "--set", "serviceMonitor.enabled=true"
    )

    assert all(o["metadata"]["labels"]["team"] == "platform" for o in objs)


def test_the_image_can_be_pinned_by_digest() -> None:
    digest = "sha256:" + "a" * 64

    objs = helm_template("--set", f"image.digest={digest}")

    assert webhook_container(objs)["image"] == f"{RELEASED_IMAGE}@{digest}"
    with pytest.raises(AssertionError, match=r"image\.digest|does not match pattern"):
        helm_template("--set", "image.digest=latest")


# ------------------------------------------------------------- ports and the network


def test_webhook_and_health_ports_and_host_network_come_from_values() -> None:
    objs = helm_template(
        "--set", "webhook.port=10260", "--set", "webhook.healthPort=10261",
        "--set", "hostNetwork=true",
    )  # fmt: skip

    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = webhook_container(objs)
    args = build_parser().parse_args(c["args"])
    assert (args.port, args.health_port) == (10260, 10261)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "https": 10260,
        "metrics": 10261,
    }
    assert c["readinessProbe"]["httpGet"]["port"] == 10261
    assert c["livenessProbe"]["httpGet"]["port"] == 10261
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    # The Service still answers the API server on 443, by port name.
    service = one(objs, "Service")
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}["https"] == (
        443,
        "https",
    )


def test_the_network_policy_follows_the_configured_ports() -> None:
    objs = helm_template(
        "--set", "webhook.port=10250", "--set", "webhook.healthPort=10261",
        "--set", "networkPolicy.enabled=true",
        "--set", "networkPolicy.apiServerCIDRs={172.16.0.0/28}",
    )  # fmt: skip

    policy = one(objs, "NetworkPolicy")
    ports = [[p["port"] for p in rule["ports"]] for rule in policy["spec"]["ingress"]]
    assert ports == [[10250], [10250], [10261]]
    # The helm test pod may reach the webhook port; its labels select it.
    [test_pod] = [o for o in objs if o["kind"] == "Pod"]
    [from_test] = policy["spec"]["ingress"][1]["from"]
    wanted = from_test["podSelector"]["matchLabels"].items()
    assert wanted <= test_pod["metadata"]["labels"].items()


def test_exclude_namespaces_adds_to_kube_system_and_the_release_namespace() -> None:
    objs = helm_template("--set", "webhook.excludeNamespaces={team-x,kube-system}")

    [hook] = one(objs, "MutatingWebhookConfiguration")["webhooks"]
    [excluded] = [
        e["values"]
        for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded == ["kube-system", "pull-secret-webhook", "team-x"]


def test_mirror_pods_never_reach_the_webhook() -> None:
    # The kubelet's mirror pods carry kubernetes.io/config.mirror; the API server refuses
    # a mirror pod that references a Secret, so the webhook must never patch one.
    for objs in (helm_template(), kustomize()):
        [hook] = one(objs, "MutatingWebhookConfiguration")["webhooks"]
        [condition] = hook["matchConditions"]
        assert "kubernetes.io/config.mirror" in condition["expression"]
        assert condition["expression"].startswith("!has(object.metadata.annotations) ||")


# ---------------------------------------------------------- security and scheduling


def test_security_contexts_can_be_overridden(tmp_path: Path) -> None:
    # Helm merges maps with the defaults; null removes a default key.
    values = write_values(
        tmp_path,
        {
            "podSecurityContext": {"runAsUser": 1000, "fsGroup": 1000, "runAsGroup": None},
            "securityContext": {"readOnlyRootFilesystem": True, "capabilities": None},
        },
    )

    objs = helm_template("-f", values)

    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert webhook_container(objs)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    for job in (o for o in objs if o["kind"] == "Job"):
        assert job["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000


def test_topology_spread_constraints_replace_the_default_and_get_the_selector(
    tmp_path: Path,
) -> None:
    values = write_values(
        tmp_path,
        {
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                }
            ]
        },
    )

    objs = helm_template("-f", values)

    deployment = one(objs, "Deployment")
    [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["labelSelector"] == {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}


# ------------------------------------------------------------ monitoring and certs


def test_the_service_monitor_can_live_elsewhere_and_relabel(tmp_path: Path) -> None:
    relabel = [{"targetLabel": "cluster", "replacement": "prod"}]
    values = write_values(
        tmp_path,
        {
            "serviceMonitor": {
                "enabled": True,
                "namespace": "monitoring",
                "scrapeTimeout": "10s",
                "relabelings": relabel,
                "metricRelabelings": relabel,
            }
        },
    )

    monitor = one(helm_template("-f", values), "ServiceMonitor")

    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["pull-secret-webhook"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["relabelings"] == endpoint["metricRelabelings"] == relabel
    assert endpoint["scrapeTimeout"] == "10s"


def test_cert_manager_can_use_your_own_issuer() -> None:
    objs = helm_template(
        "--set", "certManager.enabled=true",
        "--set", "certManager.issuerRef.name=corp-ca",
        "--set", "certManager.issuerRef.kind=ClusterIssuer",
    )  # fmt: skip

    assert not [o for o in objs if o["kind"] == "Issuer"]
    [serving] = [o for o in objs if o["kind"] == "Certificate"]
    assert serving["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert serving["spec"]["secretName"] == "pull-secret-webhook-tls"


# ---------------------------------------------------------------------- helm test


def test_helm_test_probes_the_service_with_the_ca_bundle_only() -> None:
    objs = helm_template(namespace="platform", release="psw")
    [pod] = [
        o for o in objs if is_hook(o) and o["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]

    spec = pod["spec"]
    [c] = spec["containers"]
    args = build_parser().parse_args(c["args"])
    assert args.command == "probe"
    assert args.url == "https://psw-pull-secret-webhook.platform.svc:443/mutate"
    [mount] = c["volumeMounts"]
    assert args.ca_file == f"{mount['mountPath']}/ca.crt"
    [volume] = spec["volumes"]
    assert volume["secret"]["secretName"] == "psw-pull-secret-webhook-tls"
    # Only the CA certificate: the test pod never sees the serving key.
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert spec["automountServiceAccountToken"] is False
    assert c["image"] == webhook_container(objs)["image"]


def test_helm_test_can_be_turned_off() -> None:
    objs = helm_template("--set", "test.enabled=false")

    assert not [o for o in objs if o["kind"] == "Pod"]


# ------------------------------------------------------------- what is published


def test_the_chart_the_base_and_the_release_name_the_same_image() -> None:
    version = chart_meta()["appVersion"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    base = kustomize()
    base_image = webhook_container(base)["image"]
    script = (REPO / "hack" / "release-artifacts.sh").read_text()

    assert values["image"]["repository"] == RELEASED_IMAGE
    assert base_image == f"{RELEASED_IMAGE}:{version}"
    # Every workload of the base (the renewal CronJob too) names the one placeholder, which
    # the release script's kustomize `images:` entry replaces everywhere
    # (tests/unit/test_release_artifacts.py renders a release for another owner).
    [cronjob] = [o for o in base if o["kind"] == "CronJob"]
    [renewal] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert renewal["image"] == base_image
    assert chart_meta()["version"] == version
    assert 'placeholder_image="ghcr.io/$PLACEHOLDER_OWNER/$NAME"' in script
    assert RELEASED_IMAGE == "ghcr.io/example-org/pull-secret-webhook"


def test_the_docs_install_the_released_version() -> None:
    version = chart_meta()["version"]
    for doc in (REPO / "README.md", REPO / "docs" / "install.md"):
        text = doc.read_text()
        assert (
            f"oci://ghcr.io/example-org/charts/pull-secret-webhook \\\n  --version {version}"
            in text
        )
        images = set(re.findall(r"ghcr\.io/[a-z0-9-]+/pull-secret-webhook", text))
        assert images == {RELEASED_IMAGE}, doc.name


def test_the_release_workflow_builds_both_architectures_and_signs_image_and_chart() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "release.yaml").read_text())
    job = workflow["jobs"]["release"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])

    # `on:` parses as True in YAML 1.1.
    assert workflow[True]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+*"]
    assert job["permissions"] == {"contents": "write", "packages": "write", "id-token": "write"}
    assert "BASE_IMAGE=pinned PLATFORMS=linux/amd64,linux/arm64" in runs
    assert "skopeo copy --all --preserve-digests --digestfile digest" in runs
    assert 'cosign sign --yes --recursive "$IMAGE@$DIGEST"' in runs
    # One SBOM per platform image of the index, each attested on that image.
    assert 'syft scan "registry:$IMAGE@$digest" -o "spdx-json=sbom-$platform.spdx.json"' in runs
    assert 'cosign attest --yes --type spdxjson --predicate "sbom-$platform.spdx.json"' in runs
    assert 'helm" push "dist/pull-secret-webhook-$VERSION.tgz" "$CHARTS"' in runs
    assert 'cosign sign --yes "$CHART_REF@$digest"' in runs
    assert "sbom-*.spdx.json" in runs and "dist/install.yaml" in runs
