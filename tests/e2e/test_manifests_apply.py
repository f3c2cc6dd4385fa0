"""manifests/ on a real kube-apiserver: applied server-side, certificates made and rotated
with ``python -m webhook certs``, and the caBundle kept across re-applies.

The base is applied through a throw-away overlay that only renames it (its own namespace
and a name suffix) so it never collides with the objects other suites install under the
real names on the same session control plane.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devenv.controlplane import ControlPlane
from devenv.processes import wait_until
from tests.e2e.support import delete_install, get_json
from tests.support.manifests import MANIFESTS, REPO, objects
from webhook.certs import cluster, rotation
from webhook.cli import certs as certs_command

pytestmark = pytest.mark.controlplane

#: Deployment -> ReplicaSet -> Pods takes two controller hops: seconds on an idle machine.
PODS_TIMEOUT_SECONDS = 60.0
#: One `webhook certs` run: a few API calls and two EC key generations.
CERTS_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Install:
    overlay: Path
    namespace: str
    name: str

    @property
    def suffix(self) -> str:
        return self.namespace.removeprefix("psw-")


def write_overlay(directory: Path, namespace: str, suffix: str) -> Path:
    directory.mkdir(parents=True)
    # kustomize takes a base only by relative path.
    base = os.path.relpath(MANIFESTS, directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {base}\n"
        f"namespace: {namespace}\n"
        f"nameSuffix: -{suffix}\n"
        # What docs/install.md's overlay carries: the write policy follows the renamed
        # ServiceAccount.
        "replacements:\n  - path: follow-renames.yaml\n"
    )
    shutil.copy(MANIFESTS / "follow-renames.yaml", directory / "follow-renames.yaml")
    return directory


@pytest.fixture(scope="module")
def installed(
    controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    suffix = f"e2e-{uuid.uuid4().hex[:6]}"
    namespace = f"psw-{suffix}"
    overlay = write_overlay(tmp_path_factory.mktemp("overlay") / "k", namespace, suffix)
    controlplane.kubectl(
        "apply", "--server-side", "--field-manager=e2e-install", "-k", str(overlay)
    )
    try:
        yield Install(overlay=overlay, namespace=namespace, name=f"pull-secret-webhook-{suffix}")
    finally:
        delete_install(controlplane, overlay)


def run_certs(controlplane: ControlPlane, install: Install, *extra: str) -> tuple[int, str]:
    """The real CLI, as an operator runs it, against the control plane."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "certs",
            "--kubeconfig",
            str(controlplane.kubeconfig),
            "--namespace",
            install.namespace,
            "--service",
            install.name,
            "--secret",
            "pull-secret-webhook-tls",
            "--webhook-config",
            install.name,
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=CERTS_TIMEOUT_SECONDS,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def rotate_ca(controlplane: ControlPlane, install: Install) -> tuple[int, str]:
    """``certs --rotate-ca``, in-process with the CLI's own parser and flag name."""
    from io import StringIO

    from webhook.cli import build_parser

    args = build_parser().parse_args(
        [
            "certs",
            "--kubeconfig",
            str(controlplane.kubeconfig),
            "--namespace",
            install.namespace,
            "--service",
            install.name,
            "--secret",
            "pull-secret-webhook-tls",
            "--webhook-config",
            install.name,
        ]
    )
    args.rotate_ca = True
    out = StringIO()
    code = certs_command.main(args, out, out)
    return code, out.getvalue()


def ca_bundle(controlplane: ControlPlane, install: Install) -> list[x509.Certificate]:
    config = get_json(controlplane, "mutatingwebhookconfiguration", install.name)
    bundles = {h["clientConfig"].get("caBundle", "") for h in config["webhooks"]}
    assert len(bundles) == 1
    return rotation.load_certs(base64.b64decode(bundles.pop()))


def tls_secret(controlplane: ControlPlane, install: Install, name: str) -> dict[str, bytes]:
    secret = get_json(controlplane, "secret", name, "-n", install.namespace)
    assert secret["type"] == "kubernetes.io/tls"
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def test_every_object_of_the_base_is_stored_by_the_api_server(
    controlplane: ControlPlane, installed: Install
) -> None:
    rendered = objects(controlplane.kubectl("kustomize", str(installed.overlay)).stdout)

    for obj in rendered:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        stored = get_json(
            controlplane, f"{obj['kind'].lower()}.{api_group(obj)}", meta["name"], *where
        )
        assert stored["metadata"]["uid"], (obj["kind"], meta["name"])
    # 15, the certificate renewal CronJob with its identity, and the records policy with
    # its binding
    assert len(rendered) == 23


def api_group(obj: dict[str, Any]) -> str:
    version: str = obj["apiVersion"]
    return version.split("/")[0] if "/" in version else ""


def test_the_webhook_registration_is_accepted_unchanged(
    controlplane: ControlPlane, installed: Install
) -> None:
    [hook] = get_json(controlplane, "mutatingwebhookconfiguration", installed.name)["webhooks"]

    assert hook["name"] == "pods.pull-secret-webhook.io"
    assert hook["clientConfig"]["service"] == {
        "name": installed.name,
        "namespace": installed.namespace,
        "path": "/mutate",
        "port": 443,
    }
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["timeoutSeconds"] == 10
    assert hook["objectSelector"]["matchExpressions"][0]["operator"] == "NotIn"


def test_the_deployment_pods_pass_the_restricted_pod_security_standard(
    controlplane: ControlPlane, installed: Install
) -> None:
    # The namespace enforces `restricted`: the ReplicaSet could not create the pods if the
    # pod spec broke it (no scheduler or kubelet here, so they then stay Pending).
    def pods() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = get_json(controlplane, "pods", "-n", installed.namespace)[
            "items"
        ]
        return items

    wait_until(lambda: len(pods()) == 2, timeout=PODS_TIMEOUT_SECONDS, what="2 webhook pods")
    ns = get_json(controlplane, "namespace", installed.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    "verb, resource, where, allowed",
    [
        # RBAC (what this checks) grants Secret writes everywhere; the shipped
        # ValidatingAdmissionPolicy narrows them (test_least_privilege.py proves that).
        ("create", "secrets", "default", True),
        ("delete", "secrets", "kube-public", True),
        ("get", "secrets", "default", False),
        ("list", "secrets", "", False),
        ("watch", "secrets", "OWN", False),
        ("list", "pods", "default", True),
        ("watch", "pods", "", True),
        ("watch", "namespaces", "", True),
        ("create", "serviceaccounts/token", "default", False),
        ("get", "serviceaccounts", "default", False),
        ("create", "events", "default", True),
        ("update", "leases.coordination.k8s.io", "OWN", True),
        ("create", "managedpullsecrets.pull-secret-webhook.io", "OWN", True),
        ("create", "managedpullsecrets.pull-secret-webhook.io", "default", False),
        ("update", "leases.coordination.k8s.io", "default", False),
        ("create", "pods", "default", False),
        ("update", "serviceaccounts", "default", False),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", False),
    ],
)
def test_the_webhook_service_account_may_do_what_it_needs_and_no_more(
    controlplane: ControlPlane,
    installed: Install,
    verb: str,
    resource: str,
    where: str,
    allowed: bool,
) -> None:
    user = f"system:serviceaccount:{installed.namespace}:{installed.name}"
    scope = ["-n", installed.namespace if where == "OWN" else where] if where else []

    resource, _, sub = resource.partition("/")
    subresource = [f"--subresource={sub}"] if sub else []

    answer = controlplane.kubectl(
        "auth", "can-i", verb, resource, *subresource, *scope, f"--as={user}", check=False
    )

    assert answer.stdout.strip() == ("yes" if allowed else "no")


def test_certs_creates_the_mounted_secret_and_the_ca_bundle_that_verifies_it(
    controlplane: ControlPlane, installed: Install
) -> None:
    code, out = run_certs(controlplane, installed)

    assert code == 0, out
    tls = tls_secret(controlplane, installed, "pull-secret-webhook-tls")
    [ca] = ca_bundle(controlplane, installed)
    serving = x509.load_pem_x509_certificate(tls["tls.crt"])
    assert rotation.issued_by(serving, ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{installed.name}.{installed.namespace}.svc" in names.get_values_for_type(x509.DNSName)
    assert rotation.load_certs(tls["ca.crt"]) == [ca]
    assert set(tls_secret(controlplane, installed, "pull-secret-webhook-tls-ca")) == {
        "tls.crt",
        "tls.key",
    }
    assert "PRIVATE KEY" not in out


def test_a_rerun_keeps_the_ca_and_reissues_the_serving_certificate(
    controlplane: ControlPlane, installed: Install
) -> None:
    assert run_certs(controlplane, installed)[0] == 0
    before_ca = ca_bundle(controlplane, installed)
    before = tls_secret(controlplane, installed, "pull-secret-webhook-tls")["tls.crt"]

    code, out = run_certs(controlplane, installed)

    assert code == 0, out
    assert ca_bundle(controlplane, installed) == before_ca
    assert tls_secret(controlplane, installed, "pull-secret-webhook-tls")["tls.crt"] != before
    assert "CA: reused" in out


def test_rotating_the_ca_publishes_old_and_new_before_the_new_pair(
    controlplane: ControlPlane, installed: Install
) -> None:
    assert run_certs(controlplane, installed)[0] == 0
    [old] = ca_bundle(controlplane, installed)

    code, out = rotate_ca(controlplane, installed)

    assert code == 0, out
    new, kept = ca_bundle(controlplane, installed)
    assert kept == old and new != old
    serving = x509.load_pem_x509_certificate(
        tls_secret(controlplane, installed, "pull-secret-webhook-tls")["tls.crt"]
    )
    assert rotation.issued_by(serving, new)
    # "patched caBundle" is printed before "updated Secret ...-tls": trust before use.
    assert out.index("patched caBundle") < out.index(
        "Secret " + installed.namespace + "/pull-secret-webhook-tls ("
    )


@pytest.mark.parametrize("apply", ["server-side", "client-side"])
def test_re_applying_the_manifests_keeps_the_ca_bundle(
    controlplane: ControlPlane, installed: Install, apply: str
) -> None:
    assert run_certs(controlplane, installed)[0] == 0
    bundle = ca_bundle(controlplane, installed)

    flags = ["--server-side", "--field-manager=e2e-install"] if apply == "server-side" else []
    controlplane.kubectl("apply", *flags, "-k", str(installed.overlay))

    assert ca_bundle(controlplane, installed) == bundle


def test_certs_refuses_a_webhook_whose_ca_bundle_cert_manager_injects(
    controlplane: ControlPlane, installed: Install
) -> None:
    annotation = f"{cluster.CERT_MANAGER_ANNOTATION}={installed.namespace}/serving"
    controlplane.kubectl("annotate", "mutatingwebhookconfiguration", installed.name, annotation)
    try:
        code, out = run_certs(controlplane, installed)
    finally:
        controlplane.kubectl(
            "annotate",
            "mutatingwebhookconfiguration",
            installed.name,
            f"{cluster.CERT_MANAGER_ANNOTATION}-",
        )

    assert code == 1
    assert "cert-manager" in out


def test_the_write_policy_follows_a_renamed_install(
    controlplane: ControlPlane, installed: Install, tmp_path: Path
) -> None:
    """The overlay moved the webhook to another namespace under another name: the
    ValidatingAdmissionPolicy must still bound what that ServiceAccount writes."""
    token = controlplane.kubectl(
        "create", "token", installed.name, "-n", installed.namespace, "--duration=10m"
    ).stdout.strip()
    target = f"vap-{uuid.uuid4().hex[:6]}"
    controlplane.kubectl("create", "namespace", target)
    controlplane.kubectl("label", "namespace", target, "pull-secret-webhook/inject=enabled")

    def create_as_webhook(namespace: str, secret_type: str) -> subprocess.CompletedProcess[str]:
        doc = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": secret_type,
            "metadata": {
                "name": f"psw-{uuid.uuid4().hex[:6]}",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "pull-secret-webhook"},
            },
            "stringData": {".dockerconfigjson": '{"auths":{}}'},
        }
        return subprocess.run(
            [
                str(controlplane.binaries.kubectl),
                "--token",
                token,
                "--server",
                controlplane.server,
                "--certificate-authority",
                str(controlplane.ca_cert),
                "create",
                "-f",
                "-",
            ],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)},
        )

    try:
        allowed = create_as_webhook(target, "kubernetes.io/dockerconfigjson")
        assert allowed.returncode == 0, allowed.stderr
        for namespace, secret_type in (
            (target, "Opaque"),
            (installed.namespace, "kubernetes.io/dockerconfigjson"),
        ):
            refused = create_as_webhook(namespace, secret_type)
            assert refused.returncode != 0, (namespace, secret_type)
            assert "denied request" in refused.stderr, refused.stderr
    finally:
        controlplane.kubectl("delete", "namespace", target, "--wait=false", check=False)
