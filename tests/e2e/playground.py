"""``make run``: the webhook doing its job on a local control plane, then left up to explore.

Starts etcd + kube-apiserver + kube-controller-manager, the Azure emulator with
an ACR login server in front of a real registry, a second registry standing in
for ECR (with moto for the ECR API), and the webhook under its own
ServiceAccount; labels a namespace, applies a Deployment with one image from
each registry, prints the pod's imagePullSecrets and pulls its images with the
secrets the webhook wrote. Then it prints the KUBECONFIG line and waits for
Ctrl-C.

With ``--no-playground`` it runs the webhook locally against the cluster
``KUBECONFIG`` points at, with the config given by ``--config``.
"""

from __future__ import annotations

import argparse
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

from tests.e2e.controlplane import ControlPlane, MissingBinariesError, locate
from tests.e2e.stack import Stack, running_stack
from webhook.pki import make_ca, make_serving_cert
from webhook.pullsecrets import ANN_HOST, MANAGED_SELECTOR

DEMO_NAMESPACE = "demo"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _deployment(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hello", "namespace": DEMO_NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "containers": [
                        {"name": "from-acr", "image": stack.acr_image},
                        {"name": "from-ecr", "image": stack.ecr_image},
                    ]
                },
            },
        },
    }


def _wait_for_pod(cp: ControlPlane, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cp.kubectl("get", "pods", "-n", DEMO_NAMESPACE, "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        if items:
            return items[0]
        time.sleep(0.3)
    raise RuntimeError("the Deployment made no pod in time")


def _pull(stack: Stack, cp: ControlPlane, secret: str, image: str, workdir: Path) -> str:
    doc = json.loads(cp.kubectl("get", "secret", secret, "-n", DEMO_NAMESPACE, "-o", "json").stdout)
    result = stack.pull_with_secret(doc, image, workdir)
    if result.ok:
        return "ok (manifest, config and layers read)"
    return f"FAILED: {result.stderr.strip()[:300]}"


def _secrets_by_host(cp: ControlPlane) -> dict[str, str]:
    out = cp.kubectl(
        "get", "secrets", "-n", DEMO_NAMESPACE, "-l", MANAGED_SELECTOR, "-o", "json"
    ).stdout
    return {
        s["metadata"]["annotations"][ANN_HOST]: s["metadata"]["name"]
        for s in json.loads(out)["items"]
    }


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
    except MissingBinariesError as e:
        _say(f"error: {e}")
        return 2
    _say("starting etcd, kube-apiserver and kube-controller-manager …")
    with ControlPlane(binaries) as cp:
        _say(f"control plane ready at {cp.server}")
        _say("starting the identity emulator, two registries, moto and the webhook …")
        with running_stack(
            cp,
            workdir / "stack",
            replicas_wanted=1,
            refresh_interval=30,
            gc_grace=3600,
            failure_policy="Ignore",
        ) as stack:
            cp.kubectl("create", "namespace", DEMO_NAMESPACE)
            cp.kubectl("label", "namespace", DEMO_NAMESPACE, "pull-secret-webhook/inject=enabled")
            cp.wait_for_service_account(DEMO_NAMESPACE)
            _say(f"\n$ kubectl label namespace {DEMO_NAMESPACE} pull-secret-webhook/inject=enabled")
            _say("$ kubectl apply -f deployment.yaml   # images:")
            _say(f"    {stack.acr_image}   (ACR, workload identity)")
            _say(f"    {stack.ecr_image}   (ECR-style registry, AWS credentials)")
            cp.kubectl("apply", "-f", "-", input=json.dumps(_deployment(stack)))
            pod = _wait_for_pod(cp)
            secrets = [r["name"] for r in pod["spec"].get("imagePullSecrets") or []]
            _say(f"\npod {pod['metadata']['name']} imagePullSecrets:")
            for name in secrets:
                _say(f"  - {name}")
            if len(secrets) != 2:
                _say("error: expected two pull secrets; webhook log:\n" + stack.logs())
                return 1
            _say("\npulling each image with the secret the webhook wrote (skopeo):")
            failed = False
            by_host = _secrets_by_host(cp)
            for container in pod["spec"]["containers"]:
                secret = by_host[container["image"].split("/")[0]]
                outcome = _pull(stack, cp, secret, container["image"], workdir)
                failed |= not outcome.startswith("ok")
                _say(f"  {container['image']}\n    with {secret}: {outcome}")
            _say("\nThe playground stays up. In another shell:")
            kubectl = cp.binaries.kubectl
            _say(f"  export KUBECONFIG={cp.kubeconfig}")
            _say(f"  {kubectl} get pods,secrets -n {DEMO_NAMESPACE}")
            _say(f"  {kubectl} run t -n {DEMO_NAMESPACE} --image={stack.acr_image}")
            jsonpath = "-o jsonpath='{.spec.imagePullSecrets}'"
            _say(f"  {kubectl} get pod t -n {DEMO_NAMESPACE} {jsonpath}")
            _say(f"webhook log: {stack.replicas[0].log}")
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
