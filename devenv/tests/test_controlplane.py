"""The local control plane behaves like a real cluster where the webhook needs it to."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devenv.controlplane import (
    K8S_VERSION,
    Binaries,
    ControlPlane,
    ControlPlaneError,
)
from devenv.peers.tls import CertificateAuthority
from devenv.processes import wait_until

pytestmark = pytest.mark.controlplane

REPLICAS = 2
# The API server refuses TokenRequests shorter than 10 minutes.
TOKEN_SECONDS = 600
# Deployment -> ReplicaSet -> Pods is two controller hops; seconds on an idle machine.
PODS_TIMEOUT_SECONDS = 60.0
# The API server loads new webhook configurations from an informer: well under a second.
WEBHOOK_REGISTRATION_TIMEOUT_SECONDS = 30.0
MUTATED_ANNOTATION = "e2e.example.com/mutated-by"


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """Decode the JSON in a JWT's header (0) or payload (1), without verifying it."""
    part = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims["aud"]
    return [aud] if isinstance(aud, str) else list(aud)


def test_kubectl_sees_the_pinned_server_version_without_a_skew_warning(
    controlplane: ControlPlane,
) -> None:
    result = controlplane.kubectl("version", "--output=json")

    assert json.loads(result.stdout)["serverVersion"]["gitVersion"] == K8S_VERSION
    assert "WARNING" not in result.stderr


def test_the_admin_kubeconfig_has_cluster_admin_rights(controlplane: ControlPlane) -> None:
    result = controlplane.kubectl("auth", "can-i", "*", "*", "--all-namespaces")

    assert result.stdout.strip() == "yes"


def test_a_new_namespace_gets_its_default_service_account(controlplane: ControlPlane) -> None:
    name = f"e2e-sa-{uuid.uuid4().hex[:8]}"
    controlplane.kubectl("create", "namespace", name)
    try:
        controlplane.wait_for_service_account(name)
        result = controlplane.kubectl("get", "serviceaccount", "default", "-n", name, "-o", "json")
        assert json.loads(result.stdout)["metadata"]["namespace"] == name
    finally:
        controlplane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_deployment_gets_its_pods_created_through_a_replica_set(
    controlplane: ControlPlane, namespace: str
) -> None:
    manifest = textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: {REPLICAS}
          selector:
            matchLabels: {{app: web}}
          template:
            metadata:
              labels: {{app: web}}
            spec:
              containers:
                - name: web
                  image: registry.example.com/team/web:1.0
        """
    )
    controlplane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def pods() -> list[dict[str, Any]]:
        out = controlplane.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return items

    wait_until(
        lambda: len(pods()) == REPLICAS,
        timeout=PODS_TIMEOUT_SECONDS,
        what=f"{REPLICAS} pods of Deployment {namespace}/web",
    )
    for pod in pods():
        assert [owner["kind"] for owner in pod["metadata"]["ownerReferences"]] == ["ReplicaSet"]
        # The ServiceAccount admission plugin ran: default account, projected token volume.
        assert pod["spec"]["serviceAccountName"] == "default"
        assert any(
            volume["name"].startswith("kube-api-access-") for volume in pod["spec"]["volumes"]
        )
        # No nodes and no scheduler: pods are created but never run.
        assert pod["status"]["phase"] == "Pending"


def test_kubectl_create_token_returns_a_jwt_for_the_service_account(
    controlplane: ControlPlane, namespace: str
) -> None:
    token = controlplane.kubectl("create", "token", "default", "-n", namespace).stdout.strip()

    claims = jwt_part(token, 1)
    # RS256 like real clusters: what Entra ID accepts from federated issuers.
    assert jwt_part(token, 0)["alg"] == "RS256"
    assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
    assert audiences(claims) == [controlplane.service_account_issuer]
    assert claims["iss"] == controlplane.service_account_issuer


def test_the_api_server_publishes_the_service_account_signing_key_as_jwks(
    controlplane: ControlPlane, namespace: str
) -> None:
    token = controlplane.kubectl("create", "token", "default", "-n", namespace).stdout.strip()

    jwks = controlplane.api("GET", "/openid/v1/jwks")

    assert jwks.status == 200, jwks.body
    (key,) = jwks.body["keys"]
    assert (key["kty"], key["alg"]) == ("RSA", "RS256")
    assert key["kid"] == jwt_part(token, 0)["kid"]


def test_the_api_server_issues_and_accepts_token_request_tokens(
    controlplane: ControlPlane, namespace: str
) -> None:
    audience = "pull-secret-webhook-e2e"
    created = controlplane.api(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/default/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience], "expirationSeconds": TOKEN_SECONDS},
        },
    )
    assert created.status == 201, created.body
    token = created.body["status"]["token"]
    assert audiences(jwt_part(token, 1)) == [audience]

    review = controlplane.api(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        },
    )
    assert review.status == 201, review.body
    assert review.body["status"]["authenticated"] is True
    assert review.body["status"]["user"]["username"] == (
        f"system:serviceaccount:{namespace}:default"
    )


class MutatingWebhook(ThreadingHTTPServer):
    """A tiny HTTPS admission webhook that annotates every object it is asked about."""

    def __init__(self, ca: CertificateAuthority) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.reviewed: list[str] = []  # uid of every AdmissionReview received
        serving = ca.issue_server_cert("webhook")
        self.socket = serving.server_ssl_context().wrap_socket(self.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}/mutate"


class _WebhookHandler(BaseHTTPRequestHandler):
    server: MutatingWebhook

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        uid = review["request"]["uid"]
        self.server.reviewed.append(uid)
        patch = [
            {"op": "add", "path": "/metadata/annotations", "value": {MUTATED_ANNOTATION: "e2e"}}
        ]
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": uid,
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


@pytest.fixture
def loopback_webhook(tmp_path: Path) -> Iterator[tuple[MutatingWebhook, CertificateAuthority]]:
    ca = CertificateAuthority(tmp_path / "webhook-ca")
    server = MutatingWebhook(ca)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_api_server_calls_a_mutating_webhook_served_on_loopback(
    controlplane: ControlPlane,
    namespace: str,
    loopback_webhook: tuple[MutatingWebhook, CertificateAuthority],
) -> None:
    server, ca = loopback_webhook
    name = f"{namespace}.e2e.example.com"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": name,
                "clientConfig": {
                    "url": server.url,
                    "caBundle": base64.b64encode(ca.ca_path.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                # Only this test's namespace: other tests' pods never reach this webhook.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
            }
        ],
    }
    controlplane.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        pod = ["run", "web", "-n", namespace, "--image=registry.example.com/team/web:1.0"]

        # Server-side dry runs reach webhooks without side effects (sideEffects: None):
        # retry them until the API server has loaded the new configuration.
        def webhook_called() -> bool:
            controlplane.kubectl(*pod, "--dry-run=server")
            return bool(server.reviewed)

        wait_until(
            webhook_called,
            timeout=WEBHOOK_REGISTRATION_TIMEOUT_SECONDS,
            what="the API server to call the webhook",
        )
        reviewed_before = len(server.reviewed)
        controlplane.kubectl(*pod)

        created = json.loads(
            controlplane.kubectl("get", "pod", "web", "-n", namespace, "-o", "json").stdout
        )
        assert created["metadata"]["annotations"][MUTATED_ANNOTATION] == "e2e"
        assert len(server.reviewed) == reviewed_before + 1
    finally:
        controlplane.kubectl("delete", "mutatingwebhookconfiguration", name, check=False)


def test_a_control_plane_that_fails_to_start_leaves_no_processes_or_files(
    controlplane_binaries: Binaries, tmp_path: Path
) -> None:
    false = shutil.which("false")
    assert false is not None
    broken = dataclasses.replace(controlplane_binaries, kube_apiserver=Path(false))

    with pytest.raises(ControlPlaneError, match="kube-apiserver exited with 1"):
        ControlPlane(broken, workdir_parent=tmp_path).start()

    assert list(tmp_path.iterdir()) == []
    assert not processes_mentioning(str(tmp_path))


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (e.g. an etcd left behind)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue  # the process exited while we looked
    return found
