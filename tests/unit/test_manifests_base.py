"""The kustomize base says what the rest of the code assumes: names, ports, paths, RBAC,
webhook registration, security settings, and a config example the webhook accepts."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.support.manifests import (
    MANIFESTS,
    REPO,
    Obj,
    kustomize,
    one,
)
from webhook.admission.decision import OPT_OUT_LABEL, OPT_OUT_VALUE
from webhook.certs import pki
from webhook.cli import build_parser
from webhook.cli.common import DEFAULT_CERT_DIR, DEFAULT_CONFIG
from webhook.config.load import parse_config
from webhook.config.schema import AdmissionSettings

NAME = "pull-secret-webhook"
NAMESPACE = "pull-secret-webhook"
TLS_SECRET = "pull-secret-webhook-tls"
CONFIG_MAP = "pull-secret-webhook-config"
#: The certificate renewal CronJob and its identity (certs-renewal.yaml).
RENEWAL = "pull-secret-webhook-certs-renewal"
#: The image's user (Dockerfile USER); the manifests must run as the same numeric uid.
NONROOT_UID = 65532
CLUSTER_SCOPED = (
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return kustomize()


def container(objs: list[Obj]) -> dict[str, Any]:
    [c] = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def generated_config_map(objs: list[Obj]) -> Obj:
    """The configMapGenerator's ConfigMap: pull-secret-webhook-config-<content hash>."""
    [cm] = [o for o in objs if o["kind"] == "ConfigMap"]
    assert re.fullmatch(rf"{CONFIG_MAP}-[a-z0-9]{{10}}", cm["metadata"]["name"]), cm["metadata"]
    return cm


def config_text(objs: list[Obj]) -> str:
    text = generated_config_map(objs)["data"]["config.yaml"]
    assert isinstance(text, str)
    return text


def test_every_namespaced_object_lives_in_the_webhook_namespace(base: list[Obj]) -> None:
    for obj in base:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        if obj["kind"] == "MutatingWebhookConfiguration":
            continue
        assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]
        assert obj["metadata"]["name"] in (
            NAME,
            RENEWAL,
            generated_config_map(base)["metadata"]["name"],
        ), obj["kind"]


def test_the_example_config_is_valid_for_the_webhook(base: list[Obj]) -> None:
    config = parse_config(yaml.safe_load(config_text(base)), source="configmap")

    assert config.namespace == NAMESPACE
    assert config.registries


def test_every_commented_example_entry_is_valid_once_uncommented(base: list[Obj]) -> None:
    # Example lines are "# - " (an entry) or "#   " (its keys); prose never starts so.
    text = re.sub(r"(?m)^(\s*)# (?=- |  )", r"\1", config_text(base))

    config = parse_config(yaml.safe_load(text), source="configmap, uncommented")

    assert [e.name for e in config.registries] == [
        "acr",
        "acr-team-a",
        "ecr",
        "ecr-tenants",
        "harbor",
    ]


def test_the_webhook_is_registered_as_the_code_expects(base: list[Obj]) -> None:
    [hook] = one(base, "MutatingWebhookConfiguration", NAME)["webhooks"]

    assert hook["name"] == "pods.pull-secret-webhook.io"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["clientConfig"] == {
        "service": {"name": NAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}
    }
    assert [(r["operations"], r["resources"]) for r in hook["rules"]] == [
        (["CREATE"], ["pods"]),
        (["UPDATE"], ["pods/ephemeralcontainers"]),
    ]
    assert all(r["apiGroups"] == [""] and r["apiVersions"] == ["v1"] for r in hook["rules"])
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "pull-secret-webhook/inject", "operator": "In", "values": ["enabled"]},
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", NAMESPACE],
            },
        ]
    }
    assert hook["objectSelector"] == {
        "matchExpressions": [{"key": OPT_OUT_LABEL, "operator": "NotIn", "values": [OPT_OUT_VALUE]}]
    }
    assert "caBundle" not in hook["clientConfig"]


def test_the_webhook_timeout_matches_the_config_default_and_the_example(base: list[Obj]) -> None:
    [hook] = one(base, "MutatingWebhookConfiguration", NAME)["webhooks"]
    config = parse_config(yaml.safe_load(config_text(base)))

    assert hook["timeoutSeconds"] == AdmissionSettings().timeout_seconds == 10
    assert config.admission.timeout_seconds == hook["timeoutSeconds"]


def rules(obj: Obj) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_cluster_role_grants_exactly_what_the_webhook_uses(base: list[Obj]) -> None:
    assert rules(one(base, "ClusterRole", NAME)) == {
        *(("", "secrets", v) for v in ("create", "update", "patch", "delete")),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "events", "create"),
        ("", "pods/eviction", "create"),
        *(
            ("pull-secret-webhook.io", "pullsecretmarkers", v)
            for v in ("create", "delete", "list", "watch")
        ),
    }


def test_the_default_install_can_neither_read_secrets_nor_mint_tokens(base: list[Obj]) -> None:
    unnamed = [
        {**o, "rules": [r for r in o["rules"] if not r.get("resourceNames")]}
        for o in base
        if o["kind"] in ("ClusterRole", "Role")
    ]
    granted = set().union(*(rules(o) for o in unnamed))
    assert not {g for g in granted if g[1] == "secrets" and g[2] in ("get", "list", "watch")}
    assert not {g for g in granted if g[1].startswith("serviceaccounts")}
    # The only Secrets anyone here may read are the certificate renewal's own two, by name.
    named = [
        (o["metadata"]["name"], r)
        for o in base
        if o["kind"] in ("ClusterRole", "Role")
        for r in o["rules"]
        if r.get("resourceNames") and "secrets" in r["resources"]
    ]
    assert named == [
        (
            RENEWAL,
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [TLS_SECRET, f"{TLS_SECRET}-ca"],
                "verbs": ["get", "update"],
            },
        )
    ]


def test_the_certs_renewal_identity_reaches_only_its_secrets_and_webhook_by_name(
    base: list[Obj],
) -> None:
    role, cluster_role = one(base, "Role", RENEWAL), one(base, "ClusterRole", RENEWAL)

    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [TLS_SECRET, f"{TLS_SECRET}-ca"],
            "verbs": ["get", "update"],
        }
    ]
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [NAME],
            "verbs": ["get", "patch"],
        }
    ]
    for kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        binding = one(base, kind, RENEWAL)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": RENEWAL,
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": RENEWAL, "namespace": NAMESPACE}
        ]
    assert one(base, "ServiceAccount", RENEWAL)["automountServiceAccountToken"] is False


def test_the_certs_renewal_cron_job_renews_what_the_deployment_mounts(base: list[Obj]) -> None:
    cron = one(base, "CronJob", RENEWAL)
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    args = build_parser().parse_args(c["args"])
    webhook_pod = one(base, "Deployment", NAME)["spec"]["template"]["spec"]

    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod["serviceAccountName"] == RENEWAL
    assert c["image"] == container(base)["image"]
    assert c["securityContext"] == container(base)["securityContext"]
    assert pod["securityContext"]["runAsUser"] == NONROOT_UID
    # $(POD_NAMESPACE) is expanded by the kubelet from the pod's own namespace.
    assert args.namespace == "$(POD_NAMESPACE)"
    assert c["env"] == [
        {
            "name": "POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        }
    ]
    assert (args.service, args.secret, args.webhook_config) == (NAME, TLS_SECRET, NAME)
    assert 1 <= args.renew_before < args.days
    assert not args.rotate_ca and not args.out_dir
    mounted = {
        src["secret"]["name"]
        for v in webhook_pod["volumes"]
        for src in v.get("projected", {}).get("sources", [])
        if "secret" in src
    }
    assert mounted == {TLS_SECRET}


def test_the_pod_identity_component_adds_only_tokens_and_their_policy() -> None:
    with_component = kustomize(components=["components/pod-identity"])
    base_names = {(o["kind"], o["metadata"]["name"]) for o in kustomize()}
    added = [o for o in with_component if (o["kind"], o["metadata"]["name"]) not in base_names]
    assert sorted(o["kind"] for o in added) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert rules(one(added, "ClusterRole")) == {
        ("", "serviceaccounts", "get"),
        ("", "serviceaccounts/token", "create"),
    }
    policy = one(added, "ValidatingAdmissionPolicy")
    [rule] = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["serviceaccounts/token"]
    binding = one(added, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


@pytest.mark.parametrize("policy", ["pull-secret-webhook-secrets"])
def test_the_write_policy_applies_to_the_webhook_alone_and_fails_closed(
    base: list[Obj], policy: str
) -> None:
    vap = one(base, "ValidatingAdmissionPolicy", policy)
    assert vap["spec"]["failurePolicy"] == "Fail"
    [condition] = vap["spec"]["matchConditions"]
    # Namespace and name as string literals of their own, so an overlay's replacements
    # (manifests/follow-renames.yaml) can rewrite each after a rename.
    assert condition["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:' + '{NAMESPACE}' + ':' + '{NAME}'"
    )
    binding = one(base, "ValidatingAdmissionPolicyBinding", policy)
    assert binding["spec"]["validationActions"] == ["Deny"]


def test_records_and_the_lease_are_limited_to_the_webhook_namespace(base: list[Obj]) -> None:
    role = one(base, "Role", NAME)

    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules(role) == {
        *(
            ("pull-secret-webhook.io", "managedpullsecrets", v)
            for v in ("get", "list", "watch", "create", "update", "delete")
        ),
        *(("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")),
    }


def test_no_rbac_rule_uses_a_wildcard(base: list[Obj]) -> None:
    for obj in base:
        for rule in obj.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (obj["kind"], rule)


@pytest.mark.parametrize("kind", ["ClusterRoleBinding", "RoleBinding"])
def test_bindings_name_the_webhook_service_account(base: list[Obj], kind: str) -> None:
    binding = one(base, kind, NAME)

    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == NAME


def test_the_deployment_runs_two_replicas_as_a_locked_down_non_root_user(
    base: list[Obj],
) -> None:
    deployment = one(base, "Deployment", NAME)
    pod = deployment["spec"]["template"]["spec"]
    c = container(base)

    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == NAME
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == NONROOT_UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert c["resources"]["limits"] == {"memory": "256Mi"}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_the_container_uses_the_cli_defaults_for_paths_and_ports(base: list[Obj]) -> None:
    c = container(base)
    args = build_parser().parse_args(c["args"])
    defaults = build_parser().parse_args(["serve"])

    assert args.command == "serve"
    assert args.config == DEFAULT_CONFIG
    assert args.cert_file == defaults.cert_file == f"{DEFAULT_CERT_DIR}/tls.crt"
    assert args.key_file == defaults.key_file == f"{DEFAULT_CERT_DIR}/tls.key"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (
        ports
        == {"https": args.port, "metrics": args.health_port}
        == {
            "https": 8443,
            "metrics": 8080,
        }
    )
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    env = {e["name"]: e["valueFrom"]["fieldRef"] for e in c["env"]}
    # apiVersion spelled out, as the API server stores it: switching to server-side apply
    # later must not conflict over a defaulted field.
    assert env == {
        "POD_NAME": {"apiVersion": "v1", "fieldPath": "metadata.name"},
        "POD_NAMESPACE": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
    }


def test_config_and_tls_files_are_mounted_read_only_where_the_cli_reads_them(
    base: list[Obj],
) -> None:
    pod = one(base, "Deployment", NAME)["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in container(base)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    files = mounts["config-and-tls"]
    assert files["readOnly"] is True
    sources = volumes["config-and-tls"]["projected"]["sources"]
    paths = {
        f"{files['mountPath']}/{item['path']}": (kind, src["name"], item["key"])
        for source in sources
        for kind, src in source.items()
        for item in src["items"]
    }
    assert paths == {
        DEFAULT_CONFIG: (
            "configMap",
            generated_config_map(base)["metadata"]["name"],
            "config.yaml",
        ),
        f"{DEFAULT_CERT_DIR}/tls.crt": ("secret", TLS_SECRET, "tls.crt"),
        f"{DEFAULT_CERT_DIR}/tls.key": ("secret", TLS_SECRET, "tls.key"),
    }
    # 0440: the private key is readable by the webhook's user and group only.
    assert volumes["config-and-tls"]["projected"]["defaultMode"] == 0o440
    assert mounts["tmp"]["mountPath"] == "/tmp"  # noqa: S108 - the pod's own emptyDir
    assert "emptyDir" in volumes["tmp"]


def test_the_service_sends_port_443_to_the_webhook_and_exposes_metrics(base: list[Obj]) -> None:
    service = one(base, "Service", NAME)
    selector = one(base, "Deployment", NAME)["spec"]["selector"]["matchLabels"]

    assert service["spec"]["selector"] == selector
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "https": (443, "https"),
        "metrics": (8080, "metrics"),
    }


def test_the_disruption_budget_keeps_one_replica(base: list[Obj]) -> None:
    pdb = one(base, "PodDisruptionBudget", NAME)
    selector = one(base, "Deployment", NAME)["spec"]["selector"]

    assert pdb["spec"] == {"minAvailable": 1, "selector": selector}


def test_the_cert_manager_overlay_issues_the_secret_the_deployment_mounts() -> None:
    objs = kustomize(MANIFESTS / "overlays" / "cert-manager")
    serving = one(objs, "Certificate", "pull-secret-webhook-serving")
    hook = one(objs, "MutatingWebhookConfiguration", NAME)

    assert serving["spec"]["secretName"] == TLS_SECRET
    assert serving["spec"]["dnsNames"] == pki.service_dns_names(NAME, NAMESPACE)
    assert serving["spec"]["issuerRef"]["name"] == "pull-secret-webhook-ca"
    assert one(objs, "Certificate", "pull-secret-webhook-ca")["spec"]["isCA"] is True
    assert one(objs, "Issuer", "pull-secret-webhook-ca")["spec"]["ca"]["secretName"] == (
        "pull-secret-webhook-ca"
    )
    assert hook["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/pull-secret-webhook-serving"
    }


def test_the_prometheus_overlay_scrapes_the_metrics_port_of_the_service() -> None:
    objs = kustomize(MANIFESTS / "overlays" / "prometheus")
    monitor = one(objs, "ServiceMonitor", NAME)
    service = one(objs, "Service", NAME)

    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


# ------------------------------------------------------------------- image build inputs


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_the_image_runs_serve_as_the_manifests_uid() -> None:
    text = dockerfile()

    assert 'ENTRYPOINT ["python", "-m", "webhook"]' in text
    assert 'CMD ["serve"]' in text
    assert re.findall(r"(?m)^USER (\S+)$", text) == [f"{NONROOT_UID}:{NONROOT_UID}"]


def test_the_image_base_is_pinned_to_a_python_311_patch_release() -> None:
    [image] = re.findall(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", dockerfile())

    # Tag and digest of the multi-platform index (tests/unit/test_workflows.py).
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image)


def test_the_image_installs_only_hash_checked_wheels_from_the_lock() -> None:
    text = dockerfile()

    assert "--require-hashes" in text and "--only-binary=:all:" in text
    assert "requirements.lock" in text


def lock_names() -> set[str]:
    lock = (REPO / "requirements.lock").read_text()
    return {m.lower() for m in re.findall(r"(?m)^([A-Za-z0-9_.-]+)==", lock)}


def requirement_name(spec: str) -> str:
    name = re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_every_runtime_dependency_and_no_dev_tool() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {requirement_name(d) for d in project["dependencies"]}
    dev = {requirement_name(d) for d in project["optional-dependencies"]["dev"]}
    locked = {re.sub(r"[-_.]+", "-", n) for n in lock_names()}

    assert runtime <= locked
    assert not (dev - runtime) & locked


def test_every_locked_package_carries_a_hash() -> None:
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9_.-]+==)", (REPO / "requirements.lock").read_text())
    pinned = [b for b in blocks if "==" in b.split("\n", 1)[0]]

    assert pinned
    for block in pinned:
        assert "--hash=sha256:" in block, block.split("\n", 1)[0]


def test_the_build_context_is_limited_to_what_the_dockerfile_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line.strip() and not line.startswith("#")]

    assert patterns[:3] == ["*", "!requirements.lock", "!webhook/"]
