"""The Helm chart renders the objects of manifests/ (and of its overlays) from values."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support.manifests import (
    CHART,
    MANIFESTS,
    Obj,
    by_key,
    helm_binary,
    helm_template,
    is_hook,
    key,
    kustomize,
    one,
    run_tool,
    without_generated_hash,
)
from webhook.config.load import parse_config

#: Objects only the kustomize base has: Helm leaves the release namespace to
#: `--create-namespace` (and never deletes it on uninstall).
ONLY_IN_BASE = {
    ("Namespace", "pull-secret-webhook", ""),
}
CRDS = ("managedpullsecrets", "pullsecretmarkers")
#: Labels a selector may rely on; the chart adds Helm's own labels besides these.
SELECTOR_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str, str], Obj]:
    return by_key(without_generated_hash(kustomize()))


@pytest.fixture(scope="module")
def chart() -> dict[tuple[str, str, str], Obj]:
    return by_key(o for o in helm_template() if not is_hook(o))


def config_of(objs: dict[tuple[str, str, str], Obj] | list[Obj], name: str) -> Any:
    values = objs.values() if isinstance(objs, dict) else objs
    cm = one(values, "ConfigMap", name)
    return yaml.safe_load(cm["data"]["config.yaml"])


def test_the_chart_renders_the_same_objects_as_the_base(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj]
) -> None:
    assert set(chart) == set(base) - ONLY_IN_BASE


def test_the_webhook_registration_is_identical(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj]
) -> None:
    k = ("MutatingWebhookConfiguration", "pull-secret-webhook", "")

    assert chart[k]["webhooks"] == base[k]["webhooks"]


@pytest.mark.parametrize(
    "kind, namespace",
    [("ClusterRole", ""), ("Role", "pull-secret-webhook")],
)
def test_the_rbac_rules_are_identical(
    base: dict[tuple[str, str, str], Obj],
    chart: dict[tuple[str, str, str], Obj],
    kind: str,
    namespace: str,
) -> None:
    k = (kind, "pull-secret-webhook", namespace)

    assert chart[k]["rules"] == base[k]["rules"]


@pytest.mark.parametrize(
    "kind, namespace",
    [("ClusterRoleBinding", ""), ("RoleBinding", "pull-secret-webhook")],
)
def test_the_bindings_are_identical(
    base: dict[tuple[str, str, str], Obj],
    chart: dict[tuple[str, str, str], Obj],
    kind: str,
    namespace: str,
) -> None:
    k = (kind, "pull-secret-webhook", namespace)

    assert chart[k]["roleRef"] == base[k]["roleRef"]
    assert chart[k]["subjects"] == base[k]["subjects"]


def test_the_deployment_pod_spec_is_identical(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj]
) -> None:
    k = ("Deployment", "pull-secret-webhook", "pull-secret-webhook")
    ours, theirs = chart[k]["spec"], base[k]["spec"]

    for field in ("replicas", "selector", "strategy", "revisionHistoryLimit"):
        assert ours[field] == theirs[field], field
    # Security context, probes, ports, args, env, resources, mounts, volumes, spread.
    assert ours["template"]["spec"] == theirs["template"]["spec"]
    base_labels = theirs["template"]["metadata"]["labels"]
    chart_labels = ours["template"]["metadata"]["labels"]
    assert {k: chart_labels[k] for k in SELECTOR_LABELS} == {
        k: base_labels[k] for k in SELECTOR_LABELS
    }


@pytest.mark.parametrize(
    "kind",
    ["Service", "PodDisruptionBudget"],
)
def test_the_service_and_disruption_budget_are_identical(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj], kind: str
) -> None:
    k = (kind, "pull-secret-webhook", "pull-secret-webhook")

    assert chart[k]["spec"] == base[k]["spec"]


def test_the_service_account_is_identical_apart_from_labels(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj]
) -> None:
    k = ("ServiceAccount", "pull-secret-webhook", "pull-secret-webhook")

    assert chart[k]["automountServiceAccountToken"] == base[k]["automountServiceAccountToken"]
    assert "annotations" not in chart[k]["metadata"]


def test_the_default_config_means_the_same_as_the_base_example(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj]
) -> None:
    ours = parse_config(config_of(chart, "pull-secret-webhook-config"), source="chart")
    theirs = parse_config(config_of(base, "pull-secret-webhook-config"), source="base")

    assert ours == theirs


def test_the_cert_manager_option_renders_the_overlay_objects() -> None:
    overlay = by_key(without_generated_hash(kustomize(MANIFESTS / "overlays" / "cert-manager")))
    rendered = helm_template("--set", "certManager.enabled=true")
    chart = by_key(o for o in rendered if not is_hook(o))

    hooks = {o["metadata"]["annotations"]["helm.sh/hook"] for o in rendered if is_hook(o)}
    assert hooks == {"test"}, "no certs Job with cert-manager, only the helm test pod"
    assert set(chart) == set(overlay) - ONLY_IN_BASE
    for k, obj in overlay.items():
        if k[0] in ("Issuer", "Certificate"):
            assert chart[k]["spec"] == obj["spec"], k
    hook = ("MutatingWebhookConfiguration", "pull-secret-webhook", "")
    assert chart[hook]["metadata"]["annotations"] == overlay[hook]["metadata"]["annotations"]


def test_the_service_monitor_option_renders_the_overlay_object() -> None:
    overlay = by_key(kustomize(MANIFESTS / "overlays" / "prometheus"))
    chart = by_key(o for o in helm_template("--set", "serviceMonitor.enabled=true"))
    k = ("ServiceMonitor", "pull-secret-webhook", "pull-secret-webhook")

    assert chart[k]["spec"] == overlay[k]["spec"]


def test_failure_policy_and_timeout_come_from_values_and_reach_the_config() -> None:
    objs = helm_template(
        "--set", "webhook.failurePolicy=Fail", "--set", "webhook.timeoutSeconds=20"
    )
    [hook] = one(objs, "MutatingWebhookConfiguration")["webhooks"]

    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 20)
    config = parse_config(config_of(objs, "pull-secret-webhook-config"))
    assert config.admission.timeout_seconds == 20


def test_a_timeout_above_the_api_server_limit_is_refused() -> None:
    with pytest.raises(AssertionError, match="timeoutSeconds"):
        helm_template("--set", "webhook.timeoutSeconds=31")


def test_workers_come_from_values_and_zero_is_refused() -> None:
    [container] = one(helm_template("--set", "webhook.workers=2"), "Deployment")["spec"][
        "template"
    ]["spec"]["containers"]
    assert "--workers=2" in container["args"]
    with pytest.raises(AssertionError, match="workers"):
        helm_template("--set", "webhook.workers=0")


def test_cloud_identity_annotations_and_pod_labels_come_from_values() -> None:
    objs = helm_template(
        "--set-string",
        "serviceAccount.annotations.azure\\.workload\\.identity/client-id="
        "11111111-2222-3333-4444-555555555555",
        "--set-string",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn="
        "arn:aws:iam::111122223333:role/pull-secret-webhook",
        "--set-string",
        "podLabels.azure\\.workload\\.identity/use=true",
        "--set-string",
        "podAnnotations.example\\.com/team=platform",
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "replicaCount=3",
    )
    sa = one(objs, "ServiceAccount", "pull-secret-webhook")
    deployment = one(objs, "Deployment", "pull-secret-webhook")
    template = deployment["spec"]["template"]

    assert sa["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": "11111111-2222-3333-4444-555555555555",
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/pull-secret-webhook",
    }
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert template["metadata"]["annotations"]["example.com/team"] == "platform"
    assert template["spec"]["priorityClassName"] == "system-cluster-critical"
    assert deployment["spec"]["replicas"] == 3


def test_scheduling_values_reach_the_pod(tmp_path: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/arch",
                                            "operator": "In",
                                            "values": ["amd64"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
                "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}},
            }
        )
    )
    pod = one(helm_template("-f", str(values)), "Deployment")["spec"]["template"]["spec"]

    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "100m", "memory": "200Mi"},
        "limits": {"memory": "256Mi"},
    }


def test_registries_from_values_become_a_valid_config(tmp_path: Any) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "registries": [
                        {
                            "name": "ecr",
                            "kind": "ecr",
                            "anyRegistry": True,
                            "accounts": ["111122223333"],
                            "auth": {"mode": "podServiceAccount"},
                        }
                    ],
                    "secretPrefix": "pull",
                }
            }
        )
    )
    objs = helm_template("-f", str(values), release="psw", namespace="platform")

    config = parse_config(config_of(objs, "psw-pull-secret-webhook-config"))
    assert [e.name for e in config.registries] == ["ecr"]
    assert config.secret_prefix == "pull"
    assert config.namespace == "platform"
    assert config.refresh.lease_name == "psw-pull-secret-webhook"


def test_another_release_gets_its_own_names_and_excludes_its_own_namespace() -> None:
    objs = helm_template(release="psw", namespace="platform")
    name = "psw-pull-secret-webhook"
    [hook] = one(objs, "MutatingWebhookConfiguration", name)["webhooks"]

    # The CRDs are cluster-wide and keep their names (crds.enabled=false for a second release).
    crds = {f"{plural}.pull-secret-webhook.io" for plural in CRDS}
    assert {key(o)[1] for o in objs if not is_hook(o)} - crds == {
        name,
        f"{name}-config",
        f"{name}-secrets",
        f"{name}-records",
        f"{name}-certs-renewal",
    }
    assert hook["clientConfig"]["service"]["name"] == name
    assert hook["clientConfig"]["service"]["namespace"] == "platform"
    excluded = hook["namespaceSelector"]["matchExpressions"][1]
    assert excluded["values"] == ["kube-system", "platform"]
    binding = one(objs, "ClusterRoleBinding", name)
    assert binding["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": name,
        "namespace": "platform",
    }


def certs_args(objs: list[Obj], step: str) -> list[str]:
    job = one(objs, "Job", f"pull-secret-webhook-certs-{step}")
    [c] = job["spec"]["template"]["spec"]["containers"]
    args: list[str] = c["args"]
    return args


def test_the_certs_jobs_write_the_mounted_secret_and_patch_the_webhook() -> None:
    install = helm_template()
    upgrade = helm_template("--is-upgrade")
    common = [
        "certs",
        "--namespace=pull-secret-webhook",
        "--service=pull-secret-webhook",
        "--secret=pull-secret-webhook-tls",
    ]

    # On install the webhook configuration does not exist yet when the Secret is made.
    assert certs_args(install, "create") == [*common, "--webhook-config=", "--days=365"]
    assert certs_args(upgrade, "create") == [
        *common,
        "--webhook-config=pull-secret-webhook",
        "--days=365",
    ]
    for objs in (install, upgrade):
        assert certs_args(objs, "patch") == [
            *common,
            "--webhook-config=pull-secret-webhook",
            "--days=365",
        ]
    hooks = {
        o["metadata"]["name"]: o["metadata"]["annotations"]["helm.sh/hook"]
        for o in install
        if o["kind"] == "Job"
    }
    assert hooks == {
        "pull-secret-webhook-certs-create": "pre-install,pre-upgrade",
        "pull-secret-webhook-certs-patch": "post-install,post-upgrade",
    }


def test_the_certs_job_may_touch_only_its_secrets_and_webhook_configuration() -> None:
    objs = helm_template()
    role = one(objs, "Role", "pull-secret-webhook-certs")
    cluster_role = one(objs, "ClusterRole", "pull-secret-webhook-certs")

    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["pull-secret-webhook-tls", "pull-secret-webhook-tls-ca"],
            "verbs": ["get", "update"],
        },
    ]
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["pull-secret-webhook"],
            "verbs": ["get", "patch"],
        }
    ]


def hook_pod_specs(objs: list[Obj]) -> dict[str, Obj]:
    """The pod specs of the certs Jobs and the test pod, by object name."""
    specs = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objs if o["kind"] == "Job"
    }
    specs.update({o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "Pod"})
    return specs


def test_hook_pods_use_the_cluster_network_unless_told_otherwise(tmp_path: Any) -> None:
    default = hook_pod_specs(helm_template())
    assert sorted(default) == [
        "pull-secret-webhook-certs-create",
        "pull-secret-webhook-certs-patch",
        "pull-secret-webhook-test",
    ]
    for spec in default.values():
        assert not {"hostNetwork", "dnsPolicy", "hostAliases"} & set(spec)
        [container] = spec["containers"]
        assert "env" not in container
    [probe] = default["pull-secret-webhook-test"]["containers"]
    assert "--url=https://pull-secret-webhook.pull-secret-webhook.svc:443/mutate" in probe["args"]

    aliases = [{"ip": "127.0.0.1", "hostnames": ["pull-secret-webhook.pull-secret-webhook.svc"]}]
    env = [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "hookPods": {"hostNetwork": True, "hostAliases": aliases, "extraEnv": env},
                "test": {"url": "https://pull-secret-webhook.pull-secret-webhook.svc:9443/mutate"},
            }
        )
    )
    objs = helm_template("-f", str(values))
    for spec in hook_pod_specs(objs).values():
        assert spec["hostNetwork"] is True
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert spec["hostAliases"] == aliases
        [container] = spec["containers"]
        assert container["env"] == env
    [probe] = hook_pod_specs(objs)["pull-secret-webhook-test"]["containers"]
    assert "--url=https://pull-secret-webhook.pull-secret-webhook.svc:9443/mutate" in probe["args"]
    # The webhook's own pod has its own switches (hostNetwork, extraEnv).
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert "hostNetwork" not in pod and "hostAliases" not in pod
    with pytest.raises(AssertionError, match=r"test\.url"):
        helm_template("--set", "test.url=http://plain.example/mutate")


def test_unknown_values_are_refused_by_the_schema() -> None:
    with pytest.raises(AssertionError, match="additional properties"):
        run_tool([helm_binary(), "template", "x", CHART, "--set", "webhok.failurePolicy=Fail"])


@pytest.mark.parametrize("plural", CRDS)
def test_the_chart_renders_the_same_crds_as_the_base_kept_on_uninstall(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj], plural: str
) -> None:
    k = ("CustomResourceDefinition", f"{plural}.pull-secret-webhook.io", "")
    assert chart[k]["spec"] == base[k]["spec"]
    assert chart[k]["metadata"]["labels"] == base[k]["metadata"]["labels"]
    # Both CRDs follow one rule: Helm leaves them (and the records) on uninstall.
    assert chart[k]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # Templates, not crds/: Helm installs crds/ once and never upgrades them.
    assert not (CHART / "crds").exists()


def test_the_crds_can_be_left_to_another_owner_or_not_kept() -> None:
    names = {f"{plural}.pull-secret-webhook.io" for plural in CRDS}
    off = helm_template("--set", "crds.enabled=false")
    assert not [o for o in off if o["kind"] == "CustomResourceDefinition"]
    not_kept = [o for o in helm_template("--set", "crds.keep=false")
                if o["kind"] == "CustomResourceDefinition"]  # fmt: skip
    assert {o["metadata"]["name"] for o in not_kept} == names
    assert all("annotations" not in o["metadata"] for o in not_kept)


def test_pod_identity_and_network_policy_are_off_by_default_and_render_when_on() -> None:
    default = helm_template()
    assert not [o for o in default if o["kind"] in ("NetworkPolicy",)]
    assert not [
        r for o in default for r in o.get("rules", []) if "serviceaccounts/token" in r["resources"]
    ]
    on = helm_template(
        "--set",
        "podIdentity.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServerCIDRs={10.0.0.0/28}",
    )
    component = by_key(kustomize(components=["components/pod-identity"]))
    role = one(on, "ClusterRole", "pull-secret-webhook-pod-identity")
    assert (
        role["rules"] == component[("ClusterRole", "pull-secret-webhook-pod-identity", "")]["rules"]
    )
    policy = one(on, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/28"}}]


def renewal_pod(objs: Any, name: str) -> dict[str, Any]:
    cron = one(objs, "CronJob", name)
    pod: dict[str, Any] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def test_the_certs_renewal_cron_job_and_its_grants_are_those_of_the_base(
    base: dict[tuple[str, str, str], Obj], chart: dict[tuple[str, str, str], Obj]
) -> None:
    name = "pull-secret-webhook-certs-renewal"
    ours, theirs = renewal_pod(chart.values(), name), renewal_pod(base.values(), name)

    for field in ("serviceAccountName", "automountServiceAccountToken", "restartPolicy"):
        assert ours[field] == theirs[field], field
    [c], [b] = ours["containers"], theirs["containers"]
    for field in ("args", "env", "securityContext", "resources"):
        assert c[field] == b[field], field
    assert (
        one(chart.values(), "CronJob", name)["spec"]["schedule"]
        == (one(base.values(), "CronJob", name)["spec"]["schedule"])
    )
    for kind in ("Role", "ClusterRole"):
        assert one(chart.values(), kind, name)["rules"] == one(base.values(), kind, name)["rules"]


def test_another_release_renews_its_own_secrets_and_webhook_configuration() -> None:
    objs = helm_template(release="psw", namespace="platform")
    name = "psw-pull-secret-webhook"
    [c] = renewal_pod(objs, f"{name}-certs-renewal")["containers"]

    assert c["args"] == [
        "certs",
        "--namespace=$(POD_NAMESPACE)",
        f"--service={name}",
        f"--secret={name}-tls",
        f"--webhook-config={name}",
        "--days=365",
        "--renew-before=30",
    ]
    [secrets] = one(objs, "Role", f"{name}-certs-renewal")["rules"]
    assert secrets["resourceNames"] == [f"{name}-tls", f"{name}-tls-ca"]
    [hooks] = one(objs, "ClusterRole", f"{name}-certs-renewal")["rules"]
    assert hooks["resourceNames"] == [name]


@pytest.mark.parametrize(
    "values",
    [["--set", "certsRenewal.enabled=false"], ["--set", "certManager.enabled=true"]],
    ids=["turned-off", "cert-manager"],
)
def test_no_renewal_cron_job_when_off_or_with_cert_manager(values: list[str]) -> None:
    objs = helm_template(*values)

    assert not [o for o in objs if "certs-renewal" in o["metadata"]["name"]]


def test_a_long_release_name_still_gives_a_valid_cron_job_name() -> None:
    objs = helm_template("--set", f"fullnameOverride={'x' * 63}")
    [cron] = [o for o in objs if o["kind"] == "CronJob"]

    # The API server refuses CronJob names over 52 characters (Job names add 11).
    assert len(cron["metadata"]["name"]) <= 52


def test_a_renewal_window_as_long_as_the_certificate_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"renewBeforeDays must be below certsJob\.days"):
        helm_template("--set", "certsJob.days=30", "--set", "certsRenewal.renewBeforeDays=30")


def test_the_flow_schema_is_off_by_default_and_when_on_is_the_components_for_its_release() -> None:
    assert not [o for o in helm_template() if o["kind"] == "FlowSchema"]
    component = by_key(kustomize(components=["components/flow-schema"]))
    [(key, theirs)] = [(k, o) for k, o in component.items() if k[0] == "FlowSchema"]
    # The default release: the very object of the component.
    ours = one(helm_template("--set", "flowSchema.enabled=true"), "FlowSchema")
    assert ours["metadata"]["name"] == key[1]
    assert ours["spec"] == theirs["spec"]
    # Another release and namespace: the subject follows the release's ServiceAccount.
    other = helm_template(
        "--set", "flowSchema.enabled=true", "--set", "flowSchema.priorityLevel=workload-low",
        release="psw", namespace="tools",
    )  # fmt: skip
    account = one(other, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    schema = one(other, "FlowSchema")
    assert schema["spec"]["rules"][0]["subjects"][0]["serviceAccount"] == {
        "namespace": "tools",
        "name": account,
    }
    assert schema["spec"]["priorityLevelConfiguration"] == {"name": "workload-low"}
