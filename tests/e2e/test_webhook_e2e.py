"""The webhook end to end on a real control plane: registered from manifests/, running
under its own ServiceAccount, minting real credentials that a real client pulls with."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devenv.peers.traffic import ACR_EXCHANGE, ENTRA_TOKEN, GCP_STS_TOKEN, RecordedRequest
from devenv.processes import wait_for
from devenv.stack import GAR_READER, Stack
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
from webhook.kube.rfc3339 import from_rfc3339
from webhook.pullsecrets.secret import ANN_EXPIRES, ANN_REFRESH

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")


def secret_for(secrets: list[dict[str, Any]], host: str) -> dict[str, Any]:
    [found] = [
        s for s in secrets if s["metadata"]["annotations"]["pull-secret-webhook/host"] == host
    ]
    return found


ACR_EXCHANGES_OK = 'pull_secret_webhook_credential_exchanges_total{entry="acr",result="ok"} '


def acr_exchange_requests(stack: Stack) -> list[RecordedRequest]:
    """The ACR exchanges the emulator saw for the stack's registry. (The stack's other ACR
    registries, denied, stalling, ..., are other modules' failures to provoke.)"""
    assert stack.emulator is not None and stack.acr is not None
    return [
        r
        for r in stack.emulator.traffic.requests(ACR_EXCHANGE)
        if r.listener == stack.acr.login_server
    ]


def acr_exchanges(stack: Stack) -> tuple[int, float]:
    """ACR exchanges for the stack's registry: those the emulator answered 200, and those
    the running replicas count as ok."""
    answered = [r for r in acr_exchange_requests(stack) if r.status == 200]
    counted = sum(
        float(line.removeprefix(ACR_EXCHANGES_OK))
        for replica in stack.replicas
        for line in replica.metrics().splitlines()
        if line.startswith(ACR_EXCHANGES_OK)
    )
    return len(answered), counted


def test_deployment_pods_get_both_pull_secrets_and_the_secrets_really_pull(
    stack: Stack, tmp_path: Path
) -> None:
    cp = stack.controlplane
    answered_before, counted_before = acr_exchanges(stack)
    ns = stack.labelled_namespace(ns_name("team-a"))
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": stack.acr_image},
                        {"name": "e", "image": stack.ecr_image},
                    ]
                },
            },
        },
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    pods = wait_for(
        "two pods of the Deployment",
        lambda: (items := get_json(cp, "pods", "-n", ns)["items"]) and len(items) == 2 and items,
    )
    secrets = managed_secrets(cp, ns)
    assert len(secrets) == 2
    names = {s["metadata"]["name"] for s in secrets}
    for pod in pods:
        assert set(pull_secret_names(pod)) == names
        assert pod["metadata"]["generateName"].startswith("web-")
    acr_secret = secret_for(secrets, stack.acr_image.split("/")[0])
    ecr_secret = secret_for(secrets, stack.ecr_image.split("/")[0])
    for secret in (acr_secret, ecr_secret):
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        meta = secret["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "pull-secret-webhook"
        expires = from_rfc3339(meta["annotations"][ANN_EXPIRES])
        assert expires is not None
        assert expires > time.time() + 60
    assert acr_secret["metadata"]["labels"]["pull-secret-webhook/registry"] == "acr"
    for secret, image in ((acr_secret, stack.acr_image), (ecr_secret, stack.ecr_image)):
        result = stack.pull_with_secret(secret, image, tmp_path)
        assert result.ok, result.stderr
    # The exchange went through the real protocol: Entra ID with the federated
    # ServiceAccount token, then ACR's /oauth2/exchange.
    assert stack.emulator is not None
    # (The session's stack is shared: earlier modules may have exchanged too.)
    entra_requests = stack.emulator.traffic.requests(ENTRA_TOKEN)
    assert entra_requests
    for entra in entra_requests:
        assert entra.status == 200
        assert entra.token_claims["client_assertion"]["sub"] == (
            "system:serviceaccount:pull-secret-webhook:pull-secret-webhook"
        )
    # Only this registry's exchanges are this test's to judge.
    exchanges = acr_exchange_requests(stack)
    assert exchanges and all(r.status == 200 for r in exchanges)

    # ... and the replicas count what they did: every exchange answered during this test,
    # no more (the session's stack is shared, so earlier modules' exchanges are taken
    # out; a secondary worker's counts reach its primary's /metrics within a second).
    def counted_as_answered() -> bool:
        answered, counted = acr_exchanges(stack)
        return answered - answered_before == counted - counted_before

    wait_for(
        "the replicas to count each ACR exchange the emulator answered",
        counted_as_answered,
        timeout=10,
        explain=lambda: f"before {(answered_before, counted_before)}, now {acr_exchanges(stack)}",
    )
    counted = "".join(r.metrics() for r in stack.replicas)
    assert 'pull_secret_webhook_secret_writes_total{operation="create",result="ok"}' in counted


def test_server_side_dry_run_creates_no_secret(stack: Stack) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("dry"))
    out = cp.kubectl(
        "apply",
        "-n",
        ns,
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(pod_manifest("p", stack.acr_image)),
    ).stdout
    pod = json.loads(out)
    assert len(pull_secret_names(pod)) == 1
    time.sleep(1)
    assert managed_secrets(cp, ns) == []
    assert get_json(cp, "pods", "-n", ns)["items"] == []


def test_pod_that_opts_out_is_left_alone(stack: Stack) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("optout"))
    pod = pod_manifest("p", stack.acr_image, labels={"pull-secret-webhook/inject": "disabled"})
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == []
    assert managed_secrets(cp, ns) == []


def test_namespace_without_the_label_is_untouched(stack: Stack) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("plain"), inject=False)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.acr_image)))
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == []
    assert managed_secrets(cp, ns) == []


def test_kube_system_and_the_webhooks_namespace_are_never_injected(stack: Stack) -> None:
    cp = stack.controlplane
    for ns in ("kube-system", "pull-secret-webhook"):
        cp.kubectl("label", "namespace", ns, "pull-secret-webhook/inject=enabled", "--overwrite")
        try:
            name = ns_name("p")
            pod = pod_manifest(name, stack.acr_image)
            # The webhook's namespace enforces Pod Security "restricted".
            pod["spec"]["securityContext"] = {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            }
            pod["spec"]["containers"][0]["securityContext"] = {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            }
            cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
            assert pull_secret_names(get_json(cp, "pod", name, "-n", ns)) == []
            assert managed_secrets(cp, ns) == []
            cp.kubectl("delete", "pod", name, "-n", ns, "--grace-period=0", "--force")
        finally:
            cp.kubectl("label", "namespace", ns, "pull-secret-webhook/inject-")


def test_secret_is_renewed_before_its_credential_expires(stack: Stack) -> None:
    cp = stack.controlplane
    assert stack.acr_short is not None
    ns = stack.labelled_namespace(ns_name("refresh"))
    image = f"{stack.acr_short.login_server}/demo/hello:v1"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", image)))
    [secret] = managed_secrets(cp, ns)
    name = secret["metadata"]["name"]
    first_expiry = from_rfc3339(secret["metadata"]["annotations"][ANN_EXPIRES]) or 0.0
    # The token lives 150 s (read from its exp claim, not assumed) and is renewed once
    # a tenth of that has passed (refresh.fraction 0.1 in this stack), plus the secret's
    # own place in the window (webhook.pullsecrets.renewals): 15-52.5 s after issue, and always
    # before the last minute of its life, 90 s after issue.
    assert first_expiry < time.time() + 200

    def renewed() -> dict[str, Any] | None:
        current: dict[str, Any] = get_json(cp, "secret", name, "-n", ns)
        expiry = from_rfc3339(current["metadata"]["annotations"][ANN_EXPIRES]) or 0.0
        return current if expiry > first_expiry else None

    current = wait_for("the refresher to renew the secret", renewed, timeout=90)
    assert current["data"][".dockerconfigjson"] != secret["data"][".dockerconfigjson"]
    refresh_at = from_rfc3339(current["metadata"]["annotations"][ANN_REFRESH])
    assert refresh_at is not None and refresh_at > time.time() - 5


def test_unreferenced_secret_is_collected_after_the_grace_period(stack: Stack) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("gc"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    [secret] = managed_secrets(cp, ns)
    name = secret["metadata"]["name"]
    cp.kubectl("delete", "pod", "p", "-n", ns, "--grace-period=0", "--force", check=False)
    # The webhook's own record carries the mark, not the Secret (which it never reads).
    marked = wait_for(
        "the secret to be marked unreferenced",
        lambda: "unreferencedSince" in record_of(cp, ns, name).get("status", {}),
    )
    assert marked
    wait_for("the secret to be deleted", lambda: managed_secrets(cp, ns) == [])


def test_foreign_secret_of_the_same_name_is_never_modified(stack: Stack) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("foreign"))
    # Learn the name the webhook would use, then take it first.
    name = secret_name_preview(cp, ns, stack.ecr_image)
    cp.kubectl("create", "secret", "generic", name, "-n", ns, "--from-literal=owner=team")
    result = cp.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image))
    )
    assert "not managed by the webhook" in result.stderr
    secret = get_json(cp, "secret", name, "-n", ns)
    assert base64.b64decode(secret["data"]["owner"]) == b"team"
    assert "labels" not in secret["metadata"] or not secret["metadata"]["labels"]
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == []


def test_slow_credential_admits_the_pod_with_a_warning_and_the_secret_follows(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    assert stack.emulator is not None and stack.acr_slow is not None
    ns = stack.labelled_namespace(ns_name("slow"))
    # The token service stalls past the admission budget (6 s of timeoutSeconds 10)
    # for whichever replica asks first.
    stack.emulator.traffic.inject_fault(
        ACR_EXCHANGE, status=None, delay=8.0, count=2, listener=stack.acr_slow.login_server
    )
    image = f"{stack.acr_slow.login_server}/demo/hello:v1"
    started = time.monotonic()
    result = cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", image)))
    assert time.monotonic() - started < 10, "admission must finish inside its budget"
    assert "not ready" in result.stderr
    [name] = pull_secret_names(get_json(cp, "pod", "p", "-n", ns))
    wait_for(
        "the secret to be made in the background",
        lambda: [s for s in managed_secrets(cp, ns) if s["metadata"]["name"] == name],
    )


def test_permanent_failure_warns_records_an_event_and_recovers_once_fixed(stack: Stack) -> None:
    cp = stack.controlplane
    assert stack.acr_denied is not None
    ns = stack.labelled_namespace(ns_name("denied"))
    image = f"{stack.acr_denied.login_server}/demo/hello:v1"
    result = cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", image)))
    assert "Warning: pull-secret-webhook: pull secret for" in result.stderr
    assert "acr-exchange 401" in result.stderr
    assert len(pull_secret_names(get_json(cp, "pod", "p", "-n", ns))) == 1
    events = wait_for(
        "a PullSecretNotReady event",
        lambda: [
            e
            for e in get_json(cp, "events", "-n", ns)["items"]
            if e["reason"] == "PullSecretNotReady"
        ],
    )
    assert "not ready at admission" in events[0]["message"]
    assert managed_secrets(cp, ns) == []
    # The operator grants AcrPull; the background retry makes the secret.
    stack.acr_denied.assign_role(stack.object_id, "AcrPull")
    wait_for("the secret once the role is granted", lambda: managed_secrets(cp, ns), timeout=90)


def test_each_pod_pulls_with_its_own_service_accounts_identity(
    stack: Stack, tmp_path: Path
) -> None:
    cp = stack.controlplane
    assert stack.emulator is not None and stack.acr_tenant is not None
    ns = stack.labelled_namespace(ns_name("tenant"))
    client_id = stack.tenant_service_account(ns, "builder")
    image = f"{stack.acr_tenant.login_server}/demo/hello:v1"
    pod = pod_manifest("p", image)
    pod["spec"]["serviceAccountName"] = "builder"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    [secret] = managed_secrets(cp, ns)
    assert secret["metadata"]["annotations"]["pull-secret-webhook/service-account"] == "builder"
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == [secret["metadata"]["name"]]
    # Entra ID saw a token of the pod's own service account, minted by TokenRequest.
    assertions = [
        r.token_claims["client_assertion"]["sub"]
        for r in stack.emulator.traffic.requests(ENTRA_TOKEN)
        if r.form.get("client_id") == client_id
    ]
    assert assertions == [f"system:serviceaccount:{ns}:builder"]
    # A pod under a service account with no identity gets no credential: it is warned.
    other = pod_manifest("q", image)
    result = cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(other))
    assert "not ready" in result.stderr
    assert [s["metadata"]["name"] for s in managed_secrets(cp, ns)] == [secret["metadata"]["name"]]


def test_two_replicas_under_a_burst_of_200_pods_leave_one_secret_per_namespace_and_registry(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    namespaces = [stack.labelled_namespace(ns_name(f"burst{i}")) for i in range(20)]
    before = [admission_results(r.metrics()) for r in stack.replicas]

    def create(i: int) -> int:
        ns = namespaces[i % len(namespaces)]
        pod = pod_manifest(f"p{i}", stack.acr_image, stack.ecr_image)
        return cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod, timeout=30).status

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(create, range(200)))
    assert statuses == [201] * 200
    for ns in namespaces:
        secrets = managed_secrets(cp, ns)
        hosts = sorted(s["metadata"]["annotations"]["pull-secret-webhook/host"] for s in secrets)
        assert hosts == sorted([stack.acr_image.split("/")[0], stack.ecr_image.split("/")[0]])
        for pod in get_json(cp, "pods", "-n", ns)["items"]:
            assert sorted(pull_secret_names(pod)) == sorted(s["metadata"]["name"] for s in secrets)
    # Every admission of the burst was patched cleanly (no warning, error or denial),
    # and both replicas took part.
    after = [admission_results(r.metrics()) for r in stack.replicas]
    delta = [
        {k: a.get(k, 0) - b.get(k, 0) for k in a if a.get(k, 0) != b.get(k, 0)}
        for a, b in zip(after, before, strict=True)
    ]
    assert all(set(d) == {"patched"} for d in delta), delta
    assert sum(d["patched"] for d in delta) >= 200


def test_ephemeral_container_from_a_new_registry_gets_a_secret_and_a_clear_warning(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("debug"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", "busybox:1")))
    assert managed_secrets(cp, ns) == []
    pod = get_json(cp, "pod", "p", "-n", ns)
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": stack.ecr_image}]
    result = cp.kubectl(
        "replace", "--subresource=ephemeralcontainers", "-f", "-", input=json.dumps(pod)
    )
    # The secret is made, but the API server keeps only the ephemeral containers of
    # this update: the pod cannot be given a new pull secret, and the user is told so.
    [secret] = managed_secrets(cp, ns)
    assert f"cannot add pull secret {secret['metadata']['name']}" in result.stderr
    updated = get_json(cp, "pod", "p", "-n", ns)
    assert [c["image"] for c in updated["spec"]["ephemeralContainers"]] == [stack.ecr_image]
    assert pull_secret_names(updated) == []


def test_ephemeral_container_from_a_registry_the_pod_uses_needs_nothing_new(
    stack: Stack,
) -> None:
    cp = stack.controlplane
    ns = stack.labelled_namespace(ns_name("debug"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.ecr_image)))
    pod = get_json(cp, "pod", "p", "-n", ns)
    listed = pull_secret_names(pod)
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": stack.ecr_image}]
    result = cp.kubectl(
        "replace", "--subresource=ephemeralcontainers", "-f", "-", input=json.dumps(pod)
    )
    assert "pull-secret-webhook" not in result.stderr
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == listed


def test_exactly_one_replica_holds_the_refresher_lease(stack: Stack) -> None:
    cp = stack.controlplane
    lease = get_json(cp, "lease", "pull-secret-webhook", "-n", "pull-secret-webhook")
    holder = lease["spec"]["holderIdentity"]
    assert holder in {r.name for r in stack.replicas}
    leaders = [r.name for r in stack.replicas if "pull_secret_webhook_leader 1.0" in r.metrics()]
    assert leaders == [holder]


def test_a_pods_artifact_registry_image_gets_a_google_token_that_pulls_until_its_expiry(
    stack: Stack, tmp_path: Path
) -> None:
    cp = stack.controlplane
    assert stack.gcp is not None and stack.gar is not None
    ns = stack.labelled_namespace(ns_name("gar"))
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod_manifest("p", stack.gar_image)))
    [secret] = managed_secrets(cp, ns)
    assert pull_secret_names(get_json(cp, "pod", "p", "-n", ns)) == [secret["metadata"]["name"]]
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    [auth] = config["auths"].values()
    assert list(config["auths"]) == [stack.gar.host]
    assert auth["username"] == "oauth2accesstoken"
    # The password is a token the metadata server issued to the replicas' service account.
    issued = stack.gcp.iam.resolve(auth["password"])
    assert issued is not None and issued.via == "metadata"
    assert issued.member == f"serviceAccount:{GAR_READER}"
    expires = from_rfc3339(secret["metadata"]["annotations"][ANN_EXPIRES])
    assert expires is not None and abs(expires - issued.expires_at) <= 1  # read, not assumed
    result = stack.pull_with_secret(secret, stack.gar_image, tmp_path)
    assert result.ok, result.stderr


def test_each_pod_pulls_from_artifact_registry_as_its_own_google_identity(
    stack: Stack, tmp_path: Path
) -> None:
    cp = stack.controlplane
    assert stack.gcp is not None and stack.gar_tenant is not None
    ns = stack.labelled_namespace(ns_name("gar-tenant"))
    email = stack.gar_tenant_service_account(ns, "builder", allowed=True)
    stack.gar_tenant_service_account(ns, "intruder", allowed=False)
    image = f"{stack.gar_tenant.host}/emulated-project/images/hello:v1"
    pod = pod_manifest("p", image)
    pod["spec"]["serviceAccountName"] = "builder"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    [secret] = managed_secrets(cp, ns)
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    issued = stack.gcp.iam.resolve(config["auths"][stack.gar_tenant.host]["password"])
    assert issued is not None and issued.member == f"serviceAccount:{email}"
    # STS saw a TokenRequest token of the pod's own ServiceAccount, with the provider's
    # audience (which the shipped policy accepts only once the operator lists it).
    exchanges = [r.token_claims["subject_token"] for r in stack.gcp.traffic.requests(GCP_STS_TOKEN)]
    mine = [c for c in exchanges if c["sub"] == f"system:serviceaccount:{ns}:builder"]
    assert mine and mine[-1]["aud"] == ["https:" + stack.gar_audience]
    assert stack.pull_with_secret(secret, image, tmp_path).ok
    # A ServiceAccount naming a Google account it may not impersonate gets nothing.
    other = pod_manifest("q", image)
    other["spec"]["serviceAccountName"] = "intruder"
    result = cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(other))
    assert "not ready (gcp-iam-credentials PERMISSION_DENIED)" in result.stderr
    assert [s["metadata"]["name"] for s in managed_secrets(cp, ns)] == [secret["metadata"]["name"]]
    # The replicas' log line names the principal and the role to grant it.
    logs = "\n".join(r.log.read_text(errors="replace") for r in stack.replicas)
    refusals = [line for line in logs.splitlines() if f"{ns}/intruder: gcp-iam-credentials" in line]
    assert refusals and "roles/iam.workloadIdentityUser" in refusals[0]
    assert f"system:serviceaccount:{ns}:intruder" in refusals[0]


def test_doctor_reports_each_registry_from_the_webhooks_own_identity(stack: Stack) -> None:
    assert stack.acr_tenant is not None and stack.acr_denied is not None
    ns = stack.labelled_namespace(ns_name("doctor"))
    stack.tenant_service_account(ns, "app")
    # Whatever earlier tests granted, this identity has no role on acr-denied now.
    stack.acr_denied.remove_role(stack.object_id)
    try:
        result = stack.webhook_cli("doctor", "--service-account", f"{ns}/app")
    finally:
        stack.acr_denied.assign_role(stack.object_id, "AcrPull")
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["acr"].startswith("ok"), result.stdout
    assert lines["ecr"].startswith("ok"), result.stdout
    assert lines["acr-tenant"].startswith("ok"), result.stdout
    assert lines["gar"].startswith("ok"), result.stdout
    denied = lines["acr-denied"]
    assert denied.startswith("FAIL") and "acr-exchange" in denied and "401" in denied, denied
    assert "AcrPull" in denied
    assert result.returncode == 1
    assert "eyJ" not in result.stdout + result.stderr  # no token, ever


def test_no_token_or_password_reaches_the_webhook_logs(stack: Stack) -> None:
    """Runs last in this module: by now the replicas have minted, written, refreshed and
    failed many credentials, at debug level."""
    logs = "\n".join(r.log.read_text(errors="replace") for r in stack.replicas)
    assert "created pull secret" in logs  # the logs are the real ones
    assert "eyJ" not in logs  # the start of every JWT (ACR and Entra tokens, SA tokens)
    assert "-auth-token" not in logs  # moto's ECR password
    assert "ya29." not in logs  # the start of every Google access token
    assert ".dockerconfigjson" not in logs
