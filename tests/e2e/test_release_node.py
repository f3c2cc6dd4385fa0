"""A release for another owner, installed as its users install it, on a real node.

``hack/release-artifacts.sh`` (what ``make release-artifacts`` and the release workflow run)
writes the release of owner ``acme``: install.yaml, the chart package and the image (built
from the Dockerfile with buildah on the base made here, devenv/node/image.py). The image goes
into the node's registry as ``acme/pull-secret-webhook``, and containerd resolves
``ghcr.io`` there (a mirror in its hosts.toml), so the kubelet pulls
``ghcr.io/acme/pull-secret-webhook:VERSION`` exactly as the artifacts name it.

Then, on one control plane and node, one after the other:

1. ``kubectl apply -f install.yaml`` and ``python -m webhook certs`` (docs/install.md): the
   webhook becomes Ready, a pod in an opted-in namespace runs with its pull secret, and a
   Job made from the renewal CronJob (``kubectl create job --from=cronjob/…``) pulls the same
   image and renews a certificate close to expiry; ``kubectl delete -f install.yaml`` removes
   both CRDs.
2. ``helm install`` of the chart package: the same, and ``helm uninstall`` keeps both CRDs.
3. ``helm install`` of the previous chart (0.1.0, whose CRDs sat in crds/, which Helm never
   upgrades), the documented adoption of its CRDs, and ``helm upgrade`` to the package: the
   CRD change (``status.renewedAt`` and the printer columns) reaches the cluster, and the
   upgraded webhook's records carry it (a CRD without the field would prune it).

What the local network forces (as tests/e2e/test_helm_node.py and hack/local-node-values.yaml
say: no route to a ClusterIP or out of the pod bridge, the API server on loopback) is patched
in after the literal install: host networking (hence a "privileged" namespace), free ports,
the API server's address, and the test's registries as the config.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from devenv.controlplane import ControlPlane
from devenv.node.harness import Node
from devenv.node.pods import running_pod, wait_for_log, wait_for_pod
from devenv.serve import free_port
from devenv.stack import INJECT_LABEL, REPO
from tests.e2e.support import get_json
from tests.support.helm_node import (
    Registry,
    api_env,
    controlplane,
    helm,
    local_node_values,
    node,
    registry,
    registry_config,
    run_helm,
)
from tests.support.manifests import in_ci

OWNER = "acme"
VERSION = "0.2.0"
PREVIOUS = REPO / "tests" / "e2e" / "data" / "pull-secret-webhook-0.1.0.tgz"
IMAGE = f"ghcr.io/{OWNER}/pull-secret-webhook"
SCRIPT = REPO / "hack" / "release-artifacts.sh"
KUBECTL_NAMESPACE = "pull-secret-webhook"
RELEASE = "psw-release"
HELM_NAMESPACE = "psw-release"
FULLNAME = f"{RELEASE}-pull-secret-webhook"
CRDS = ("managedpullsecrets.pull-secret-webhook.io", "pullsecretmarkers.pull-secret-webhook.io")
VALUES = REPO / "hack" / "local-node-values.yaml"
# The release build: the image is rebuilt only when its sources changed (~1 min), then
# copied out as an OCI layout (vfs storage: ~20 s); a cold base adds ~3 min.
BUILD_TIMEOUT_SECONDS = 900
# Image pull from the node's registry, key generation, pod start: 25-37 s measured for a
# whole `helm install --wait` here (tests/e2e/test_helm_node.py).
INSTALL_TIMEOUT = "240s"
READY_TIMEOUT_SECONDS = 180
# The renewal Job: one pod from an image the node holds, two Secret writes and a patch.
JOB_TIMEOUT = "120s"
# A serving certificate this close to expiry is renewed by the CronJob's --renew-before 30.
NEAR_EXPIRY_DAYS = 20
pytestmark = pytest.mark.timeout(1500)

# The fixtures tests/e2e/test_helm_node.py uses too (tests/support/helm_node.py), each
# instantiated for this module.
__all__ = ["controlplane", "helm", "node", "registry"]


@dataclass(frozen=True)
class Artifacts:
    out: Path
    seconds: float

    @property
    def install_yaml(self) -> Path:
        return self.out / "install.yaml"

    @property
    def chart(self) -> Path:
        return self.out / f"pull-secret-webhook-{VERSION}.tgz"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    out = tmp_path_factory.mktemp("release")
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "OWNER": OWNER, "VERSION": VERSION, "OUT": str(out)},
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        message = f"release-artifacts failed:\n{proc.stderr[-4000:]}"
        if "missing" in proc.stderr and not in_ci():
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return Artifacts(out, time.monotonic() - started)


@pytest.fixture(scope="module")
def released_image(artifacts: Artifacts, node: Node) -> str:
    """The release's image in the node's registry under the owner's name, and ghcr.io
    resolved there by containerd (hosts.toml is read at every pull)."""
    host = node.pause_image.split("/", 1)[0]
    for tag in (VERSION, "0.1.0"):  # the previous chart runs this build under its own tag
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             f"oci:{artifacts.out / 'image'}:{VERSION}",
             f"docker://{host}/{OWNER}/pull-secret-webhook:{tag}"],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
    mirror = node.workdir / "containerd" / "certs.d" / "ghcr.io"
    mirror.mkdir(parents=True, exist_ok=True)
    (mirror / "hosts.toml").write_text(
        f'server = "https://ghcr.io"\n\n[host."http://{host}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    return f"{IMAGE}:{VERSION}"


def patch(cp: ControlPlane, namespace: str, what: str, ops: list[dict[str, Any]]) -> None:
    cp.kubectl("patch", "-n", namespace, what, "--type=json", "-p", json.dumps(ops))


def certs(cp: ControlPlane, namespace: str, name: str, *extra: str) -> str:
    """`python -m webhook certs` from the operator's machine (docs/install.md)."""
    proc = subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--namespace", namespace,
         f"--service={name}", f"--secret={name}-tls", f"--webhook-config={name}", *extra],
        env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def serving_cert(cp: ControlPlane, namespace: str, secret: str) -> x509.Certificate:
    data = get_json(cp, "secret", secret, "-n", namespace)["data"]
    return x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))


def renew_with_the_cronjob(
    cp: ControlPlane, node: Node, namespace: str, name: str, image: str
) -> tuple[x509.Certificate, x509.Certificate, float]:
    """Make the serving certificate one close to expiry, run a Job made from the renewal
    CronJob, and return the certificate before and after and the Job's seconds."""
    cronjob = f"{name}-certs-renewal"
    pod = "/spec/jobTemplate/spec/template/spec"
    spec = get_json(cp, "cronjob", cronjob, "-n", namespace)["spec"]["jobTemplate"]["spec"]
    [container] = spec["template"]["spec"]["containers"]
    assert container["image"] == image  # the release's own image, never a placeholder
    # What this network forces, as for the webhook: the API server only on the host's loopback.
    patch(cp, namespace, f"cronjob/{cronjob}", [
        {"op": "add", "path": f"{pod}/hostNetwork", "value": True},
        *({"op": "add", "path": f"{pod}/containers/0/env/-", "value": v} for v in api_env(cp)),
    ])  # fmt: skip
    certs(cp, namespace, name, f"--days={NEAR_EXPIRY_DAYS}")
    before = serving_cert(cp, namespace, f"{name}-tls")
    job = f"renew-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    cp.kubectl("create", "job", "-n", namespace, f"--from=cronjob/{cronjob}", job)
    done = cp.kubectl(
        "wait", "-n", namespace, f"job/{job}", "--for=condition=Complete",
        f"--timeout={JOB_TIMEOUT}", check=False, timeout=150,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode != 0:
        pods = cp.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = cp.kubectl("get", "events", "-n", namespace, check=False).stdout[-3000:]
        raise AssertionError(f"{done.stderr}\n{pods}\n{events}\n{node.log_tails(20)}")
    return before, serving_cert(cp, namespace, f"{name}-tls"), seconds


def check_renewed(
    cp: ControlPlane, namespace: str, name: str, before: x509.Certificate, after: x509.Certificate
) -> None:
    assert after.serial_number != before.serial_number
    left = after.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert left > dt.timedelta(days=300), left  # the CronJob's --days 365
    # Renewed under the same CA: the caBundle the API server trusts did not need to change.
    bundle = get_json(cp, "mutatingwebhookconfiguration", name)["webhooks"][0]["clientConfig"]
    ca = x509.load_pem_x509_certificate(base64.b64decode(bundle["caBundle"]))
    assert after.issuer == ca.subject == before.issuer


def pod_gets_its_pull_secret(
    cp: ControlPlane, node: Node, registry: Registry, home: str
) -> dict[str, Any]:
    """A pod in a new opted-in namespace runs, pulled with the secret the webhook wrote;
    returns the webhook's record of that secret."""
    ns = f"team-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("label", "namespace", ns, f"{INJECT_LABEL}=enabled")
    cp.wait_for_service_account(ns)
    cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps(running_pod("p", {"ecr": registry.image}))
    )
    pod, _ = wait_for_pod(cp, ns, "p", timeout=60)
    [ref] = pod["spec"]["imagePullSecrets"]
    assert wait_for_log(node, ns, "p", "ecr") == ["ecr: pulled 37 bytes of hello.txt"]
    # The namespace stays: its marker is among what an uninstall leaves behind.
    return dict(get_json(cp, "managedpullsecret", f"{ns}.{ref['name']}", "-n", home))


def wait_ready(cp: ControlPlane, node: Node, namespace: str, deployment: str) -> None:
    done = cp.kubectl(
        "rollout", "status", "-n", namespace, f"deployment/{deployment}",
        f"--timeout={READY_TIMEOUT_SECONDS}s", check=False, timeout=READY_TIMEOUT_SECONDS + 30,
    )  # fmt: skip
    if done.returncode != 0:
        pods = cp.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = cp.kubectl("get", "events", "-n", namespace, check=False).stdout[-3000:]
        raise AssertionError(f"{done.stderr}\n{pods}\n{events}\n{node.log_tails(20)}")


# --- 1. kubectl apply -f install.yaml ------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl_installed(
    controlplane: ControlPlane, node: Node, registry: Registry, artifacts: Artifacts,
    released_image: str,
) -> Iterator[float]:  # fmt: skip
    cp, ns = controlplane, KUBECTL_NAMESPACE
    started = time.monotonic()
    cp.kubectl("apply", "-f", str(artifacts.install_yaml))
    # The local network (module docstring): host networking needs a "privileged" namespace.
    cp.kubectl(
        "label", "namespace", ns, "--overwrite",
        "pod-security.kubernetes.io/enforce=privileged",
    )  # fmt: skip
    [configmap] = cp.kubectl(
        "get", "configmaps", "-n", ns, "-l", "app.kubernetes.io/name=pull-secret-webhook",
        "-o", "name",
    ).stdout.split()  # fmt: skip
    config = yaml.safe_dump(registry_config(registry))
    patch(cp, ns, configmap, [{"op": "replace", "path": "/data/config.yaml", "value": config}])
    https_port, health_port = free_port(), free_port()
    container = "/spec/template/spec/containers/0"
    args = get_json(cp, "deployment", "pull-secret-webhook", "-n", ns)["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    args = [
        f"--port={https_port}" if a.startswith("--port=")
        else f"--health-port={health_port}" if a.startswith("--health-port=")
        else a
        for a in args
    ]  # fmt: skip
    patch(cp, ns, "deployment/pull-secret-webhook", [
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
        {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
        {"op": "replace", "path": f"{container}/args", "value": args},
        {"op": "replace", "path": f"{container}/ports/0/containerPort", "value": https_port},
        {"op": "replace", "path": f"{container}/ports/1/containerPort", "value": health_port},
        {"op": "replace", "path": f"{container}/readinessProbe/httpGet/port", "value": health_port},
        {"op": "replace", "path": f"{container}/livenessProbe/httpGet/port", "value": health_port},
        *({"op": "add", "path": f"{container}/env/-", "value": v} for v in api_env(cp)),
        # moto's documented test keys, for the ECR entry's default credential chain.
        {"op": "add", "path": f"{container}/env/-",
         "value": {"name": "AWS_ACCESS_KEY_ID", "value": "testing"}},
        {"op": "add", "path": f"{container}/env/-",
         "value": {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"}},
    ])  # fmt: skip
    # docs/install.md, "Certificates": the pair, its CA, the caBundle.
    certs(cp, ns, "pull-secret-webhook")
    wait_ready(cp, node, ns, "pull-secret-webhook")
    yield time.monotonic() - started
    cp.kubectl("delete", "-f", str(artifacts.install_yaml), "--ignore-not-found", "--wait=false",
               check=False, timeout=120)  # fmt: skip


def serving_pods(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """The webhook's pods that are not on their way out (the rollout that moved the
    webhook to the host's network deletes the first ones)."""
    pods = get_json(cp, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=webhook")
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def test_install_yaml_of_another_owner_names_only_its_image_and_runs_it(
    controlplane: ControlPlane, kubectl_installed: float, released_image: str
) -> None:
    [pod] = serving_pods(controlplane, KUBECTL_NAMESPACE)
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] and status["image"] == released_image
    print(f"kubectl apply -f install.yaml, certs, patches, to Ready: {kubectl_installed:.1f}s")


def test_install_yaml_gives_an_opted_in_pod_its_pull_secret(
    controlplane: ControlPlane, node: Node, registry: Registry, kubectl_installed: float
) -> None:
    record = pod_gets_its_pull_secret(controlplane, node, registry, KUBECTL_NAMESPACE)
    assert record["status"]["state"] == "Ready" and record["status"]["renewedAt"]


def test_install_yaml_renewal_cronjob_runs_the_released_image_and_renews(
    controlplane: ControlPlane, node: Node, kubectl_installed: float, released_image: str
) -> None:
    name = "pull-secret-webhook"
    before, after, seconds = renew_with_the_cronjob(
        controlplane, node, KUBECTL_NAMESPACE, name, released_image
    )
    check_renewed(controlplane, KUBECTL_NAMESPACE, name, before, after)
    print(f"renewal Job from the CronJob (install.yaml): {seconds:.1f}s")


def test_kubectl_delete_of_install_yaml_removes_both_crds(
    controlplane: ControlPlane, artifacts: Artifacts, kubectl_installed: float
) -> None:
    cp = controlplane
    cp.kubectl("delete", "-f", str(artifacts.install_yaml), "--wait=true", timeout=180)
    names = cp.kubectl("get", "crds", "-o", "name").stdout
    assert not [c for c in CRDS if c in names]


# --- 2. helm install of the package; 3. helm upgrade from the previous chart ------------------


def helm_values(cp: ControlPlane, registry: Registry, path: Path) -> Path:
    """What hack/local-node-values.yaml leaves to the run, with ports free now; no image:
    the package's own."""
    service = f"{FULLNAME}.{HELM_NAMESPACE}.svc"
    values = local_node_values(cp, registry, service, free_port(), free_port())
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def helm_namespace(controlplane: ControlPlane) -> Iterator[str]:
    cp = controlplane
    cp.kubectl("create", "namespace", HELM_NAMESPACE)
    cp.kubectl(
        "label", "namespace", HELM_NAMESPACE,
        "pod-security.kubernetes.io/enforce=privileged",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    yield HELM_NAMESPACE
    cp.kubectl("delete", "namespace", HELM_NAMESPACE, "--wait=false", check=False)


@dataclass
class HelmRun:
    helm: Path
    cp: ControlPlane
    workdir: Path
    values: Path

    def __call__(self, *args: str) -> str:
        return run_helm(self.helm, self.cp, self.workdir, *args)

    def install_or_upgrade(self, verb: str, chart: Path, values: Path | None = None) -> float:
        started = time.monotonic()
        self(
            verb, RELEASE, str(chart), "--namespace", HELM_NAMESPACE, "-f", str(VALUES),
            "-f", str(values or self.values), "--wait", "--timeout", INSTALL_TIMEOUT,
        )  # fmt: skip
        return time.monotonic() - started


@pytest.fixture(scope="module")
def helm_run(
    helm: Path, controlplane: ControlPlane, registry: Registry, helm_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HelmRun]:  # fmt: skip
    workdir = tmp_path_factory.mktemp("helm")
    values = helm_values(controlplane, registry, workdir / "runtime-values.yaml")
    run = HelmRun(helm, controlplane, workdir, values)
    yield run
    run("uninstall", RELEASE, "--namespace", HELM_NAMESPACE, "--wait", "--ignore-not-found")
    controlplane.kubectl("delete", "crd", *CRDS, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def helm_installed(
    controlplane: ControlPlane, node: Node, helm_run: HelmRun, artifacts: Artifacts,
    released_image: str, request: pytest.FixtureRequest,
) -> float:  # fmt: skip
    # install.yaml's objects (and CRDs) first gone: one owner of the CRDs at a time.
    request.getfixturevalue("kubectl_installed")
    controlplane.kubectl("delete", "-f", str(artifacts.install_yaml), "--ignore-not-found",
                         "--wait=true", timeout=180)  # fmt: skip
    try:
        return helm_run.install_or_upgrade("install", artifacts.chart)
    except AssertionError as failed:
        pods = controlplane.kubectl("get", "pods,jobs", "-n", HELM_NAMESPACE, "-o", "wide",
                                    check=False).stdout  # fmt: skip
        raise AssertionError(f"{failed}\n{pods}\n{node.log_tails(20)}") from None


def test_helm_install_of_the_package_runs_the_owners_image_with_the_crds_kept(
    controlplane: ControlPlane, helm_installed: float, released_image: str
) -> None:
    cp = controlplane
    [pod] = serving_pods(cp, HELM_NAMESPACE)
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] and status["image"] == released_image
    for crd in CRDS:
        meta = get_json(cp, "crd", crd)["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["annotations"]["meta.helm.sh/release-name"] == RELEASE
    print(f"helm install --wait of the package: {helm_installed:.1f}s")


def test_helm_install_gives_an_opted_in_pod_its_pull_secret_and_lists_it(
    controlplane: ControlPlane, node: Node, registry: Registry, helm_installed: float
) -> None:
    record = pod_gets_its_pull_secret(controlplane, node, registry, HELM_NAMESPACE)
    assert record["status"]["renewedAt"]
    listing = controlplane.kubectl("get", "managedpullsecrets", "-A").stdout.splitlines()
    assert listing[0].split() == [
        "NAMESPACE", "NAME", "SECRET-NAMESPACE", "SECRET", "REGISTRY", "STATE", "EXPIRES",
        "RENEWED",
    ]  # fmt: skip
    row = next(line.split() for line in listing if record["metadata"]["name"] in line)
    assert row[2] == record["spec"]["namespace"] and row[4:6] == ["ecr", "Ready"]


def test_helm_renewal_cronjob_runs_the_released_image_and_renews(
    controlplane: ControlPlane, node: Node, helm_installed: float, released_image: str
) -> None:
    before, after, seconds = renew_with_the_cronjob(
        controlplane, node, HELM_NAMESPACE, FULLNAME, released_image
    )
    check_renewed(controlplane, HELM_NAMESPACE, FULLNAME, before, after)
    print(f"renewal Job from the CronJob (chart): {seconds:.1f}s")


def documented_commands(marker: str) -> list[list[str]]:
    """The kubectl lines of docs/install.md's sh block holding ``marker``, as written,
    with this test's release name and namespace for the documented ones."""
    text = (REPO / "docs" / "install.md").read_text()
    [block] = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if marker in b]
    commands = []
    for line in block.splitlines():
        command = line.split(" # ")[0].strip()
        if not command.startswith("kubectl "):
            continue
        command = command.replace("release-name=pull-secret-webhook", f"release-name={RELEASE}")
        command = command.replace("=pull-secret-webhook ", f"={HELM_NAMESPACE} ")
        command = command.replace("-n pull-secret-webhook ", f"-n {HELM_NAMESPACE} ")
        command = command.replace("lease pull-secret-webhook ", f"lease {FULLNAME} ")
        commands.append(shlex.split(command)[1:])
    assert commands, marker
    return commands


def test_helm_uninstall_keeps_both_crds_and_the_documented_commands_remove_the_rest(
    controlplane: ControlPlane, helm_run: HelmRun, helm_installed: float
) -> None:
    cp = controlplane
    helm_run("uninstall", RELEASE, "--namespace", HELM_NAMESPACE, "--wait")
    names = cp.kubectl("get", "crds", "-o", "name").stdout
    assert [c for c in CRDS if c in names] == list(CRDS)
    # What the webhook wrote stays: its records, and a marker beside each pull secret.
    assert cp.kubectl("get", "managedpullsecrets", "-A", "-o", "name").stdout.split()
    assert cp.kubectl("get", "pullsecretmarkers", "-A", "-o", "name").stdout.split()
    # docs/install.md, "Upgrading and uninstalling": what removes them, as written.
    for command in documented_commands("kubectl delete pullsecretmarkers"):
        cp.kubectl(*command)
    names = cp.kubectl("get", "crds", "-o", "name").stdout
    assert not [c for c in CRDS if c in names]
    leases = cp.kubectl("get", "leases", "-n", HELM_NAMESPACE, "-o", "name").stdout
    assert FULLNAME not in leases
    labelled = cp.kubectl("get", "namespaces", "-l", INJECT_LABEL, "-o", "name").stdout
    assert labelled.split() == []


def test_helm_upgrade_from_the_previous_chart_applies_the_new_crd(
    controlplane: ControlPlane, node: Node, registry: Registry, helm_run: HelmRun,
    artifacts: Artifacts, helm_installed: float,
) -> None:  # fmt: skip
    cp = controlplane
    if RELEASE in helm_run("list", "--namespace", HELM_NAMESPACE, "-q").split():
        test_helm_uninstall_keeps_both_crds_and_the_documented_commands_remove_the_rest(
            cp, helm_run, helm_installed
        )
    installed = helm_run.install_or_upgrade("install", PREVIOUS)
    old = get_json(cp, "crd", CRDS[0])["spec"]["versions"][0]
    assert "renewedAt" not in old["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    # docs/install.md, "From chart 0.1.0": the CRDs handed to the release, as written.
    for command in documented_commands("kubectl annotate crd"):
        cp.kubectl(*command)
    # The new replica starts beside the old one (maxSurge 1, maxUnavailable 0): on one
    # host network it needs ports of its own, or the rollout never finishes.
    moved = helm_values(cp, registry, helm_run.workdir / "upgrade-values.yaml")
    upgraded = helm_run.install_or_upgrade("upgrade", artifacts.chart, moved)
    new = get_json(cp, "crd", CRDS[0])
    [version] = new["spec"]["versions"]
    assert "renewedAt" in version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert "Renewed" in [c["name"] for c in version["additionalPrinterColumns"]]
    assert new["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The upgraded webhook writes the new field, which the old schema would have pruned.
    record = pod_gets_its_pull_secret(cp, node, registry, HELM_NAMESPACE)
    assert record["status"]["renewedAt"]
    print(f"helm install 0.1.0: {installed:.1f}s; helm upgrade to {VERSION}: {upgraded:.1f}s")
    print(f"release-artifacts (image included): {artifacts.seconds:.1f}s")
