"""The chart, installed by Helm itself, on a real node: hooks, ``helm test``, uninstall.

``helm install --wait`` of charts/pull-secret-webhook with hack/local-node-values.yaml
(which says what the local network forces and why) runs Helm's real order: the CRDs, the
pre-install certs Job (a pod on the node, from the webhook's image, writing the TLS
Secret), the release's objects, the wait for the Deployment's pod to be Ready (it mounts
that Secret), then the post-install certs Job (caBundle, Secrets owned by the webhook
configuration). ``helm test`` runs the chart's probe pod on the node. A pod in an opted-in
namespace then gets its pull secret from the installed webhook and the kubelet pulls with
it; ``helm uninstall`` leaves nothing of the release behind.

The module has a control plane of its own, started with ``--enable-aggregator-routing``
(the API server calls the chart's Service clientConfig at its endpoint: nothing here
routes a ClusterIP), so its webhook configuration is the only one, and nothing of the
session's control plane or of test_webhook_image.py is in its way.
"""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.controlplane import ControlPlane
from devenv.node.harness import NODE_NAME, Node
from devenv.node.image import push_image
from devenv.node.pods import running_pod, wait_for_log, wait_for_pod
from devenv.serve import free_port
from devenv.stack import INJECT_LABEL, REPO
from tests.e2e.support import get_json
from tests.support.helm_node import (
    Registry,
    controlplane,
    helm,
    local_node_values,
    node,
    registry,
    run_helm,
)
from tests.support.manifests import CHART

#: Fixtures, used by name.
__all__ = ["controlplane", "helm", "node", "registry"]

VALUES = REPO / "hack" / "local-node-values.yaml"
RELEASE = "psw-node"
NAMESPACE = "psw-node"
FULLNAME = f"{RELEASE}-pull-secret-webhook"
CERTS_JOB = f"{FULLNAME}-certs"
TLS_SECRET = f"{FULLNAME}-tls"
#: A workload identity pool provider's audience (the kind docs/gcp-federation.md names).
GCP_AUDIENCE = (
    "https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/"
    "clusters/providers/psw-node"
)
ADMISSIONS = "pull_secret_webhook_admissions_total"
# The chart's certs Job waits on an image pull and two key generations; the webhook pod on
# its pull and start. Measured here: 25-37 s for the whole install on 2 shared cores.
INSTALL_TIMEOUT = "240s"
# The probe allows itself 10 s; the pod starts from an image the node already holds.
HELM_TEST_TIMEOUT = "90s"
# The pod's 5 s shutdown delay, then the garbage collector for the hook-made Secrets.
UNINSTALL_SECONDS = 60.0
# The first test builds the image when its sources changed (~30 s warm, ~3 min cold base).
pytestmark = pytest.mark.timeout(600)


@dataclass
class Installed:
    https_port: int
    health_port: int
    install_seconds: float
    uninstalled: bool = False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def admissions(self) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.metrics().splitlines()
            if line.startswith(ADMISSIONS)
        )


def runtime_values(node: Node, registry: Registry, https_port: int, health_port: int) -> Any:
    """What hack/local-node-values.yaml leaves to the run, and the image built here."""
    values = local_node_values(
        node.controlplane, registry, f"{FULLNAME}.{NAMESPACE}.svc", https_port, health_port
    )
    values["image"] = {
        "repository": node.pause_image.rsplit("/", 1)[0] + "/pull-secret-webhook",
        "tag": "dev",
    }
    # docs/gcp-federation.md's mode federation: the kubelet mounts the webhook's own token
    # for Google's STS (no STS here: the token itself is what is checked).
    values["gcpFederation"] = {"enabled": True, "audience": GCP_AUDIENCE}
    return values


def timestamp(value: str) -> datetime.datetime:
    """RFC 3339 with up to nanoseconds (Helm's hook times) or seconds (Kubernetes')."""
    head, _, fraction = value.rstrip("Z").partition(".")
    parsed = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    if fraction[:6].isdigit():
        parsed += datetime.timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
    return parsed


@pytest.fixture(scope="module")
def installed(
    helm: Path,
    controlplane: ControlPlane,
    node: Node,
    registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    cp = controlplane
    workdir = tmp_path_factory.mktemp("helm")
    push_image(node.pause_image.rsplit("/", 1)[0] + "/pull-secret-webhook:dev")
    https_port, health_port = free_port(), free_port()
    values = workdir / "runtime-values.yaml"
    values.write_text(yaml.safe_dump(runtime_values(node, registry, https_port, health_port)))
    # Host networking: the namespace enforces "privileged", as hack/local-node-values.yaml says.
    cp.kubectl("create", "namespace", NAMESPACE)
    cp.kubectl(
        "label", "namespace", NAMESPACE,
        "pod-security.kubernetes.io/enforce=privileged",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    started = time.monotonic()
    release = Installed(https_port, health_port, 0.0)
    try:
        run_helm(
            helm, cp, workdir,
            "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
            "-f", str(VALUES), "-f", str(values),
            "--wait", "--timeout", INSTALL_TIMEOUT,
        )  # fmt: skip
        release.install_seconds = time.monotonic() - started
        yield release
    except AssertionError as failed:
        pods = cp.kubectl("get", "pods,jobs", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        events = cp.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
        raise AssertionError(f"{failed}\n{pods}\n{events[-4000:]}\n{node.log_tails(20)}") from None
    finally:
        if not release.uninstalled:
            run_helm(
                helm, cp, workdir,
                "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--ignore-not-found",
            )  # fmt: skip
        cp.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def webhook_log(cp: ControlPlane, node: Node, lines: int = 60) -> str:
    """The webhook container's last lines (kubectl logs needs a routable kubelet)."""
    pods = get_json(cp, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=webhook")
    out = []
    for pod in pods["items"]:
        name = pod["metadata"]["name"]
        out.append(f"--- {name}")
        out += node.container_log(NAMESPACE, name, "webhook")[-lines:]
    return "\n".join(out)


def hook_runs(helm: Path, cp: ControlPlane, workdir: Path) -> dict[str, dict[str, Any]]:
    """Helm's record of each hook of the release: name -> last_run (phase, times)."""
    release = json.loads(
        run_helm(helm, cp, workdir, "status", RELEASE, "-n", NAMESPACE, "-o", "json")
    )
    return {hook["name"]: hook.get("last_run") or {} for hook in release.get("hooks") or []}


def test_helm_install_runs_the_certs_hooks_on_the_node_around_the_ready_webhook(
    helm: Path,
    controlplane: ControlPlane,
    installed: Installed,
    tmp_path: Path,
) -> None:
    cp = controlplane
    runs = hook_runs(helm, cp, tmp_path)
    create, patch = runs[f"{CERTS_JOB}-create"], runs[f"{CERTS_JOB}-patch"]
    assert create["phase"] == patch["phase"] == "Succeeded", runs
    # hook-succeeded: the Jobs and their RBAC are gone once they have done their work.
    leftovers = cp.kubectl(
        "get", "jobs,serviceaccounts,roles,rolebindings", "-n", NAMESPACE,
        "-l", "app.kubernetes.io/component=certs", "-o", "name",
    ).stdout.split()  # fmt: skip
    leftovers += cp.kubectl(
        "get", "clusterroles,clusterrolebindings",
        "-l", f"app.kubernetes.io/component=certs,app.kubernetes.io/instance={RELEASE}",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    assert leftovers == []

    # Each Job's pod ran on the node, from the image (the kubelet's own events).
    events = get_json(cp, "events", "-n", NAMESPACE)["items"]
    for step in ("create", "patch"):
        started = [
            e
            for e in events
            if e["reason"] == "Started"
            and e["involvedObject"]["kind"] == "Pod"
            and e["involvedObject"]["name"].startswith(f"{CERTS_JOB}-{step}-")
            and (e.get("source") or {}).get("host") == NODE_NAME
        ]
        assert started, f"no pod of the {step} Job started on {NODE_NAME}"

    # Helm's order: the Secret before the pod that mounts it, the caBundle patch after the
    # pod is Ready (install --wait). Kubernetes times are whole seconds: compare floors.
    [pod] = get_json(cp, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=webhook")[
        "items"
    ]
    assert pod["spec"]["nodeName"] == NODE_NAME and pod["spec"]["hostNetwork"] is True
    pod_created = timestamp(pod["metadata"]["creationTimestamp"])
    [ready] = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "True"
    second = datetime.timedelta(seconds=1)
    assert timestamp(create["completed_at"]) - second < pod_created
    assert timestamp(patch["started_at"]) >= timestamp(ready["lastTransitionTime"])

    # What the two Jobs wrote: the pair and its CA, the caBundle that trusts it, and the
    # webhook configuration as the Secrets' owner (set only by the post-install step).
    secret = get_json(cp, "secret", TLS_SECRET, "-n", NAMESPACE)
    assert timestamp(secret["metadata"]["creationTimestamp"]) <= pod_created
    config = get_json(cp, "mutatingwebhookconfiguration", FULLNAME)
    [hook] = config["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443,
    }  # fmt: skip
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    for name in (TLS_SECRET, f"{TLS_SECRET}-ca"):
        owners = get_json(cp, "secret", name, "-n", NAMESPACE)["metadata"].get("ownerReferences")
        assert [(o["kind"], o["name"], o["uid"]) for o in owners or []] == [
            ("MutatingWebhookConfiguration", FULLNAME, config["metadata"]["uid"])
        ]
    print(f"helm install --wait: {installed.install_seconds:.1f}s")


def test_helm_test_probes_the_webhook_from_a_pod_on_the_node(
    helm: Path, controlplane: ControlPlane, node: Node, installed: Installed, tmp_path: Path
) -> None:
    before = installed.admissions()
    started = time.monotonic()
    out = run_helm(
        helm, controlplane, tmp_path,
        "test", RELEASE, "--namespace", NAMESPACE, "--timeout", HELM_TEST_TIMEOUT,
    )  # fmt: skip
    print(f"helm test: {time.monotonic() - started:.1f}s")
    assert f"TEST SUITE:     {FULLNAME}-test" in out and "Phase:          Succeeded" in out, out
    # The probe's review reached this webhook (not merely some listener on the port).
    assert installed.admissions() > before
    events = get_json(controlplane, "events", "-n", NAMESPACE)["items"]
    assert any(
        e["reason"] == "Started"
        and e["involvedObject"]["name"] == f"{FULLNAME}-test"
        and (e.get("source") or {}).get("host") == NODE_NAME
        for e in events
    )


def test_the_installed_webhook_gives_pods_their_pull_secret_and_the_kubelet_pulls(
    controlplane: ControlPlane, node: Node, registry: Registry, installed: Installed
) -> None:
    cp = controlplane
    ns = f"helm-pods-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("label", "namespace", ns, f"{INJECT_LABEL}=enabled")
    cp.wait_for_service_account(ns)
    before = installed.admissions()
    try:
        cp.kubectl(
            "apply", "-n", ns, "-f", "-",
            input=json.dumps(running_pod("p", {"ecr": registry.image})),
        )  # fmt: skip
        try:
            pod, _ = wait_for_pod(cp, ns, "p", timeout=60)
        except AssertionError as failed:
            raise AssertionError(f"{failed}\n{webhook_log(cp, node)}") from None
        [ref] = pod["spec"]["imagePullSecrets"]
        assert installed.admissions() > before
        secret = get_json(cp, "secret", ref["name"], "-n", ns)
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
        assert list(auths) == [registry.registry.host]
        assert wait_for_log(node, ns, "p", "ecr") == ["ecr: pulled 37 bytes of hello.txt"]
    finally:
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def test_the_kubelet_mounts_the_webhook_token_for_google_sts_that_the_api_server_refuses(
    controlplane: ControlPlane, node: Node, installed: Installed
) -> None:
    """gcpFederation: the token at the gar entry's tokenFile is the webhook's own, for the
    pool provider's audience only: no Kubernetes credential."""
    cp = controlplane
    [pod] = get_json(cp, "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=webhook")[
        "items"
    ]
    volume = "volumes/kubernetes.io~projected/gcp-token/token"
    path = node.workdir / "kubelet" / "pods" / pod["metadata"]["uid"] / volume
    token = path.read_text().strip()

    claims = jwt_claims(token)
    assert claims["aud"] == [GCP_AUDIENCE]
    assert claims["sub"] == f"system:serviceaccount:{NAMESPACE}:{FULLNAME}"
    assert claims["exp"] - claims["iat"] == 3600  # the chart's tokenExpirationSeconds
    assert claims["kubernetes.io"]["pod"]["name"] == pod["metadata"]["name"]
    # The API server authenticates none of it: its audience is not the API server's.
    context = ssl.create_default_context(cafile=str(cp.ca_cert))
    assert cp.server.startswith("https://")
    api = f"{cp.server}/api"
    request = urllib.request.Request(api, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=context)  # noqa: S310
    refused.value.close()  # the error holds the response's socket
    assert refused.value.code == 401


def test_helm_uninstall_leaves_nothing_of_the_release_but_its_crds(
    helm: Path, controlplane: ControlPlane, installed: Installed, tmp_path: Path
) -> None:
    cp = controlplane
    started = time.monotonic()
    run_helm(helm, cp, tmp_path, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    installed.uninstalled = True
    kinds = cp.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    selector = f"app.kubernetes.io/instance={RELEASE}"
    deadline = time.monotonic() + UNINSTALL_SECONDS
    while True:
        # The release's objects by label; the hook-made Secrets (no chart labels) by name,
        # which the garbage collector removes after their owner, the webhook configuration.
        labelled = cp.kubectl(
            "get", ",".join(kinds), "-A", "-l", selector, "-o", "name"
        ).stdout.split()
        secrets = cp.kubectl("get", "secrets", "-n", NAMESPACE, "-o", "name").stdout.split()
        pods = cp.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name").stdout.split()
        if not labelled and not secrets and not pods:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"left after uninstall: {labelled + secrets + pods}")
        time.sleep(0.5)
    print(
        f"helm uninstall --wait, to the last pod and Secret gone: {time.monotonic() - started:.1f}s"
    )
    # Helm leaves the namespace, and in it what the webhook wrote, not the chart: its
    # leader-election Lease and its records of the pull secrets it made (docs/install.md,
    # "Upgrading and uninstalling"), besides what Kubernetes puts in every namespace.
    namespaced = cp.kubectl(
        "api-resources", "--verbs=list", "--namespaced", "-o", "name"
    ).stdout.split()
    left = cp.kubectl("get", ",".join(namespaced), "-n", NAMESPACE, "-o", "name").stdout.split()
    kinds_left = {name.split("/", 1)[0] for name in left} - {"event.events.k8s.io", "event"}
    assert kinds_left <= {
        "configmap", "serviceaccount", "lease.coordination.k8s.io",
        "managedpullsecret.pull-secret-webhook.io",
    }, left  # fmt: skip
    assert {n for n in left if not n.startswith(("event", "managedpullsecret."))} == {
        "configmap/kube-root-ca.crt",
        "serviceaccount/default",
        f"lease.coordination.k8s.io/{FULLNAME}",
    }
    # The chart's CRDs carry helm.sh/resource-policy: keep (crds.keep, the default): Helm
    # leaves both, since deleting a CRD deletes every object of its kind.
    crds = cp.kubectl("get", "crds", "-o", "name").stdout.split()
    assert sorted(c for c in crds if c.endswith(".pull-secret-webhook.io")) == [
        "customresourcedefinition.apiextensions.k8s.io/managedpullsecrets.pull-secret-webhook.io",
        "customresourcedefinition.apiextensions.k8s.io/pullsecretmarkers.pull-secret-webhook.io",
    ]
    assert cp.kubectl("get", "mutatingwebhookconfigurations", "-o", "name").stdout.split() == []
