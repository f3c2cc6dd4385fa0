"""The kubelet pulls with the secrets the webhook wrote: pods on a real node reach Running.

A real kubelet and containerd (see devenv/node) pull from the stack's registries: the
ACR login servers (token auth through the emulator, over TLS) and the ECR-style registry
(basic auth). Nothing here writes a secret by hand.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devenv.controlplane import ControlPlane
from devenv.controlplane.cluster import SERVICE_ACCOUNT_ISSUER
from devenv.node.harness import Node
from devenv.node.pods import (
    event_counts,
    get_pod,
    pod_state,
    pull_events,
    running_pod,
    wait_for_log,
    wait_for_pod,
)
from devenv.peers.fixtures import require_binaries
from devenv.peers.registry import REGISTRY_BINARY, SEED_REPOSITORY, SEED_TAG, SKOPEO_BINARY
from devenv.peers.traffic import ACR_EXCHANGE
from devenv.stack import Stack, running_stack
from tests.e2e.support import get_json, ns_name, pull_secret_names
from tests.support.node import apply, controlplane, node

#: Fixtures, used by name.
__all__ = ["controlplane", "node"]


@pytest.fixture(scope="module")
def stack(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    with running_stack(controlplane, tmp_path_factory.mktemp("stack"), refresh_fraction=0.1) as s:
        yield s


def pull_secrets(cp: ControlPlane, namespace: str, pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [get_json(cp, "secret", n, "-n", namespace) for n in pull_secret_names(pod)]


def registries_in(secret: dict[str, Any]) -> list[str]:
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    return sorted(config["auths"])


def test_first_pod_of_a_fresh_namespace_runs_with_the_webhooks_acr_and_ecr_secrets(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("first"))
    apply(cp, ns, running_pod("p", {"acr": stack.acr_image, "ecr": stack.ecr_image}))
    pod, waited = wait_for_pod(cp, ns, "p", timeout=60)
    assert pod["spec"]["nodeName"] == node.name
    # Exactly the webhook's secrets: one per registry, each for its own registry only.
    secrets = pull_secrets(cp, ns, pod)
    assert sorted(r for s in secrets for r in registries_in(s)) == sorted(
        [stack.acr_image.split("/")[0], stack.ecr_image.split("/")[0]]
    )
    assert all(s["type"] == "kubernetes.io/dockerconfigjson" for s in secrets)
    assert wait_for_log(node, ns, "p", "acr") == ["acr: pulled 37 bytes of hello.txt"]
    assert wait_for_log(node, ns, "p", "ecr") == ["ecr: pulled 37 bytes of hello.txt"]
    events = pull_events(cp, ns, "p")
    assert sum(e.startswith("Pulled:") for e in events) == 2, events
    print(f"first pod Running {waited:.1f}s after admission")


def test_a_pod_pulls_from_artifact_registry_with_the_webhooks_google_token_and_runs(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    assert stack.gar is not None
    ns = stack.labelled_namespace(ns_name("gar"))
    apply(cp, ns, running_pod("p", {"gar": stack.gar_image}))
    pod, waited = wait_for_pod(cp, ns, "p", timeout=60)
    [secret] = pull_secrets(cp, ns, pod)
    assert registries_in(secret) == [stack.gar.host]
    assert wait_for_log(node, ns, "p", "gar") == ["gar: pulled 37 bytes of hello.txt"]
    print(f"Artifact Registry pod Running {waited:.1f}s after admission")


def test_pod_runs_with_its_own_service_accounts_identity(stack: Stack, node: Node) -> None:
    cp = stack.controlplane
    assert stack.acr_tenant is not None
    ns = stack.labelled_namespace(ns_name("tenant"))
    stack.tenant_service_account(ns, "builder")
    image = f"{stack.acr_tenant.login_server}/{SEED_REPOSITORY}:{SEED_TAG}"
    apply(cp, ns, running_pod("p", {"app": image}, service_account="builder"))
    pod, _ = wait_for_pod(cp, ns, "p")
    [secret] = pull_secrets(cp, ns, pod)
    assert registries_in(secret) == [stack.acr_tenant.login_server]
    assert wait_for_log(node, ns, "p", "app") == ["app: pulled 37 bytes of hello.txt"]


def test_a_tenant_without_access_cannot_pull_with_what_the_webhook_gave_it(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    assert stack.emulator is not None and stack.acr_tenant is not None
    ns = stack.labelled_namespace(ns_name("other"))
    # Its own federated identity, but no role on the registry (another tenant's).
    app = stack.emulator.register_app(stack.tenant)
    stack.emulator.add_federated_credential(
        stack.tenant,
        app.client_id,
        issuer=SERVICE_ACCOUNT_ISSUER,
        subject=f"system:serviceaccount:{ns}:intruder",
    )
    cp.kubectl("create", "serviceaccount", "intruder", "-n", ns)
    cp.kubectl(
        "annotate", "serviceaccount", "intruder", "-n", ns,
        f"azure.workload.identity/client-id={app.client_id}",
        f"azure.workload.identity/tenant-id={stack.tenant}",
    )  # fmt: skip
    image = f"{stack.acr_tenant.login_server}/{SEED_REPOSITORY}:{SEED_TAG}"
    warnings = apply(cp, ns, running_pod("p", {"app": image}, service_account="intruder"))
    assert "401" in warnings
    pod, _ = wait_for_pod(cp, ns, "p", running=False)
    [(reason, message)] = pod_state(pod).waiting.values()
    assert reason in {"ErrImagePull", "ImagePullBackOff"}
    assert "401" in message or any("401" in e for e in pull_events(cp, ns, "p")), message


def test_pod_in_an_unlabelled_namespace_gets_nothing_and_the_registry_refuses_it(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("plain"), inject=False)
    apply(cp, ns, running_pod("p", {"app": stack.acr_image}))
    pod, _ = wait_for_pod(cp, ns, "p", running=False)
    assert not pod["spec"].get("imagePullSecrets")
    events = pull_events(cp, ns, "p")
    assert any(e.startswith("Failed:") and "401 Unauthorized" in e for e in events), events
    pod, _ = wait_for_pod(cp, ns, "p", running=False)
    assert pod_state(pod).phase == "Pending"


def test_slow_token_service_pod_admitted_with_a_warning_runs_on_the_kubelets_retry(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    assert stack.emulator is not None and stack.acr_slow is not None
    ns = stack.labelled_namespace(ns_name("slow"))
    # The token service stalls past the admission budget (6 s of timeoutSeconds 10) and
    # fails, then keeps failing until the kubelet's first pull has failed: the secret can
    # only come from the webhook's background retry.
    traffic = stack.emulator.traffic
    listener = stack.acr_slow.login_server
    traffic.inject_fault(ACR_EXCHANGE, status=503, delay=8.0, count=1, listener=listener)
    outage = traffic.inject_fault(ACR_EXCHANGE, status=503, count=1000, listener=listener)
    image = f"{stack.acr_slow.login_server}/{SEED_REPOSITORY}:{SEED_TAG}"
    admitted = time.monotonic()
    warnings = apply(cp, ns, running_pod("p", {"app": image}))
    admission = time.monotonic() - admitted
    assert "not ready" in warnings
    wait_for_pod(cp, ns, "p", running=False, timeout=30)  # the kubelet's first pull: 401
    outage.remaining = 0
    recovered = time.monotonic() - admitted
    wait_for_pod(cp, ns, "p", timeout=120)
    running = time.monotonic() - admitted
    pulls = event_counts(cp, ns, "p").get("Pulling", 0)
    print(
        f"admission {admission:.1f}s; token service back {recovered:.1f}s and pod Running "
        f"{running:.1f}s after admission; {pulls} pull attempts by the kubelet"
    )
    # The first attempt failed; the pod started on the kubelet's first or second retry.
    assert 2 <= pulls <= 3, pull_events(cp, ns, "p")
    assert wait_for_log(node, ns, "p", "app") == ["app: pulled 37 bytes of hello.txt"]


def test_renewed_in_place_and_recreated_secrets_keep_new_pods_pulling(
    stack: Stack, node: Node
) -> None:
    cp = stack.controlplane
    assert stack.acr_short is not None
    ns = stack.labelled_namespace(ns_name("renew"))
    image = f"{stack.acr_short.login_server}/{SEED_REPOSITORY}:{SEED_TAG}"
    apply(cp, ns, running_pod("p1", {"app": image}))
    pod, _ = wait_for_pod(cp, ns, "p1")
    [first] = pull_secrets(cp, ns, pod)
    name = first["metadata"]["name"]

    # The short-lived token (150 s, renewed after a tenth plus the secret's own place in
    # the window: 15-52.5 s) is renewed in place, before its last minute (90 s).
    deadline = time.monotonic() + 90
    while True:
        current = get_json(cp, "secret", name, "-n", ns)
        if current["data"] != first["data"]:
            break
        assert time.monotonic() < deadline, "the secret was not renewed in 90 s"
        time.sleep(0.5)
    assert current["metadata"]["uid"] == first["metadata"]["uid"]
    # The image is on the node: with KubeletEnsureSecretPulledImages the kubelet lets a new
    # pod use it only with a credential it recognises, and a secret renewed in place (same
    # namespace, name and UID) still is that credential.
    apply(cp, ns, running_pod("p2", {"app": image}))
    wait_for_pod(cp, ns, "p2")
    # Without the image on the node, the kubelet pulls with the renewed content.
    node.crictl("rmi", image)
    apply(cp, ns, running_pod("p3", {"app": image}))
    wait_for_pod(cp, ns, "p3")
    assert any(e.startswith("Pulled:") and "Successfully" in e for e in pull_events(cp, ns, "p3"))

    # Garbage collection, then re-creation: a new Secret (new UID). With
    # KubeletEnsureSecretPulledImages the kubelet re-checks the image already on the node
    # against this new credential before starting the pod.
    for pod_name in ("p1", "p2", "p3"):
        cp.kubectl("delete", "pod", pod_name, "-n", ns, "--grace-period=0", "--force")
    deadline = time.monotonic() + 60
    while cp.kubectl("get", "secret", name, "-n", ns, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the unused secret was not collected in 60 s"
        time.sleep(0.5)
    apply(cp, ns, running_pod("p4", {"app": image}))
    pod, _ = wait_for_pod(cp, ns, "p4")
    [recreated] = pull_secrets(cp, ns, pod)
    assert recreated["metadata"]["name"] == name
    assert recreated["metadata"]["uid"] != first["metadata"]["uid"]
    assert wait_for_log(node, ns, "p4", "app") == ["app: pulled 37 bytes of hello.txt"]


def test_pod_without_the_secret_cannot_use_an_image_another_pod_pulled(
    stack: Stack, node: Node
) -> None:
    """KEP-2535: an image pulled with a secret is not free for pods without one."""
    cp = stack.controlplane
    labelled = stack.labelled_namespace(ns_name("owner"))
    apply(cp, labelled, running_pod("p", {"app": stack.ecr_image}))
    wait_for_pod(cp, labelled, "p")
    plain = stack.labelled_namespace(ns_name("borrower"), inject=False)
    apply(cp, plain, running_pod("p", {"app": stack.ecr_image}))
    pod, _ = wait_for_pod(cp, plain, "p", running=False)
    assert get_pod(cp, plain, "p")["status"].get("phase") == "Pending"
    assert pod_state(pod).pull_failing
