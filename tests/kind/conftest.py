"""The kind end-to-end suite: a real cluster, a real kubelet, a registry that needs credentials.

hack/kind-e2e.sh (`make kind-e2e`) creates the kind cluster psw-e2e, the local registry
kind-registry with basic auth, the test image in it and the webhook (manifests/ through
hack/kind/overlay), then runs these tests with ``KIND_E2E=1``. They use kubectl with its
current context, which must be the kind cluster's (``KIND_E2E_CONTEXT``, default
``kind-psw-e2e``): they create namespaces and delete a webhook pod.

Without ``KIND_E2E=1`` every test here is skipped, also under ``CI=true``: CI has no
Docker engine, and the cluster is made by the script, not by `make test`, so its absence
is not a missing prerequisite there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devenv import processes

T = TypeVar("T")

HERE = Path(__file__).parent
SKIP_REASON = (
    "the kind end-to-end tests run only with KIND_E2E=1, against the cluster "
    "hack/kind-e2e.sh creates (make kind-e2e; needs Docker)"
)

#: What hack/kind-e2e.sh sets up (hack/kind/overlay/config.yaml, manifests/).
DEFAULT_CONTEXT = "kind-psw-e2e"
DEFAULT_IMAGE = "kind-registry:5000/psw-e2e/busybox:e2e"
WEBHOOK_NAMESPACE = "pull-secret-webhook"
WEBHOOK_DEPLOYMENT = "pull-secret-webhook"
WEBHOOK_POD_SELECTOR = "app.kubernetes.io/name=pull-secret-webhook"
CREDENTIALS_SECRET = "kind-registry-credentials"
INJECT_LABEL = "pull-secret-webhook/inject"
#: The label of every secret the webhook writes (docs/install.md, "Verify").
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pull-secret-webhook"

#: One kubectl call against a local cluster takes well under a second; this only turns a
#: hung API server into a failure instead of a pytest-timeout traceback.
KUBECTL_TIMEOUT_SECONDS = 60.0
#: The script waits for the rollout; the Service's endpoints and the node's kube-proxy
#: rules follow within seconds.
WEBHOOK_ANSWER_TIMEOUT_SECONDS = 60.0
#: The namespace's ServiceAccount controller creates "default" within a second or two;
#: the API server refuses pods (dry runs too) until it exists.
SERVICE_ACCOUNT_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.5


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this directory's tests unless KIND_E2E=1 (whatever CI says)."""
    if os.environ.get("KIND_E2E") == "1":
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll until probe returns something truthy; on timeout, say what was last seen."""
    return processes.wait_for(what, probe, timeout, explain, interval=POLL_SECONDS)


@dataclass(frozen=True)
class Kubectl:
    """kubectl with the current context; a failed call raises with kubectl's message."""

    binary: str

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.run(*args, "--output=json", stdin=stdin).stdout)

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self.run("apply", "--filename=-", stdin=json.dumps(manifest))

    def exists(self, *args: str) -> bool:
        return self.run("get", *args, check=False).returncode == 0


def pod_manifest(name: str, namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": pod_spec(image),
    }


def pod_spec(image: str) -> dict[str, Any]:
    return {
        # busybox's sleep ignores SIGTERM as PID 1: without this, deleting the test
        # namespace waits out the default 30 s grace period per pod.
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "main",
                "image": image,
                "command": ["sleep", "3600"],
                # Always: the kubelet asks the registry on every start, with the pod's pull
                # secrets. With IfNotPresent a copy pulled by an earlier test would let a
                # pod without credentials start, and prove nothing.
                "imagePullPolicy": "Always",
            }
        ],
    }


def pull_secret_names(pod: Mapping[str, Any]) -> list[str]:
    return [ref["name"] for ref in pod["spec"].get("imagePullSecrets") or []]


def managed_secrets(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json(
        "get", "secrets", f"--namespace={namespace}", f"--selector={MANAGED_BY_LABEL}={MANAGED_BY}"
    )["items"]
    return items


def create_namespace(kubectl: Kubectl, *, opted_in: bool) -> str:
    """A fresh namespace (labelled for the webhook or not) that accepts pods."""
    name = f"psw-kind-{uuid.uuid4().hex[:8]}"
    labels = {INJECT_LABEL: "enabled"} if opted_in else {}
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
    )
    wait_for(
        f"ServiceAccount {name}/default",
        lambda: kubectl.exists("serviceaccount", "default", f"--namespace={name}"),
        SERVICE_ACCOUNT_TIMEOUT_SECONDS,
    )
    return name


def delete_namespace(kubectl: Kubectl, name: str) -> None:
    kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def dry_run_pod(kubectl: Kubectl, name: str, namespace: str, image: str) -> dict[str, Any]:
    """The pod as the API server would store it (mutated by the webhook); nothing is written."""
    pod: dict[str, Any] = kubectl.json(
        "apply",
        "--dry-run=server",
        "--filename=-",
        stdin=json.dumps(pod_manifest(name, namespace, image)),
    )
    return pod


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("KIND_E2E=1 but there is no kubectl on PATH", pytrace=False)
    k = Kubectl(binary)
    expected = os.environ.get("KIND_E2E_CONTEXT", DEFAULT_CONTEXT)
    current = k.run("config", "current-context", check=False).stdout.strip()
    if current != expected:
        pytest.fail(
            f"kubectl's current context is {current or 'unset'!r}, expected {expected!r}: "
            "these tests create namespaces and delete webhook pods, so they only run "
            "against the kind cluster (hack/kind-e2e.sh points KUBECONFIG at it; set "
            "KIND_E2E_CONTEXT to use another)",
            pytrace=False,
        )
    return k


@pytest.fixture(scope="session")
def registry_image() -> str:
    """The test image in the authenticated registry, as the nodes pull it."""
    return os.environ.get("KIND_E2E_IMAGE", DEFAULT_IMAGE)


@pytest.fixture(scope="session")
def registry_host(registry_image: str) -> str:
    return registry_image.split("/", 1)[0]


@pytest.fixture(scope="session", autouse=True)
def webhook_answers(kubectl: Kubectl, registry_image: str) -> None:
    """Wait until the API server really calls the webhook: with failurePolicy Ignore, an
    unreachable webhook would otherwise admit the first pods unchanged."""
    kubectl.run(
        f"--namespace={WEBHOOK_NAMESPACE}",
        "rollout",
        "status",
        f"deployment/{WEBHOOK_DEPLOYMENT}",
        f"--timeout={WEBHOOK_ANSWER_TIMEOUT_SECONDS:.0f}s",
    )
    namespace = create_namespace(kubectl, opted_in=True)
    try:
        wait_for(
            "a dry-run pod to get its pull secret from the webhook",
            lambda: pull_secret_names(dry_run_pod(kubectl, "probe", namespace, registry_image)),
            WEBHOOK_ANSWER_TIMEOUT_SECONDS,
        )
    finally:
        delete_namespace(kubectl, namespace)


@pytest.fixture
def opted_in_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace labelled pull-secret-webhook/inject=enabled."""
    name = create_namespace(kubectl, opted_in=True)
    yield name
    delete_namespace(kubectl, name)


@pytest.fixture
def plain_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace without the label: the webhook is never called for it."""
    name = create_namespace(kubectl, opted_in=False)
    yield name
    delete_namespace(kubectl, name)
