"""Forged reviews for namespaces that did opt in, sent straight to a replica's port by
anything that can reach it (SECURITY.md, "Who can obtain what"), on the real API server.
What the webhook then does to the API server is counted from the API server's own audit
log (devenv's AUDIT_POLICY: every write of a ServiceAccount, and its ServiceAccount reads),
never from the webhook's own metrics."""

from __future__ import annotations

import base64
import http.client
import json
import math
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devenv.processes import wait_for
from devenv.stack import NAMESPACE, SERVICE_ACCOUNT, Replica, Stack
from devenv.support.reviews import make_pod, make_review
from tests.e2e.support import get_json, managed_secrets, ns_name, pod_manifest, record_of
from webhook.pullsecrets.notices import EVENTS_PER_NAMESPACE_MINUTE
from webhook.pullsecrets.writer import NEW_SECRETS_PER_NAMESPACE_MINUTE

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

WEBHOOK_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def _audited(stack: Stack, namespace: str, since: float) -> Counter[tuple[str, str]]:
    """(verb, resource[/subresource]) → count of the webhook's requests in ``namespace``
    the API server completed since ``since`` (a time.time())."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in stack.controlplane.audit_events():
        ref = event.get("objectRef") or {}
        if event.get("user", {}).get("username") != WEBHOOK_USER:
            continue
        if ref.get("namespace") != namespace:
            continue
        stamp = event.get("stageTimestamp", "")
        if stamp and _epoch(stamp) < since:
            continue
        resource = ref.get("resource", "") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        counts[(event.get("verb", ""), resource)] += 1
    return counts


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class _Sender:
    """Reviews over kept-alive TLS connections, one per thread (as a flood would send
    them: 10,000 new handshakes would measure the handshakes)."""

    def __init__(self, stack: Stack, replica: Replica) -> None:
        assert stack.webhook_ca is not None
        self.context = ssl.create_default_context(cadata=stack.webhook_ca.cert_pem.decode())
        self.port = replica.port
        self.local = threading.local()
        self.opened: list[http.client.HTTPSConnection] = []

    def close(self) -> None:
        for conn in self.opened:
            conn.close()

    def post(self, review: dict[str, Any]) -> dict[str, Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self.context, timeout=30
            )
            self.local.conn = conn
            self.opened.append(conn)
        try:
            conn.request(
                "POST",
                "/mutate",
                body=json.dumps(review).encode(),
                headers={"Content-Type": "application/json"},
            )
            answer: dict[str, Any] = json.loads(conn.getresponse().read())
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            raise
        return answer


def _per_pod_image(stack: Stack) -> str:
    assert stack.acr_tenant is not None
    return f"{stack.acr_tenant.login_server}/demo/hello:v1"


def test_ten_thousand_forged_reviews_with_invented_service_accounts_cost_a_bounded_number_of_writes(
    stack: Stack,
) -> None:
    """Each review names a ServiceAccount that does not exist, for the per-pod registry
    entry: a fresh secret name each time, so deduplicating by name bounds nothing. The
    writes (Events included) and ServiceAccount reads the API server sees stay within the
    per-namespace buckets, however many reviews come."""
    ns = stack.labelled_namespace(ns_name("flood"))
    image = _per_pod_image(stack)
    reviews = 10_000
    since = time.time()
    started = time.monotonic()
    with stack.extra_replica("webhook-flood") as replica:
        sender = _Sender(stack, replica)

        def forge(i: int) -> bool:
            pod = make_pod(image, namespace=ns, name=f"p{i}")
            pod["spec"]["serviceAccountName"] = f"ghost-{i}"
            answer = sender.post(make_review(pod, namespace=ns))
            return bool(answer["response"]["allowed"])

        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                allowed = sum(pool.map(forge, range(reviews)))
        finally:
            sender.close()
        # The background retries of what stayed pending go on for a while: count them too.
        time.sleep(10)
        minutes = (time.monotonic() - started) / 60
        counts = _audited(stack, ns, since)
    assert allowed == reviews
    writes = sum(n for (verb, _), n in counts.items() if verb in WRITES)
    events = sum(n for (verb, res), n in counts.items() if verb == "create" and res == "events")
    lookups = counts[("get", "serviceaccounts")]
    buckets = math.ceil(minutes) + 1  # a full bucket to start with, refilled each minute
    print(f"{reviews} forged reviews in {minutes:.1f} min: {dict(counts)}")
    assert events <= EVENTS_PER_NAMESPACE_MINUTE * buckets, counts
    assert lookups <= NEW_SECRETS_PER_NAMESPACE_MINUTE * buckets, counts
    # Nothing else is written for ServiceAccounts that do not exist: only the Events.
    assert writes == events, counts
    assert events >= 1  # the bound was reached, not merely never approached
    assert managed_secrets(stack.controlplane, ns) == []


@pytest.mark.parametrize(
    "service_account",
    [
        "kube-system:clusterrole-aggregation-controller",
        "system:serviceaccount:kube-system:clusterrole-aggregation-controller",
        "../../kube-system/serviceaccounts/clusterrole-aggregation-controller",
        "..",
        "clusterrole-aggregation-controller",  # valid, but of another namespace only
    ],
    ids=["ns-colon", "username", "path", "dotdot", "other-namespaces-name"],
)
def test_a_service_account_name_of_another_namespace_gets_no_per_pod_identity(
    stack: Stack, service_account: str
) -> None:
    ns = stack.labelled_namespace(ns_name("xns"))
    since = time.time()
    with stack.extra_replica("webhook-xns") as replica:
        pod = make_pod(_per_pod_image(stack), namespace=ns, name="p")
        pod["spec"]["serviceAccountName"] = service_account
        answer = stack.post_review(replica, make_review(pod, namespace=ns))
        assert answer["response"]["allowed"] is True
        time.sleep(2)
        webhook = [
            e
            for e in stack.controlplane.audit_events()
            if e.get("user", {}).get("username") == WEBHOOK_USER
            and _epoch(e.get("stageTimestamp", "1970-01-01T00:00:00Z")) >= since
        ]
    # No token and no read outside the review's namespace, no token at all.
    outside = [e["objectRef"] for e in webhook if e["objectRef"].get("namespace") != ns]
    assert not [r for r in outside if r.get("resource") == "serviceaccounts"], outside
    tokens = [e for e in webhook if e["objectRef"].get("subresource") == "token"]
    assert tokens == []
    assert managed_secrets(stack.controlplane, ns) == []


def test_dry_run_and_namespace_mismatch_reviews_write_nothing(stack: Stack) -> None:
    """dryRun reviews never write (sideEffects: NoneOnDryRun); a review whose object says
    an opted-in namespace while the request says one that is not is judged by the
    request's namespace (where the API server would create the pod), and refused."""
    cp = stack.controlplane
    opted = stack.labelled_namespace(ns_name("dry"))
    unlabelled = stack.labelled_namespace(ns_name("mismatch"), inject=False)
    since = time.time()
    with stack.extra_replica("webhook-dry") as replica:
        for i in range(20):
            pod = make_pod(stack.ecr_image, namespace=opted, name=f"d{i}")
            answer = stack.post_review(replica, make_review(pod, namespace=opted, dry_run=True))
            assert answer["response"]["allowed"] is True
            pod = make_pod(stack.ecr_image, namespace=opted, name=f"m{i}")
            answer = stack.post_review(replica, make_review(pod, namespace=unlabelled))
            assert answer["response"]["allowed"] is True
            assert "patch" not in answer["response"]
        time.sleep(3 * stack.refresh_interval + 1)
        for where in (opted, unlabelled):
            counts = _audited(stack, where, since)
            assert not [k for k in counts if k[0] in WRITES], (where, counts)
    assert managed_secrets(cp, opted) == [] and managed_secrets(cp, unlabelled) == []
    records = get_json(cp, "managedpullsecrets.pull-secret-webhook.io", "-n", NAMESPACE)
    assert not [r for r in records["items"] if r["spec"]["namespace"] in (opted, unlabelled)]


def test_a_secret_a_namespace_admin_edits_in_place_is_rewritten_at_its_next_renewal(
    stack: Stack,
) -> None:
    """Anyone who may update Secrets in the namespace can change the webhook's Secret
    without changing its UID (SECURITY.md, "Known limits"): the webhook does not read it,
    so the edit stands until the next renewal, which writes the webhook's content back
    (acr-short: renewal due 15 s after issue)."""
    cp = stack.controlplane
    assert stack.acr_short is not None
    ns = stack.labelled_namespace(ns_name("inplace"))
    image = f"{stack.acr_short.login_server}/demo/hello:v1"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", image)))
    [secret] = managed_secrets(cp, ns)
    name, uid = secret["metadata"]["name"], secret["metadata"]["uid"]
    planted = base64.b64encode(b'{"auths":{"evil.example":{"auth":"ZXZpbDpldmls"}}}').decode()
    cp.kubectl(
        "patch", "secret", name, "-n", ns, "--type=merge",
        "-p", json.dumps({"data": {".dockerconfigjson": planted}}),
    )  # fmt: skip

    def restored() -> dict[str, Any] | None:
        now = get_json(cp, "secret", name, "-n", ns)
        return now if now["data"][".dockerconfigjson"] != planted else None

    again = wait_for(
        "the edited secret to be renewed", restored, timeout=stack.refresh_interval + 60
    )
    assert again["metadata"]["uid"] == uid  # the same Secret, the webhook's content
    config = json.loads(base64.b64decode(again["data"][".dockerconfigjson"]))
    assert list(config["auths"]) == [stack.acr_short.login_server]
    assert record_of(cp, ns, name)["status"]["secretUID"] == uid


def test_a_namespace_that_opts_out_gets_no_more_writes(stack: Stack) -> None:
    """Once the label is gone, admissions and forged reviews there are refused, and the
    write policy refuses the webhook's identity too. Its existing pull secrets stay (the
    policy forbids deleting them there: SECURITY.md, "Known limits")."""
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("optout"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    [secret] = managed_secrets(cp, ns)
    cp.kubectl("label", "namespace", ns, "pull-secret-webhook/inject-")
    time.sleep(2)  # the replicas' namespace watch and the policy's informer follow
    since = time.time()
    with stack.extra_replica("webhook-optout") as replica:
        for i in range(10):
            pod = make_pod(stack.acr_image, stack.ecr_image, namespace=ns, name=f"q{i}")
            answer = stack.post_review(replica, make_review(pod, namespace=ns))
            assert "patch" not in answer["response"]
        time.sleep(3 * stack.refresh_interval + 1)
        assert not [k for k in _audited(stack, ns, since) if k[0] in WRITES]
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": "psw-after-optout",
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "pull-secret-webhook"},
        },
        "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()},
    }
    result = stack.as_webhook("create", "-f", "-", input=json.dumps(doc))
    assert result.returncode != 0 and "inject=enabled" in result.stderr, result.stderr
    assert [s["metadata"]["uid"] for s in managed_secrets(cp, ns)] == [secret["metadata"]["uid"]]
