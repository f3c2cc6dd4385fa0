"""The webhook runs from its own image, as a Pod on the local node, and serves admissions.

The image is built here from the project's Dockerfile with buildah (base made with
debootstrap, see devenv/node/image.py), pushed to the node's registry and installed
with ``kubectl apply -k`` through manifests/overlays/local-node: its real ServiceAccount,
probes, securityContext (non-root, read-only root filesystem) and config mount.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from devenv.controlplane import ControlPlane
from devenv.node.deploy import WebhookPod, install_webhook_pod
from devenv.node.harness import Node
from devenv.node.pods import running_pod, wait_for_log, wait_for_pod
from devenv.peers.fixtures import require_binaries
from devenv.peers.registry import REGISTRY_BINARY, SKOPEO_BINARY
from devenv.stack import NAMESPACE, SERVICE_ACCOUNT, Stack, running_stack
from tests.support.node import controlplane, node, require_image_tools

#: Fixtures, used by name.
__all__ = ["controlplane", "node"]

ADMISSIONS = "pull_secret_webhook_admissions_total"
# The first test also builds the image (~1 min warm, ~3 min with a cold base) and pulls it.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def stack(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binaries(REGISTRY_BINARY, SKOPEO_BINARY)
    require_image_tools()
    with running_stack(controlplane, tmp_path_factory.mktemp("stack"), replicas_wanted=1) as s:
        yield s


@pytest.fixture(scope="module")
def webhook_pod(stack: Stack, node: Node, tmp_path_factory: pytest.TempPathFactory) -> WebhookPod:
    return install_webhook_pod(stack, node, tmp_path_factory.mktemp("install"))


def admissions(pod: WebhookPod) -> float:
    with urllib.request.urlopen(pod.metrics_url(), timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(ADMISSIONS)
    )


def test_the_webhook_pod_runs_as_its_manifests_say(
    stack: Stack, node: Node, webhook_pod: WebhookPod
) -> None:
    cp = stack.controlplane
    pod = json.loads(
        cp.kubectl("get", "pod", webhook_pod.pod_name, "-n", NAMESPACE, "-o", "json").stdout
    )
    assert pod["spec"]["serviceAccountName"] == SERVICE_ACCOUNT
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] and status["image"].endswith("pull-secret-webhook:dev")
    # Inside the container: the image's non-root user, a read-only root, the config mount.
    [container_id] = node.crictl("ps", "-q", "--name", "webhook").stdout.split()
    probe = node.crictl(
        "exec", container_id, "python", "-c",
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid())\n"
        "print(pathlib.Path('/etc/pull-secret-webhook/config.yaml').is_file())\n"
        "try:\n    open('/app/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n",
    ).stdout.split("\n")  # fmt: skip
    assert probe[:3] == ["65532 65532", "True", "30"]  # 30: EROFS


def test_the_webhook_pod_serves_admissions_and_the_kubelet_pulls_with_its_secrets(
    stack: Stack, node: Node, webhook_pod: WebhookPod
) -> None:
    cp = stack.controlplane
    before = admissions(webhook_pod)
    ns = stack.labelled_namespace(f"image-{uuid.uuid4().hex[:6]}")
    manifest = running_pod("p", {"acr": stack.acr_image, "ecr": stack.ecr_image})
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
    pod, _ = wait_for_pod(cp, ns, "p", timeout=60)
    assert len(pod["spec"]["imagePullSecrets"]) == 2
    assert admissions(webhook_pod) > before
    assert wait_for_log(node, ns, "p", "acr") == ["acr: pulled 37 bytes of hello.txt"]
    assert wait_for_log(node, ns, "p", "ecr") == ["ecr: pulled 37 bytes of hello.txt"]
