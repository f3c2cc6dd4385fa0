"""``make run``: the webhook doing its job on a local cluster, then left up to explore.

Starts etcd + kube-apiserver + kube-controller-manager and a real node
(containerd, kubelet, kube-scheduler), the Azure emulator with an ACR login
server in front of a real registry, a second registry standing in for ECR (with
moto for the ECR API), and the webhook under its own ServiceAccount; labels a
namespace and applies a Deployment with one image from each registry. The
kubelet pulls both images with the secrets the webhook wrote and the pods run:
it prints each pod's phase, its imagePullSecrets and a line of each
container's output, then shows a pod in an unlabelled namespace refused by the
registry. Then it prints the KUBECONFIG line and waits for Ctrl-C.

With ``--no-playground`` it runs the webhook locally against the cluster
``KUBECONFIG`` points at, with the config given by ``--config``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devenv.controlplane import ControlPlane, MissingBinariesError, locate
from devenv.node.build import MissingNodeBinariesError, locate_node
from devenv.node.harness import Node
from devenv.node.pods import (
    echo_containers,
    pod_state,
    pull_events,
    running_pod,
    trust_stack_registries,
    wait_for_log,
    wait_for_pod,
)
from devenv.stack import Stack, running_stack
from webhook.certs.pki import make_ca, make_serving_cert

DEMO_NAMESPACE = "demo"
PLAIN_NAMESPACE = "no-inject"
REPLICAS = 2


def _say(text: str = "") -> None:
    print(text, flush=True)


def _deployment(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello", "namespace": DEMO_NAMESPACE},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "containers": echo_containers(
                        {"from-acr": stack.acr_image, "from-ecr": stack.ecr_image}
                    ),
                    "terminationGracePeriodSeconds": 1,
                },
            },
        },
    }


def _demo_pods(cp: ControlPlane, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "pods", "-n", DEMO_NAMESPACE, "-l", "app=hello", "-o", "json")
        names = [p["metadata"]["name"] for p in json.loads(out.stdout)["items"]]
        if len(names) == REPLICAS:
            return sorted(names)
        time.sleep(0.3)
    raise RuntimeError("the Deployment made no pods in time")


def _registries(cp: ControlPlane, secret: str) -> str:
    """The registries a pull secret is for (never its credentials)."""
    doc = json.loads(cp.kubectl("get", "secret", secret, "-n", DEMO_NAMESPACE, "-o", "json").stdout)
    auths = json.loads(base64.b64decode(doc["data"][".dockerconfigjson"]))["auths"]
    return ", ".join(sorted(auths))


def _show_pods(cp: ControlPlane, node: Node) -> bool:
    """Wait for the demo pods to run; print phase, pull secrets and output. True if all ran."""
    ok = True
    for name in _demo_pods(cp):
        try:
            pod, waited = wait_for_pod(cp, DEMO_NAMESPACE, name, timeout=90)
        except AssertionError as e:
            _say(f"\npod {name}: FAILED: {e}")
            ok = False
            continue
        _say(f"\npod {name}: {pod['status']['phase']} on {pod['spec']['nodeName']} ({waited:.1f}s)")
        for ref in pod["spec"].get("imagePullSecrets") or []:
            _say(f"  imagePullSecret {ref['name']}  (for {_registries(cp, ref['name'])})")
        for container in pod["spec"]["containers"]:
            lines = wait_for_log(node, DEMO_NAMESPACE, name, container["name"])
            _say(f"  {container['name']} says: {lines[0]}")
    return ok


def _show_contrast(cp: ControlPlane, stack: Stack) -> bool:
    """A pod in an unlabelled namespace gets no secret; the registry refuses the kubelet."""
    cp.kubectl("create", "namespace", PLAIN_NAMESPACE)
    cp.wait_for_service_account(PLAIN_NAMESPACE)
    _say(f"\n$ kubectl run -n {PLAIN_NAMESPACE} nosecret --image={stack.acr_image}")
    _say("  (namespace not labelled: the webhook leaves the pod alone)")
    manifest = running_pod("nosecret", {"app": stack.acr_image})
    cp.kubectl("apply", "-n", PLAIN_NAMESPACE, "-f", "-", input=json.dumps(manifest))
    try:
        pod, _ = wait_for_pod(cp, PLAIN_NAMESPACE, "nosecret", running=False, timeout=30)
    except AssertionError as e:
        _say(f"  unexpected: {e}")
        return False
    failures = [e for e in pull_events(cp, PLAIN_NAMESPACE, "nosecret") if "401" in e]
    reason, _ = next(iter(pod_state(pod).waiting.values()))
    _say(f"pod nosecret: {pod['status']['phase']}, {reason}")
    if failures:
        # containerd's message ends with the registry's answer: "... 401 Unauthorized".
        _say(f"  {failures[0][:90]} … {failures[0][-120:]}")
    return bool(failures)


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def playground(workdir: Path) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    try:
        binaries = locate()
        node_binaries = locate_node()
    except (MissingBinariesError, MissingNodeBinariesError) as e:
        _say(f"error: {e}")
        return 2
    _say("starting etcd, kube-apiserver and kube-controller-manager …")
    with ControlPlane(binaries) as cp:
        _say(f"control plane ready at {cp.server}")
        _say("starting the identity emulator, the registries, moto and the webhook …")
        with (
            running_stack(
                cp,
                workdir / "stack",
                replicas_wanted=1,
                refresh_interval=30,
                gc_grace=3600,
                failure_policy="Ignore",
            ) as stack,
            Node(cp, node_binaries) as node,
        ):
            trust_stack_registries(node, stack)
            _say(f"node {node.name} Ready in {node.startup_seconds:.1f}s (containerd, kubelet)")
            cp.kubectl("create", "namespace", DEMO_NAMESPACE)
            cp.kubectl("label", "namespace", DEMO_NAMESPACE, "pull-secret-webhook/inject=enabled")
            cp.wait_for_service_account(DEMO_NAMESPACE)
            _say(f"\n$ kubectl label namespace {DEMO_NAMESPACE} pull-secret-webhook/inject=enabled")
            _say("$ kubectl apply -f deployment.yaml   # images:")
            _say(f"    {stack.acr_image}   (ACR, workload identity)")
            _say(f"    {stack.ecr_image}   (ECR-style registry, AWS credentials)")
            cp.kubectl("apply", "-f", "-", input=json.dumps(_deployment(stack)))
            ran = _show_pods(cp, node)
            refused = _show_contrast(cp, stack)
            failed = not (ran and refused)
            if not ran:
                _say("webhook log:\n" + stack.logs() + "\nnode logs:\n" + node.log_tails(20))
            _say("\nThe playground stays up. In another shell:")
            kubectl = cp.binaries.kubectl
            _say(f"  export KUBECONFIG={cp.kubeconfig}")
            _say(f"  {kubectl} get pods,secrets -n {DEMO_NAMESPACE} -o wide")
            _say(f"  {kubectl} run t -n {DEMO_NAMESPACE} --image={stack.acr_image} -- sleep 600")
            jsonpath = "-o jsonpath='{.spec.imagePullSecrets}'"
            _say(f"  {kubectl} get pod t -n {DEMO_NAMESPACE} {jsonpath}")
            # kubectl logs needs the node's address, and a loopback-only node has none.
            _say(f"pod logs (instead of kubectl logs): {node.pod_logs_dir}")
            _say(f"webhook log: {stack.replicas[0].log}; node logs: {node.workdir}/*.log")
            _say("Press Ctrl-C to stop and clean up.")
            if os.environ.get("PLAYGROUND_EXIT") == "1":  # for scripted smoke runs
                return 1 if failed else 0
            _wait_for_interrupt()
            _say("\nstopping …")
    return 0


def local_webhook(config: str, workdir: Path) -> int:
    """Run the webhook against the cluster KUBECONFIG points at (no playground)."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        _say("error: --no-playground needs KUBECONFIG pointing at a cluster")
        return 2
    ca = make_ca("pull-secret-webhook-local-ca")
    make_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(
        workdir / "tls.crt", workdir / "tls.key"
    )
    (workdir / "ca.crt").write_bytes(ca.cert_pem)
    _say(f"serving on https://127.0.0.1:8443/mutate (CA: {workdir / 'ca.crt'})")
    cmd = [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--config",
        config,
        "--kubeconfig",
        kubeconfig,
        "--cert-file",
        str(workdir / "tls.crt"),
        "--key-file",
        str(workdir / "tls.key"),
        "--bind",
        "127.0.0.1",
        "--health-bind",
        "127.0.0.1",
    ]
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument(
        "--no-playground",
        action="store_true",
        help="run the webhook locally against $KUBECONFIG's cluster",
    )
    parser.add_argument("--config", help="registry config for --no-playground")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="psw-run-") as tmp:
        if args.no_playground:
            if not args.config:
                parser.error("--no-playground needs --config FILE")
            return local_webhook(args.config, Path(tmp))
        return playground(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
