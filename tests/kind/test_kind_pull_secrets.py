"""The webhook on a kind cluster: the kubelet pulls from a registry that refuses anonymous
pulls, with exactly the secret the webhook wrote; unlabelled namespaces, dry runs and the
loss of a replica behave as docs/install.md says."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.kind.conftest import (
    CREDENTIALS_SECRET,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    WEBHOOK_DEPLOYMENT,
    WEBHOOK_NAMESPACE,
    WEBHOOK_POD_SELECTOR,
    Kubectl,
    dry_run_pod,
    managed_secrets,
    pod_manifest,
    pod_spec,
    pull_secret_names,
    wait_for,
)

# The suite's own budget instead of the project's 120 s per test: a pod start includes
# scheduling, a pull and possibly the kubelet's pull back-off.
pytestmark = pytest.mark.timeout(300)

#: The local registry answers in milliseconds; this leaves room for the kubelet's pull
#: back-off (10 s, 20 s, 40 s, ...) should a first attempt race the secret's creation.
RUNNING_TIMEOUT_SECONDS = 120.0
#: The kubelet reports ErrImagePull right after its first attempt, seconds after scheduling.
PULL_FAILURE_TIMEOUT_SECONDS = 60.0
#: Events are recorded asynchronously and may trail the pod's status by a few seconds.
EVENT_TIMEOUT_SECONDS = 30.0
#: The kubelet's image pull back-off starts at 10 s: looking again after 15 s sees the
#: outcome of its retry, not only of the first attempt.
PULL_RETRY_SECONDS = 15.0
#: 0.6 x 10 s, the most an admission spends minting (admission.budgetFraction x
#: timeoutSeconds): a secret a dry run had set off would exist by then.
DRY_RUN_SETTLE_SECONDS = 6.0
#: Enough parallel kubectl clients that an admission is in flight at every moment of the
#: replica's shutdown, few enough for a laptop's API server.
ADMISSION_WORKERS = 4
#: The replacement replica starts from an image already on the node; readiness is probed
#: every 5 s.
RECOVERY_TIMEOUT_SECONDS = 120.0
#: Fewer admissions than this during a replica's replacement would not show much.
MIN_ADMISSIONS = 20
#: manifests/base/deployment.yaml runs two replicas.
REPLICAS = 2
#: An image pull the registry refused for lack of credentials (HTTP 401), as opposed to
#: one that failed because the registry was unreachable.
UNAUTHORIZED = re.compile(r"401|unauthori[sz]ed|authoriz", re.IGNORECASE)


def deployment_manifest(name: str, namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(image)},
        },
    }


def pods(kubectl: Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json(
        "get", "pods", f"--namespace={namespace}", f"--selector={selector}"
    )["items"]
    return items


def waiting_reason(pod: dict[str, Any]) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    for status in statuses:
        waiting = status.get("state", {}).get("waiting")
        if waiting:
            return str(waiting.get("reason", ""))
    return ""


def event_messages(kubectl: Kubectl, namespace: str, pod: str, reason: str) -> list[str]:
    """The messages of a pod's events with this reason (the kubelet's Pulled, Failed)."""
    events = kubectl.json(
        "get",
        "events",
        f"--namespace={namespace}",
        f"--field-selector=involvedObject.name={pod},reason={reason}",
    )["items"]
    return [str(e.get("message", "")) for e in events]


def pod_report(kubectl: Kubectl, namespace: str) -> str:
    """Pods and events of a namespace, for a timeout message."""
    got = kubectl.run("get", "pods,events", f"--namespace={namespace}", check=False)
    return got.stdout + got.stderr


def decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_a_deployment_in_an_opted_in_namespace_gets_the_pull_secret_and_its_pod_pulls_and_runs(
    kubectl: Kubectl, opted_in_namespace: str, registry_image: str, registry_host: str
) -> None:
    ns = opted_in_namespace
    kubectl.apply(deployment_manifest("app", ns, registry_image))

    [pod] = wait_for(
        "the Deployment's pod to be Running",
        lambda: [
            p for p in pods(kubectl, ns, "app=app") if p.get("status", {}).get("phase") == "Running"
        ],
        RUNNING_TIMEOUT_SECONDS,
        explain=lambda: pod_report(kubectl, ns),
    )

    [name] = pull_secret_names(pod)
    secret = kubectl.json("get", "secret", name, f"--namespace={ns}")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert [s["metadata"]["name"] for s in managed_secrets(kubectl, ns)] == [name]
    # Made from the Secret the config names, for the registry host of the image.
    auths = json.loads(decoded(secret, ".dockerconfigjson"))["auths"]
    assert list(auths) == [registry_host]
    source = kubectl.json("get", "secret", CREDENTIALS_SECRET, f"--namespace={WEBHOOK_NAMESPACE}")
    assert auths[registry_host]["username"] == decoded(source, "username")
    # Running with imagePullPolicy Always: the kubelet pulled the image from a registry that
    # refuses anonymous pulls (see the unlabelled namespace's test), so it used the secret.
    wait_for(
        "the kubelet's Pulled event",
        lambda: [
            m
            for m in event_messages(kubectl, ns, pod["metadata"]["name"], "Pulled")
            if "Successfully pulled" in m
        ],
        EVENT_TIMEOUT_SECONDS,
        explain=lambda: pod_report(kubectl, ns),
    )


def test_a_namespace_without_the_label_gets_no_secret_and_its_pod_cannot_pull(
    kubectl: Kubectl, plain_namespace: str, registry_image: str
) -> None:
    ns = plain_namespace
    kubectl.apply(pod_manifest("app", ns, registry_image))

    wait_for(
        "the kubelet to report that the registry refused the pull without credentials",
        lambda: [m for m in event_messages(kubectl, ns, "app", "Failed") if UNAUTHORIZED.search(m)],
        PULL_FAILURE_TIMEOUT_SECONDS,
        explain=lambda: pod_report(kubectl, ns),
    )

    time.sleep(PULL_RETRY_SECONDS)
    pod = kubectl.json("get", "pod", "app", f"--namespace={ns}")
    assert pod["status"]["phase"] == "Pending"
    assert waiting_reason(pod) in {"ErrImagePull", "ImagePullBackOff"}
    assert pull_secret_names(pod) == []
    assert managed_secrets(kubectl, ns) == []


def test_a_server_side_dry_run_is_patched_but_creates_no_secret(
    kubectl: Kubectl, opted_in_namespace: str, registry_image: str
) -> None:
    ns = opted_in_namespace

    pod = dry_run_pod(kubectl, "app", ns, registry_image)

    [name] = pull_secret_names(pod)
    assert name.startswith("psw-")  # secretPrefix in hack/kind/overlay/config.yaml
    time.sleep(DRY_RUN_SETTLE_SECONDS)
    assert managed_secrets(kubectl, ns) == []
    assert not kubectl.exists("secret", name, f"--namespace={ns}")
    assert kubectl.json("get", "pods", f"--namespace={ns}")["items"] == []


@dataclass(frozen=True)
class Admission:
    started: float
    """time.monotonic() when kubectl was started."""
    secrets: list[str]
    error: str


def admit_until(
    stop: threading.Event,
    kubectl: Kubectl,
    namespace: str,
    image: str,
    worker: int,
) -> list[Admission]:
    """Dry-run pod admissions back to back: each is a real call to the webhook (the API
    server mutates dry runs too) without leaving pods behind."""
    admissions: list[Admission] = []
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        name = f"probe-{worker}-{n}"
        result = kubectl.run(
            "apply",
            "--dry-run=server",
            "--output=json",
            "--filename=-",
            stdin=json.dumps(pod_manifest(name, namespace, image)),
            check=False,
        )
        secrets = pull_secret_names(json.loads(result.stdout)) if result.returncode == 0 else []
        admissions.append(Admission(started, secrets, result.stderr.strip()))
        n += 1
    return admissions


def replaced(kubectl: Kubectl, deleted: str) -> bool:
    """The deleted replica is gone and two ready replicas serve again."""
    if kubectl.exists("pod", deleted, f"--namespace={WEBHOOK_NAMESPACE}"):
        return False
    status = kubectl.json(
        "get", "deployment", WEBHOOK_DEPLOYMENT, f"--namespace={WEBHOOK_NAMESPACE}"
    )["status"]
    return bool(
        status.get("readyReplicas") == REPLICAS and status.get("availableReplicas") == REPLICAS
    )


def test_admissions_keep_getting_the_pull_secret_while_one_of_the_two_replicas_is_deleted(
    kubectl: Kubectl, opted_in_namespace: str, registry_image: str
) -> None:
    ns = opted_in_namespace
    [expected] = pull_secret_names(dry_run_pod(kubectl, "first", ns, registry_image))
    replicas = sorted(
        p["metadata"]["name"]
        for p in pods(kubectl, WEBHOOK_NAMESPACE, WEBHOOK_POD_SELECTOR)
        if not p["metadata"].get("deletionTimestamp")  # a rollout's leftover
    )
    assert len(replicas) == REPLICAS, replicas
    victim = replicas[0]

    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=ADMISSION_WORKERS) as pool:
        workers = [
            pool.submit(admit_until, stop, kubectl, ns, registry_image, w)
            for w in range(ADMISSION_WORKERS)
        ]
        try:
            deleted_at = time.monotonic()
            kubectl.run("delete", "pod", victim, f"--namespace={WEBHOOK_NAMESPACE}", "--wait=false")
            wait_for(
                f"replica {victim} to be replaced",
                lambda: replaced(kubectl, victim),
                RECOVERY_TIMEOUT_SECONDS,
                explain=lambda: pod_report(kubectl, WEBHOOK_NAMESPACE),
            )
        finally:
            stop.set()
        admissions = [a for w in workers for a in w.result()]

    assert len([a for a in admissions if a.started >= deleted_at]) >= MIN_ADMISSIONS
    unpatched = [a for a in admissions if a.secrets != [expected]]
    when = sorted(round(a.started - deleted_at, 2) for a in unpatched)
    assert not unpatched, (
        f"{len(unpatched)} of {len(admissions)} admissions without {expected} "
        f"(started at these seconds after the deletion: {when}; "
        f"first error: {next((a.error for a in unpatched if a.error), '-')})"
    )
