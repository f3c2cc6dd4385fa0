"""What the webhook's identity and inputs can and cannot do, on the real API server.

Every kubectl call here runs with the webhook's real ServiceAccount token (the one the
replicas run with), never with impersonation: what the API server allows that token
is exactly what a compromised replica could do. RBAC comes from manifests/ and the
per-pod identity component; the ValidatingAdmissionPolicies come from the same place.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest

from devenv.processes import wait_for
from devenv.stack import NAMESPACE, Replica, Stack
from devenv.support.reviews import make_pod, make_review
from tests.e2e.support import (
    admission_results,
    get_json,
    managed_secrets,
    ns_name,
    pod_manifest,
    pull_secret_names,
    record_of,
    secret_name_preview,
)
from webhook.kube.calls import Kube
from webhook.kube.client import connect
from webhook.kube.errors import ApiError, ForbiddenError, InvalidError
from webhook.pullsecrets.records import marker_object
from webhook.pullsecrets.secret import ANN_EXPIRES, MANAGED_BY, MANAGER

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

#: The policies are loaded by the API server from its own informer: give a freshly
#: applied one a moment before counting on it (it is there long before the first test).
POLICY_SETTLE_SECONDS = 10.0


def denied(result: Any) -> bool:
    return result.returncode != 0 and (
        "forbidden" in result.stderr.lower() or "denied" in result.stderr.lower()
    )


def pull_secret_doc(namespace: str, name: str, *, labelled: bool = True) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace},
        "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()},
    }
    if labelled:
        doc["metadata"]["labels"] = {MANAGED_BY: MANAGER}
    return json.dumps(doc)


@pytest.mark.parametrize(
    "args",
    [
        ("get", "secrets", "-A"),
        ("get", "secrets", "-n", "kube-system"),
        ("get", "secrets", "-n", NAMESPACE),
        ("get", "secrets", "-n", "default", "--watch", "--request-timeout=2s"),
    ],
    ids=["list-all", "list-kube-system", "list-own-namespace", "watch"],
)
def test_the_webhook_identity_cannot_list_or_watch_secrets(
    stack: Stack, args: tuple[str, ...]
) -> None:
    result = stack.as_webhook(*args)
    assert denied(result), result.stdout + result.stderr


@pytest.mark.parametrize("resource", ["flowschemas", "prioritylevelconfigurations"])
def test_the_webhook_identity_cannot_change_its_own_priority(stack: Stack, resource: str) -> None:
    """The optional FlowSchema (components/flow-schema) is the installer's to make: the
    webhook cannot give its own requests more of the API server, or others' less."""
    group = f"{resource}.flowcontrol.apiserver.k8s.io"
    for verb in ("create", "update", "patch", "delete"):
        answer = stack.as_webhook("auth", "can-i", verb, group)
        assert answer.stdout.strip() == "no", (verb, answer.stdout, answer.stderr)
    doc = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": f"psw-{uuid.uuid4().hex[:6]}"},
        "spec": {"priorityLevelConfiguration": {"name": "exempt"}, "matchingPrecedence": 2},
    }
    if resource == "flowschemas":
        assert denied(stack.as_webhook("create", "-f", "-", input=json.dumps(doc)))


def test_the_webhook_identity_cannot_read_even_the_secrets_it_wrote(stack: Stack) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("noread"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    [secret] = managed_secrets(cp, ns)
    result = stack.as_webhook("get", "secret", secret["metadata"]["name"], "-n", ns)
    assert denied(result), result.stdout
    for verb in ("get", "list", "watch"):
        answer = stack.as_webhook("auth", "can-i", verb, "secrets", "-n", ns)
        assert answer.stdout.strip() == "no", (verb, answer.stdout)


@pytest.mark.parametrize(
    ("namespace", "service_account", "extra"),
    [
        ("kube-system", "clusterrole-aggregation-controller", ("--audience=sts.amazonaws.com",)),
        (NAMESPACE, "pull-secret-webhook", ("--audience=sts.amazonaws.com",)),
        ("unlabelled", "default", ("--audience=sts.amazonaws.com",)),
        ("labelled", "default", ()),  # the API server's own audience: a Kubernetes login
        ("labelled", "default", ("--audience=https://kubernetes.default.svc",)),
        ("labelled", "default", ("--audience=sts.amazonaws.com", "--duration=48h")),
    ],
    ids=[
        "kube-system-controller",
        "own-namespace",
        "unlabelled-namespace",
        "kubernetes-audience",
        "other-audience",
        "long-lived",
    ],
)
def test_the_webhook_identity_cannot_mint_tokens_it_does_not_need(
    stack: Stack, namespace: str, service_account: str, extra: tuple[str, ...]
) -> None:
    cp = stack.controlplane
    if namespace in ("labelled", "unlabelled"):
        namespace = stack.labelled_namespace(ns_name("tok"), inject=namespace == "labelled")
    result = stack.as_webhook("create", "token", service_account, "-n", namespace, *extra)
    assert denied(result), result.stdout[:40]
    assert result.stdout.strip() == ""
    # The escalation the issue describes stays closed: still no wildcard rights.
    assert stack.as_webhook("auth", "can-i", "*", "*").stdout.strip() == "no"
    del cp


def test_the_webhook_identity_mints_the_tokens_per_pod_identity_needs(stack: Stack) -> None:
    ns = stack.labelled_namespace(ns_name("tokok"))
    # The stack's policy lists its gar entry's pool provider, as docs/gcp-federation.md says.
    google = "https:" + stack.gar_audience
    for audience in ("api://AzureADTokenExchange", "sts.amazonaws.com", google):
        result = stack.as_webhook(
            "create", "token", "default", "-n", ns, f"--audience={audience}", "--duration=10m"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count(".") == 2  # a JWT
    # Another pool's provider, never listed, is refused: adding a gar entry's audience
    # opens that audience only.
    other = google.replace("/providers/", "/providers/not-").replace("/clusters/", "/others/")
    refused = stack.as_webhook(
        "create", "token", "default", "-n", ns, f"--audience={other}", "--duration=10m"
    )
    assert denied(refused), refused.stdout[:40]


def test_the_webhook_identity_writes_only_its_own_kind_of_secret_where_it_belongs(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    opted = stack.labelled_namespace(ns_name("w-in"))
    unlabelled = stack.labelled_namespace(ns_name("w-out"), inject=False)
    name = f"psw-probe-{uuid.uuid4().hex[:6]}"
    # What it must be able to do: its own kind of Secret, in an opted-in namespace.
    made = stack.as_webhook("create", "-f", "-", input=pull_secret_doc(opted, name))
    assert made.returncode == 0, made.stderr
    # What it must not: another type, no label, another prefix, elsewhere.
    opaque = stack.as_webhook(
        "create", "secret", "generic", "psw-opaque", "-n", opted, "--from-literal=a=b"
    )
    assert denied(opaque), opaque.stdout
    unlabelled_doc = pull_secret_doc(opted, "psw-unlabelled", labelled=False)
    assert denied(stack.as_webhook("create", "-f", "-", input=unlabelled_doc))
    assert denied(stack.as_webhook("create", "-f", "-", input=pull_secret_doc(opted, "other")))
    for where in (unlabelled, "kube-system", NAMESPACE, "default"):
        result = stack.as_webhook("create", "-f", "-", input=pull_secret_doc(where, name))
        assert denied(result), (where, result.stdout)
    # Foreign Secrets can be neither changed nor deleted, labelled namespace or not.
    cp.kubectl("create", "secret", "generic", "team-db", "-n", opted, "--from-literal=pw=hunter2")
    assert denied(stack.as_webhook("delete", "secret", "team-db", "-n", opted))
    relabel = stack.as_webhook("label", "secret", "team-db", "-n", opted, f"{MANAGED_BY}={MANAGER}")
    assert denied(relabel), relabel.stdout
    kube_system = json.loads(cp.kubectl("get", "secrets", "-n", "kube-system", "-o", "json").stdout)
    for item in kube_system["items"][:3]:
        victim = item["metadata"]["name"]
        assert denied(stack.as_webhook("delete", "secret", victim, "-n", "kube-system"))
    assert base64.b64decode(get_json(cp, "secret", "team-db", "-n", opted)["data"]["pw"]) == (
        b"hunter2"
    )
    # Markers (owned by its pull secrets, data-less) only where it may write Secrets too.
    # (Owned by the Secret of its own name, as records.marker_object writes it: the other
    # shapes are refused, test_attacks.py tries each.)
    uid = get_json(cp, "secret", name, "-n", opted)["metadata"]["uid"]
    for where, allowed in ((opted, True), (unlabelled, False), ("kube-system", False)):
        marker = marker_object(where, name, uid)
        result = stack.as_webhook("create", "-f", "-", input=json.dumps(marker))
        assert (result.returncode == 0) is allowed, (where, result.stderr)
    # And its own again: it may delete what it made.
    assert stack.as_webhook("delete", "secret", name, "-n", opted).returncode == 0


def test_the_write_policy_refuses_a_secret_that_lost_its_label_as_invalid_not_forbidden(
    stack: Stack,
) -> None:
    """The writer leaves alone (Foreign) a Secret the policy refuses because it is no longer
    labelled as the webhook's, and retries one refused for want of rights. The policy's
    messages do not tell the two apart for it: the status does, as the webhook's own
    client classifies it (InvalidError, a 422, against ForbiddenError, a 403)."""
    cp = stack.controlplane
    unlabelled_secret = stack.labelled_namespace(ns_name("relabelled"))
    opted_out = stack.labelled_namespace(ns_name("opted-out"))
    name = f"psw-own-{uuid.uuid4().hex[:6]}"
    uids = {}
    for where in (unlabelled_secret, opted_out):
        made = stack.as_webhook(
            "create", "-o", "json", "-f", "-", input=pull_secret_doc(where, name)
        )
        assert made.returncode == 0, made.stderr
        uids[where] = json.loads(made.stdout)["metadata"]["uid"]
    cp.kubectl("label", "secret", name, "-n", unlabelled_secret, f"{MANAGED_BY}-")
    cp.kubectl("label", "namespace", opted_out, "pull-secret-webhook/inject-")
    assert stack.webhook_kubeconfig is not None
    kubeconfig = stack.webhook_kubeconfig

    async def renew(where: str) -> ApiError | None:
        """The writer's renewal: a replace naming the UID of the Secret it made."""
        kube = Kube(await connect(kubeconfig))
        body = json.loads(pull_secret_doc(where, name))
        body["metadata"]["uid"] = uids[where]
        try:
            await kube.replace_secret(where, name, body)
        except ApiError as e:
            return e
        finally:
            await kube.close()
        return None

    no_longer_ours = asyncio.run(renew(unlabelled_secret))
    assert isinstance(no_longer_ours, InvalidError), no_longer_ours
    assert "did not label as its own" in no_longer_ours.message
    not_allowed_there = asyncio.run(renew(opted_out))
    assert isinstance(not_allowed_there, ForbiddenError), not_allowed_there
    # Neither Secret was changed.
    assert MANAGED_BY not in (
        get_json(cp, "secret", name, "-n", unlabelled_secret)["metadata"].get("labels") or {}
    )


def _refused(replica: Replica) -> float:
    return admission_results(replica.metrics()).get("refused", 0.0)


def _secret_writes(replica: Replica) -> float:
    total = 0.0
    for line in replica.metrics().splitlines():
        if line.startswith("pull_secret_webhook_secret_writes_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_forged_reviews_for_namespaces_that_did_not_opt_in_write_nothing(stack: Stack) -> None:
    cp = stack.controlplane
    unlabelled = stack.labelled_namespace(ns_name("forged"), inject=False)
    # Labelled, yet excluded: the system namespaces and the webhook's own.
    for excluded in ("kube-system", NAMESPACE):
        cp.kubectl("label", "namespace", excluded, "pull-secret-webhook/inject=enabled")
    missing = [f"nowhere-{uuid.uuid4().hex[:6]}" for _ in range(20)]
    targets = [unlabelled, "kube-system", NAMESPACE, *missing]
    # The forged reviews go to a replica of their own: the shared ones keep refreshing
    # other tests' secrets, which would blur a count of writes.
    try:
        with stack.extra_replica("webhook-forged") as replica:
            for i, namespace in enumerate(targets):
                pod = make_pod(stack.acr_image, stack.ecr_image, namespace=namespace, name=f"p{i}")
                answer = stack.post_review(replica, make_review(pod, namespace=namespace))
                response = answer["response"]
                assert response["allowed"] is True
                assert "patch" not in response, namespace
            time.sleep(3 * stack.refresh_interval + 1)  # nothing may follow in the background
            assert _refused(replica) == len(targets)
            assert _secret_writes(replica) == 0
        for namespace in (unlabelled, "kube-system", NAMESPACE):
            assert managed_secrets(cp, namespace) == [], namespace
            assert (
                get_json(
                    cp, "events", "-n", namespace, "--field-selector", "reason=PullSecretNotReady"
                )["items"]
                == []
            )
        records = get_json(cp, "managedpullsecrets.pull-secret-webhook.io", "-n", NAMESPACE)
        assert not [r for r in records["items"] if r["spec"]["namespace"] in {*targets}]
    finally:
        for excluded in ("kube-system", NAMESPACE):
            cp.kubectl("label", "namespace", excluded, "pull-secret-webhook/inject-")


def test_a_planted_labelled_secret_is_never_adopted_refreshed_used_or_deleted(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("planted"))
    # A namespace member learns the name the webhook would use (a dry run shows it)...
    name = secret_name_preview(cp, ns, stack.ecr_image)
    # ...and plants a Secret there with the webhook's label and a far-off expiry, plus an
    # unrelated labelled one the garbage collector must not take.
    planted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {MANAGED_BY: MANAGER},
            "annotations": {ANN_EXPIRES: "2099-01-01T00:00:00Z"},
        },
        "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{"evil":{}}}').decode()},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(planted))
    cp.kubectl(
        "create",
        "secret",
        "generic",
        "app-database-credentials",
        "-n",
        ns,
        "--from-literal=password=s3cret",
    )
    cp.kubectl("label", "secret", "app-database-credentials", "-n", ns, f"{MANAGED_BY}={MANAGER}")
    before = get_json(cp, "secret", name, "-n", ns)

    result = cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image))
    )
    assert name in result.stderr and "not managed by the webhook" in result.stderr
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == []
    assert record_of(cp, ns, name)["status"]["state"] == "Foreign"
    cp.kubectl("delete", "pod", "p", "-n", ns, "--grace-period=0", "--force", check=False)
    # Several refresh passes and more than the garbage-collection grace period later:
    time.sleep(stack.gc_grace + 4 * stack.refresh_interval + 2)
    after = get_json(cp, "secret", name, "-n", ns)
    assert after["data"] == before["data"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert get_json(cp, "secret", "app-database-credentials", "-n", ns)["data"]


def test_a_managed_secret_someone_deletes_is_recreated_within_a_refresh_interval(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("deleted"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    [secret] = managed_secrets(cp, ns)
    name, uid = secret["metadata"]["name"], secret["metadata"]["uid"]
    cp.kubectl("delete", "secret", name, "-n", ns)
    started = time.monotonic()

    def recreated() -> dict[str, Any] | None:
        found = managed_secrets(cp, ns)
        return found[0] if found and found[0]["metadata"]["uid"] != uid else None

    again = wait_for("the secret to be re-created", recreated, timeout=30)
    took = time.monotonic() - started
    # One refresh interval, plus the leader's pass cadence (a Lease tick) and slack.
    assert took < stack.refresh_interval + 10, took
    assert record_of(cp, ns, name)["status"]["secretUID"] == again["metadata"]["uid"]


def _pending_pod(cp: Any, namespace: str, name: str) -> None:
    """A pod no kubelet runs (this control plane has no node), of an image no registry
    entry serves: the webhook makes nothing for it. Pod Security "restricted" allows it
    (the webhook's namespace enforces that)."""
    container = {
        "name": "c",
        "image": "registry.invalid/victim:1",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [container],
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _evict(stack: Stack, namespace: str, name: str, **delete_options: Any) -> Any:
    eviction: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    }
    if delete_options:
        eviction["deleteOptions"] = delete_options
    path = f"/api/v1/namespaces/{namespace}/pods/{name}/eviction"
    return stack.as_webhook("create", "--raw", path, "-f", "-", input=json.dumps(eviction))


def _pod_exists(cp: Any, namespace: str, name: str) -> bool:
    return bool(cp.kubectl("get", "pod", name, "-n", namespace, check=False).returncode == 0)


def test_the_webhook_identity_evicts_pods_only_in_opted_in_namespaces(stack: Stack) -> None:
    """Self-healing's grant, pods/eviction create: RBAC gives it cluster-wide, the shipped
    policy holds it to namespaces that opted in (never a system namespace or its own)."""
    cp = stack.controlplane
    opted = stack.labelled_namespace(ns_name("ev-in"))
    unlabelled = stack.labelled_namespace(ns_name("ev-out"), inject=False)
    for where in (opted, unlabelled, "kube-system", NAMESPACE):
        _pending_pod(cp, where, "victim")
    try:
        # What it must not: evict where it may not write, or cut a pod's graceful stop.
        for where in (unlabelled, "kube-system", NAMESPACE):
            result = _evict(stack, where, "victim")
            assert denied(result), (where, result.stdout, result.stderr)
            # Refused by the policy (RBAC grants the eviction everywhere).
            assert "ValidatingAdmissionPolicy 'pull-secret-webhook-secrets'" in result.stderr
            assert _pod_exists(cp, where, "victim"), where
        hurried = _evict(stack, opted, "victim", gracePeriodSeconds=0)
        assert denied(hurried), hurried.stdout
        assert "termination grace period" in hurried.stderr
        assert _pod_exists(cp, opted, "victim")
        # What it must: evict a pod in an opted-in namespace (the API server deletes a pod
        # no node runs at once).
        made = _evict(stack, opted, "victim")
        assert made.returncode == 0, made.stderr
        wait_for("the evicted pod to go", lambda: not _pod_exists(cp, opted, "victim"), timeout=30)
    finally:
        for where in ("kube-system", NAMESPACE):
            cp.kubectl("delete", "pod", "victim", "-n", where, "--wait=false", check=False)


def test_the_webhook_identity_can_neither_delete_nor_change_pods(stack: Stack) -> None:
    cp = stack.controlplane
    opted = stack.labelled_namespace(ns_name("nodel"))
    _pending_pod(cp, opted, "victim")
    before = get_json(cp, "pod", "victim", "-n", opted)
    for verb in ("delete", "update", "patch", "create", "deletecollection"):
        answer = stack.as_webhook("auth", "can-i", verb, "pods", "-n", opted)
        assert answer.stdout.strip() == "no", (verb, answer.stdout)
    assert denied(stack.as_webhook("delete", "pod", "victim", "-n", opted))
    assert denied(stack.as_webhook("delete", "pods", "--all", "-n", opted))
    patched = stack.as_webhook(
        "patch", "pod", "victim", "-n", opted, "--type=merge",
        "-p", '{"metadata":{"labels":{"owned":"yes"}}}',
    )  # fmt: skip
    assert denied(patched), patched.stdout
    before_doc = json.dumps(before)
    assert denied(stack.as_webhook("replace", "-f", "-", input=before_doc))
    assert denied(stack.as_webhook("label", "pod", "victim", "-n", opted, "owned=yes"))
    after = get_json(cp, "pod", "victim", "-n", opted)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_the_webhook_identity_records_only_its_self_healing_events_on_pods(stack: Stack) -> None:
    opted = stack.labelled_namespace(ns_name("ev-evt"))
    unlabelled = stack.labelled_namespace(ns_name("ev-evt-out"), inject=False)

    def event(namespace: str, reason: str, kind: str = "Pod") -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": "victim.", "namespace": namespace},
                "involvedObject": {"kind": kind, "name": "victim", "namespace": namespace},
                "reason": reason,
                "message": "probe",
                "type": "Warning",
            }
        )

    for reason in ("PullSecretMissing", "EvictionBlocked", "EvictedForPullSecret"):
        made = stack.as_webhook("create", "-f", "-", input=event(opted, reason))
        assert made.returncode == 0, (reason, made.stderr)
    for namespace, reason, kind in (
        (opted, "Killing", "Pod"),  # words another component's Events use
        (opted, "PullSecretMissing", "Deployment"),
        (unlabelled, "PullSecretMissing", "Pod"),
        ("kube-system", "PullSecretMissing", "Pod"),
    ):
        refused = stack.as_webhook("create", "-f", "-", input=event(namespace, reason, kind))
        assert denied(refused), (namespace, reason, kind, refused.stdout)
