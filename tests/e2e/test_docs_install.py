"""docs/install.md followed on a real kube-apiserver: the kubectl path with the documented
overlay (another namespace, client-side then server-side apply, `webhook certs`) and the
Helm path (the documented namespace commands, `helm install` with the documented values,
the NOTES' certs command, `helm uninstall`).

What differs from the docs, and why: no kubelet runs here, so nothing waits for pods
(`--wait` and the certs hook Jobs are left out; the Jobs' own commands are covered by
test_helm_install.py), the chart comes from the checkout instead of ghcr.io, names get
a unique suffix so the suites sharing this control plane never collide, and the releases
leave the CRDs to the session's stack, which installed them first (`crds.enabled=false`, as
on a cluster where another install owns them; tests/e2e/test_release_node.py installs the
chart with its CRDs on a control plane of its own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.controlplane import ControlPlane
from devenv.processes import wait_until
from tests.e2e.support import delete_install, get_json
from tests.support.docs import block_after
from tests.support.manifests import CHART, REPO, helm_binary, helm_template, one

pytestmark = pytest.mark.controlplane

INSTALL_MD = REPO / "docs" / "install.md"
#: One `webhook certs` run: a few API calls and two EC key generations.
CERTS_TIMEOUT_SECONDS = 60.0
#: The garbage collector in kube-controller-manager deletes dependents within seconds of
#: their owner's deletion (its graph is fed by watches).
GC_TIMEOUT_SECONDS = 60.0
#: helm install/uninstall without --wait: a handful of API calls.
HELM_TIMEOUT_SECONDS = 120
#: The session's stack applied the CRDs (kubectl): Helm would refuse to take them over.
CRDS_OWNED_ELSEWHERE = ("--set", "crds.enabled=false")


def sh_block_after(marker: str) -> list[str]:
    """The commands of the first ```sh block containing ``marker`` (continuations joined)."""
    text = INSTALL_MD.read_text()
    for match in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        if marker in match.group(1):
            joined = match.group(1).replace("\\\n", " ")
            return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]
    raise AssertionError(f"no sh block with {marker!r} in install.md")


def run(cmd: list[str], kubeconfig: Path, timeout: float = HELM_TIMEOUT_SECONDS) -> str:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(REPO / ".pytest_cache" / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(REPO / ".pytest_cache" / "helm" / "config"),
        "HELM_DATA_HOME": str(REPO / ".pytest_cache" / "helm" / "data"),
    }
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def secret_names(controlplane: ControlPlane, namespace: str) -> set[str]:
    items = get_json(controlplane, "secrets", "-n", namespace)["items"]
    return {s["metadata"]["name"] for s in items}


def owners(controlplane: ControlPlane, namespace: str, name: str) -> list[tuple[str, str]]:
    secret = get_json(controlplane, "secret", name, "-n", namespace)
    return [(o["kind"], o["name"]) for o in secret["metadata"].get("ownerReferences", [])]


def certs(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", "certs", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=CERTS_TIMEOUT_SECONDS,
        check=False,
    )


# --------------------------------------------------------------------------- kubectl


def write_docs_overlay(root: Path, namespace: str, suffix: str) -> Path:
    """install.md's overlay (config, image, follow-renames.yaml) with its "Another
    namespace or name" additions, plus this test's name suffix for the cluster-wide names."""
    shutil.copytree(REPO / "manifests", root / "pull-secret-webhook" / "manifests")
    mine = root / "my-install"
    mine.mkdir()
    kustomization = yaml.safe_load(block_after(INSTALL_MD, "configMapGenerator"))
    rename = yaml.safe_load(block_after(INSTALL_MD, "namePrefix: team-"))
    kustomization.update(rename, namespace=namespace, nameSuffix=f"-{suffix}")
    (mine / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    (mine / "config.yaml").write_text((REPO / "manifests" / "base" / "config.yaml").read_text())
    shutil.copy(REPO / "manifests" / "follow-renames.yaml", mine / "follow-renames.yaml")
    return mine


@pytest.fixture(scope="module")
def overlay(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    suffix = f"docs{uuid.uuid4().hex[:6]}"
    namespace = f"psw-{suffix}"
    path = write_docs_overlay(tmp_path_factory.mktemp("docs"), namespace, suffix)
    try:
        yield path, namespace, f"team-pull-secret-webhook-{suffix}"
    finally:
        delete_install(controlplane, path)


def test_the_documented_overlay_applies_client_side_then_server_side(
    controlplane: ControlPlane, overlay: Any, tmp_path: Path
) -> None:
    path, namespace, name = overlay

    controlplane.kubectl("apply", "-k", str(path))
    # Switching to server-side apply later must not conflict (the env fieldRefs carry
    # the apiVersion the API server would default).
    switched = controlplane.kubectl("apply", "--server-side", "-k", str(path), check=False)

    assert switched.returncode == 0, switched.stderr
    [hook] = get_json(controlplane, "mutatingwebhookconfiguration", name)["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": name,
        "namespace": namespace,
        "path": "/mutate",
        "port": 443,
    }
    [excluded] = [
        e["values"]
        for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded == ["kube-system", namespace]
    # The API server compiled and kept the mirror-pod condition.
    assert [c["name"] for c in hook["matchConditions"]] == ["not-a-mirror-pod"]
    deployment = get_json(controlplane, "deployment", name, "-n", namespace)
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "myregistry.example.com/pull-secret-webhook:0.1.0"
    # The renamed install's write policy binds its renamed ServiceAccount: with that
    # account's real token, a write the policy must refuse is refused by the policy.
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert account == name
    kubeconfig = controlplane.token_kubeconfig(tmp_path / "webhook.kubeconfig", namespace, account)

    def dry_run_write() -> subprocess.CompletedProcess[str]:
        return controlplane.kubectl(
            "--kubeconfig",
            str(kubeconfig),
            "create",
            "secret",
            "generic",
            "not-a-pull-secret",
            "-n",
            namespace,
            "--dry-run=server",
            check=False,
        )

    # The API server enforces a policy once its own watch of policies and bindings has it,
    # a moment after the apply: the write is refused within a few seconds, never accepted
    # for good.
    attempts: list[subprocess.CompletedProcess[str]] = []

    def refused_once() -> bool:
        attempts.append(dry_run_write())
        return attempts[-1].returncode != 0

    wait_until(
        refused_once,
        timeout=20.0,
        what="the renamed write policy to refuse a write it must refuse",
        interval=0.5,
    )
    refused = attempts[-1]
    policy = name.replace("pull-secret-webhook", "pull-secret-webhook-secrets")
    assert f"ValidatingAdmissionPolicy '{policy}'" in refused.stderr


def test_the_documented_certs_command_makes_secrets_owned_by_the_registration(
    controlplane: ControlPlane, overlay: Any
) -> None:
    path, namespace, name = overlay
    controlplane.kubectl("apply", "-k", str(path))
    # "Then python -m webhook certs --namespace tools --secret pull-secret-webhook-tls",
    # plus the test's suffixed Service and webhook configuration names.
    [command] = [line for line in sh_block_after("--namespace tools") if "certs" in line]
    args = command.split()[4:]  # after "python -m webhook certs"
    args[args.index("--namespace") + 1] = namespace

    done = certs(controlplane.kubeconfig, *args, f"--service={name}", f"--webhook-config={name}")

    assert done.returncode == 0, done.stderr
    for secret in ("pull-secret-webhook-tls", "pull-secret-webhook-tls-ca"):
        assert owners(controlplane, namespace, secret) == [("MutatingWebhookConfiguration", name)]


def test_certs_in_a_missing_namespace_fails_before_claiming_anything(
    controlplane: ControlPlane,
) -> None:
    missing = f"nope-{uuid.uuid4().hex[:6]}"

    done = certs(
        controlplane.kubeconfig, f"--namespace={missing}", "--secret=x", "--webhook-config="
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert f"namespace {missing} not found" in done.stderr


# ------------------------------------------------------------------------------ helm


@pytest.fixture(scope="module")
def release(
    controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """The Helm block of install.md, run as written apart from the changes in the module
    docstring; yields (release, namespace, helm install output)."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"psw{suffix}", f"psw-helm-{suffix}"
    values = tmp_path_factory.mktemp("helm") / "my-values.yaml"
    values.write_text(block_after(INSTALL_MD, "podLabels:"))
    helm = str(helm_binary())
    commands = sh_block_after("helm install pull-secret-webhook oci://")
    assert commands[:2] == [
        "kubectl create namespace pull-secret-webhook",
        "kubectl label namespace pull-secret-webhook pod-security.kubernetes.io/enforce=restricted",
    ]
    for command in commands[:2]:
        controlplane.kubectl(*command.replace("pull-secret-webhook", namespace, 1).split()[1:])
    install = commands[2].split()
    assert install[:4] == ["helm", "install", "pull-secret-webhook", install[3]]
    assert install[3].startswith("oci://ghcr.io/")
    flags = [f for f in install[4:] if f != "--wait"]
    flags = [namespace if f == "pull-secret-webhook" else f for f in flags]
    flags = [str(values) if f == "my-values.yaml" else f for f in flags]
    version = flags.index("--version")
    del flags[version : version + 2]  # the checkout's chart is that version
    output = run(
        [
            helm,
            "install",
            name,
            str(CHART),
            *flags,
            "--set",
            "certsJob.enabled=false",
            *CRDS_OWNED_ELSEWHERE,
        ],
        controlplane.kubeconfig,
    )
    try:
        yield name, namespace, output
    finally:
        run(
            [helm, "uninstall", name, "--namespace", namespace, "--ignore-not-found"],
            controlplane.kubeconfig,
        )
        controlplane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_helm_install_as_documented_stores_the_release_in_a_restricted_namespace(
    controlplane: ControlPlane, release: tuple[str, str, str]
) -> None:
    name, namespace, output = release

    labels = get_json(controlplane, "namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "STATUS: deployed" in output
    assert 'does not enforce the "restricted" Pod Security Standard' not in output
    # The subject the identity guides' federated credential / trust policy must name.
    account = get_json(
        controlplane, "serviceaccount", f"{name}-pull-secret-webhook", "-n", namespace
    )
    assert f"subject: system:serviceaccount:{namespace}:{account['metadata']['name']}" in output
    deployment = get_json(
        controlplane, "deployment", f"{name}-pull-secret-webhook", "-n", namespace
    )
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == (
        "true"
    )


def test_helm_uninstall_removes_the_certificate_secrets(
    controlplane: ControlPlane, release: tuple[str, str, str]
) -> None:
    name, namespace, output = release
    fullname = f"{name}-pull-secret-webhook"
    # The NOTES say how to make the certificates when the hook Jobs are off: run that.
    notes = " ".join(output.replace("\\\n", " ").split())
    command = re.search(r"python -m webhook certs (.*?--webhook-config \S+)", notes)
    assert command, output
    made = certs(controlplane.kubeconfig, *command.group(1).split())
    assert made.returncode == 0, made.stderr
    assert {f"{fullname}-tls", f"{fullname}-tls-ca"} <= secret_names(controlplane, namespace)

    run(
        [str(helm_binary()), "uninstall", name, "--namespace", namespace],
        controlplane.kubeconfig,
    )

    wait_until(
        lambda: (
            not {f"{fullname}-tls", f"{fullname}-tls-ca"} & secret_names(controlplane, namespace)
        ),
        timeout=GC_TIMEOUT_SECONDS,
        what="the garbage collector deletes the certificate Secrets",
    )


def test_the_notes_warn_about_a_namespace_without_the_restricted_label(
    controlplane: ControlPlane, namespace: str
) -> None:
    # --dry-run=server lets the chart's lookup see the real namespace.
    output = run(
        [
            str(helm_binary()),
            "install",
            "psw-notes",
            str(CHART),
            "--namespace",
            namespace,
            "--dry-run=server",
            *CRDS_OWNED_ELSEWHERE,
        ],
        controlplane.kubeconfig,
    )

    assert 'does not enforce the "restricted" Pod Security Standard' in output
    assert f"kubectl label namespace {namespace} pod-security.kubernetes.io/enforce=restricted" in (
        output
    )


def priority_level_of(controlplane: ControlPlane, token: str, path: str) -> str:
    """The priority level the API server's flow control gave one request of ``token``'s
    user (the UID it reports in X-Kubernetes-PF-PriorityLevel-UID), as the level's name."""
    request = urllib.request.Request(  # noqa: S310 - the control plane's https URL
        f"{controlplane.server}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    context = ssl.create_default_context(cafile=str(controlplane.ca_cert))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as r:  # noqa: S310
            uid = r.headers["X-Kubernetes-PF-PriorityLevel-UID"]
    except urllib.error.HTTPError as e:  # a 403 is classified (and answered) all the same
        uid = e.headers["X-Kubernetes-PF-PriorityLevel-UID"]
    levels = get_json(controlplane, "prioritylevelconfigurations")["items"]
    return str(next(p["metadata"]["name"] for p in levels if p["metadata"]["uid"] == uid))


def test_the_documented_flow_schema_sends_the_webhooks_requests_to_workload_high(
    controlplane: ControlPlane,
) -> None:
    schema = yaml.safe_load(block_after(INSTALL_MD, "kind: FlowSchema"))
    component = REPO / "manifests" / "components" / "flow-schema" / "flowschema.yaml"
    assert schema == yaml.safe_load(component.read_text())  # the doc shows the component's
    subject = schema["spec"]["rules"][0]["subjects"][0]["serviceAccount"]
    # The documented subject is the default install's ServiceAccount.
    base = yaml.safe_load((REPO / "manifests" / "base" / "serviceaccount.yaml").read_text())
    assert subject == {"namespace": base["metadata"]["namespace"], "name": base["metadata"]["name"]}
    # Applied for a ServiceAccount of this test's own, so no other suite's requests move.
    suffix = uuid.uuid4().hex[:6]
    namespace, name = f"psw-fs-{suffix}", f"psw-{suffix}"
    schema["metadata"]["name"] = f"psw-docs-{suffix}"
    subject.update(namespace=namespace, name=name)
    controlplane.kubectl("create", "namespace", namespace)
    try:
        controlplane.kubectl("create", "serviceaccount", name, "-n", namespace)
        token = controlplane.service_account_token(namespace, name, seconds=600)
        path = f"/api/v1/namespaces/{namespace}/secrets"
        assert priority_level_of(controlplane, token, path) == "workload-low"
        controlplane.kubectl("apply", "-f", "-", input=json.dumps(schema))
        # The API server takes up a new FlowSchema from its informer within moments.
        wait_until(
            lambda: priority_level_of(controlplane, token, path) == "workload-high",
            timeout=30,
            what="the FlowSchema to classify the ServiceAccount's requests",
        )
        # The chart's, rendered for another release, is accepted as it is.
        rendered = helm_template(
            "--set", "flowSchema.enabled=true", release=f"psw-{suffix}", namespace=namespace
        )  # fmt: skip
        chart_schema = one(rendered, "FlowSchema")
        controlplane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(chart_schema))
    finally:
        controlplane.kubectl("delete", "flowschema", schema["metadata"]["name"], check=False)
        controlplane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_host_network_is_refused_in_a_restricted_namespace_until_the_documented_label(
    controlplane: ControlPlane, namespace: str
) -> None:
    controlplane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    # --dry-run=server lets the chart's lookup see the real namespace.
    install = [
        str(helm_binary()), "install", "psw-hostnet", str(CHART), "--namespace", namespace,
        "--dry-run=server", "--set", "hostNetwork=true",
        "--set", "webhook.port=10260", "--set", "webhook.healthPort=10261",
        *CRDS_OWNED_ELSEWHERE,
    ]  # fmt: skip
    env = {**os.environ, "KUBECONFIG": str(controlplane.kubeconfig)}
    refused = subprocess.run(
        install, capture_output=True, text=True, env=env, timeout=HELM_TIMEOUT_SECONDS, check=False
    )
    assert refused.returncode != 0
    assert "forbids host networking" in refused.stderr
    assert "pod-security.kubernetes.io/enforce=privileged" in refused.stderr

    # docs/install.md, "Network reachability": the label command, for this namespace.
    [label] = [line for line in sh_block_after("enforce=privileged") if "kubectl" in line]
    controlplane.kubectl(*label.replace("pull-secret-webhook", namespace).split()[1:])
    output = run(install, controlplane.kubeconfig)

    assert "hostNetwork: true" in output  # the rendered Deployment, accepted by the dry run
    assert 'does not enforce the "restricted"' not in output
