"""The rendered Helm chart on a real kube-apiserver: every object stored, the webhook
registered, and the certs hook Jobs' commands working with the Jobs' own RBAC.

The release gets its own name and namespace, so nothing collides with the kustomize base
or with other suites on the session control plane. (No kubelet runs here: the hook Jobs'
pods never start, so their commands are run locally under the Jobs' service account.)
"""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from devenv.controlplane import ControlPlane
from tests.e2e.support import get_json
from tests.support.manifests import REPO, Obj, helm_template, one
from webhook.certs import rotation

pytestmark = pytest.mark.controlplane

#: One `webhook certs` run: a few API calls and two EC key generations.
CERTS_TIMEOUT_SECONDS = 60.0
#: The API server refuses TokenRequests shorter than 10 minutes.
TOKEN_SECONDS = 600


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    objects: list[Obj]

    @property
    def fullname(self) -> str:
        return f"{self.name}-pull-secret-webhook"

    def job_args(self, step: str) -> list[str]:
        job = one(self.objects, "Job", f"{self.fullname}-certs-{step}")
        [c] = job["spec"]["template"]["spec"]["containers"]
        args: list[str] = c["args"]
        return args


@pytest.fixture(scope="module")
def release(controlplane: ControlPlane) -> Iterator[Release]:
    name = f"psw{uuid.uuid4().hex[:6]}"
    namespace = f"{name}-helm"
    # The CRDs are the session stack's (cluster-wide): deleting this release's copy at the
    # end would delete every install's records.
    rendered = helm_template("--set", "crds.enabled=false", release=name, namespace=namespace)
    controlplane.kubectl("create", "namespace", namespace)
    manifest = yaml.safe_dump_all(rendered)
    try:
        controlplane.kubectl(
            "apply", "--server-side", "--field-manager=e2e-helm", "-f", "-", input=manifest
        )
        yield Release(name=name, namespace=namespace, objects=rendered)
    finally:
        controlplane.kubectl(
            "delete", "-f", "-", "--wait=false", "--ignore-not-found", input=manifest, check=False
        )
        controlplane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def service_account_kubeconfig(
    controlplane: ControlPlane, namespace: str, name: str, path: Path
) -> Path:
    return controlplane.token_kubeconfig(path, namespace, name, seconds=TOKEN_SECONDS)


def run_job_command(args: list[str], kubeconfig: Path) -> tuple[int, str]:
    """What the hook Job's container runs (the image's entrypoint is `python -m webhook`)."""
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=CERTS_TIMEOUT_SECONDS,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def api_group(obj: Obj) -> str:
    version: str = obj["apiVersion"]
    return version.split("/")[0] if "/" in version else ""


def test_every_rendered_object_is_stored_by_the_api_server(
    controlplane: ControlPlane, release: Release
) -> None:
    for obj in release.objects:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        stored = get_json(
            controlplane, f"{obj['kind'].lower()}.{api_group(obj)}", meta["name"], *where
        )
        assert stored["metadata"]["uid"], (obj["kind"], meta["name"])


def test_the_webhook_is_registered_for_the_release_service(
    controlplane: ControlPlane, release: Release
) -> None:
    [hook] = get_json(controlplane, "mutatingwebhookconfiguration", release.fullname)["webhooks"]

    assert hook["clientConfig"]["service"]["name"] == release.fullname
    assert hook["clientConfig"]["service"]["namespace"] == release.namespace
    assert hook["namespaceSelector"]["matchExpressions"][1]["values"] == [
        "kube-system",
        release.namespace,
    ]
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 10)


def test_the_certs_jobs_succeed_with_only_their_own_rbac(
    controlplane: ControlPlane, release: Release, tmp_path: Path
) -> None:
    kubeconfig = service_account_kubeconfig(
        controlplane, release.namespace, f"{release.fullname}-certs", tmp_path / "kubeconfig"
    )

    created = run_job_command(release.job_args("create"), kubeconfig)
    patched = run_job_command(release.job_args("patch"), kubeconfig)

    assert created[0] == 0, created[1]
    assert patched[0] == 0, patched[1]
    assert "CA: reused" in patched[1]
    secret = get_json(controlplane, "secret", f"{release.fullname}-tls", "-n", release.namespace)
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    config = get_json(controlplane, "mutatingwebhookconfiguration", release.fullname)
    [ca] = rotation.load_certs(base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]))
    assert rotation.issued_by(serving, ca)
    # The patch step (after the release's objects exist) makes the release's webhook
    # configuration the Secrets' owner: `helm uninstall` deletes them with it.
    for name in (f"{release.fullname}-tls", f"{release.fullname}-tls-ca"):
        stored = get_json(controlplane, "secret", name, "-n", release.namespace)
        assert [
            (o["kind"], o["name"], o["uid"]) for o in stored["metadata"]["ownerReferences"]
        ] == [("MutatingWebhookConfiguration", release.fullname, config["metadata"]["uid"])]


@pytest.mark.parametrize(
    "verb, resource, name, allowed",
    [
        ("get", "secrets", "TLS", True),
        ("update", "secrets", "TLS-ca", True),
        ("get", "secrets", "someone-elses", False),
        ("list", "secrets", "", False),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "FULL", True),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "other", False),
    ],
)
def test_the_certs_job_account_reaches_only_its_own_objects(
    controlplane: ControlPlane,
    release: Release,
    verb: str,
    resource: str,
    name: str,
    allowed: bool,
) -> None:
    target = name.replace("TLS", f"{release.fullname}-tls").replace("FULL", release.fullname)
    what = f"{resource}/{target}" if target else resource
    user = f"system:serviceaccount:{release.namespace}:{release.fullname}-certs"

    answer = controlplane.kubectl(
        "auth", "can-i", verb, what, "-n", release.namespace, f"--as={user}", check=False
    )

    assert answer.stdout.strip() == ("yes" if allowed else "no")
