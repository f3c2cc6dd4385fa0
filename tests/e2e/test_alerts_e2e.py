"""The alerts for what ``failurePolicy: Ignore`` hides, each evaluated with promtool on
what a real replica on the control plane exported before and after being driven into the
failure: credential exchanges failing (the emulated ACR refuses the identity), admissions
warned and denied, admissions slow enough to near the timeout (the token service stalls),
no leader (its Lease taken by someone else), and pods admitted without their pull secret
(their namespace opted in after they were made), stuck pulling, then healed or reported.

The replica is one more of the stack's install with a config file of its own (so it can
be reloaded alone) and a Lease of its own (so it leads by itself); reviews are sent to it
directly, as the API server would."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.peers.traffic import ACR_EXCHANGE
from devenv.processes import wait_for
from devenv.stack import Replica, Stack
from devenv.support.reviews import make_pod, make_review
from tests.e2e.support import WEBHOOK_NAMESPACE, get_json, ns_name, pod_manifest, refused
from tests.support.alerting import Scrape, expect_alert, scrape, scrape_until, total
from tests.support.alerts import promtool_binary

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

INSTANCE = "alerts-0"
LEASE = "pull-secret-webhook-alerts"
#: The replica re-reads its config every 5 s; its leader election tries every few seconds.
SETTLE_SECONDS = 45.0


@dataclass
class Alerting:
    stack: Stack
    replica: Replica
    config: Path
    document: dict[str, Any]
    namespace: str

    def scrape(self) -> Scrape:
        return scrape(self.replica.health_port, INSTANCE)

    def until(self, what: str, predicate: Callable[[Scrape], bool]) -> Scrape:
        return scrape_until(
            self.replica.health_port,
            INSTANCE,
            what,
            predicate,
            within=SETTLE_SECONDS,
            every=0.25,
            context=self.replica.log_tail,
        )

    def reload(self, **admission: Any) -> None:
        """Write the config with these admission settings and wait until it is in use."""
        ok = total(self.scrape(), "pull_secret_webhook_config_reloads_total", result="ok")
        document = {**self.document, "admission": {**self.document["admission"], **admission}}
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(document))
        os.replace(tmp, self.config)  # whole, as the kubelet swaps a ConfigMap volume
        self.until(
            "the replica to reload its config",
            lambda s: total(s, "pull_secret_webhook_config_reloads_total", result="ok") > ok,
        )

    def admit(self, image: str) -> dict[str, Any]:
        review = make_review(make_pod(image, generate_name="p-"), namespace=self.namespace)
        answer: dict[str, Any] = self.stack.post_review(self.replica, review)["response"]
        return answer


@pytest.fixture(scope="module")
def alerting(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerting]:
    assert stack.config_path is not None
    directory = tmp_path_factory.mktemp("alerts")
    document = yaml.safe_load(stack.config_path.read_text())
    document["refresh"] = {**document["refresh"], "leaseName": LEASE}
    # Heal a stuck pod once it has failed for 1 s (90 s by default), before the stack's own
    # leader would.
    document["healing"] = {"graceSeconds": 1}
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    namespace = stack.labelled_namespace(ns_name("alerts"))
    assert stack.acr_denied is not None and stack.object_id
    # The refused-identity alerts need acr-denied to refuse the webhook's identity, as the
    # stack made it, not as a module that ran before left it.
    with (
        refused(stack.acr_denied, stack.object_id),
        stack.extra_replica(INSTANCE, config_path=config) as replica,
    ):
        yield Alerting(stack, replica, config, document, namespace)
    stack.controlplane.kubectl(
        "delete", "lease", LEASE, "-n", WEBHOOK_NAMESPACE, "--ignore-not-found", check=False
    )


@pytest.fixture
def promtool() -> Path:
    return promtool_binary()


def test_a_refused_identity_raises_the_exchange_and_warned_admission_alerts(
    alerting: Alerting, promtool: Path, tmp_path: Path
) -> None:
    assert alerting.stack.acr_denied is not None
    image = f"{alerting.stack.acr_denied.login_server}/demo/hello:v1"
    before = alerting.scrape()
    answer = alerting.admit(image)
    assert answer["allowed"] and "acr-exchange 401" in " ".join(answer.get("warnings", []))
    after = alerting.until(
        "the failed exchange to be counted",
        lambda s: (
            total(
                s,
                "pull_secret_webhook_credential_exchanges_total",
                entry="acr-denied",
                result="error",
            )
            > 0
        ),
    )
    for alert, labels in (
        ("PullSecretWebhookCredentialExchangesFailing", [{"entry": "acr-denied"}]),
        ("PullSecretWebhookAdmissionsWarned", [{}]),
        ("PullSecretWebhookAdmissionsDenied", []),
        ("PullSecretWebhookAdmissionErrors", []),
    ):
        expect_alert(promtool, tmp_path, alert, before, after, instance=INSTANCE, labels=labels)


def test_a_pod_denied_for_its_pull_secret_raises_the_denied_alert(
    alerting: Alerting, promtool: Path, tmp_path: Path
) -> None:
    assert alerting.stack.acr_denied is not None
    image = f"{alerting.stack.acr_denied.login_server}/demo/hello:v1"
    alerting.reload(failClosed=True)
    try:
        before = alerting.scrape()
        assert not alerting.admit(image)["allowed"]
        after = alerting.scrape()
    finally:
        alerting.reload(failClosed=False)
    expect_alert(
        promtool,
        tmp_path,
        "PullSecretWebhookAdmissionsDenied",
        before,
        after,
        instance=INSTANCE,
        labels=[{}],
    )


def test_admissions_held_near_the_timeout_raise_the_latency_alert(
    alerting: Alerting, promtool: Path, tmp_path: Path
) -> None:
    stack = alerting.stack
    assert stack.emulator is not None and stack.acr_stall is not None
    image = f"{stack.acr_stall.login_server}/demo/hello:v1"
    # A 2 s timeout with 95% of it for the secret: each admission is held ~1.9 s by a
    # token service that stalls far longer; 0.8 x 2 s is the alert's line.
    alerting.reload(timeoutSeconds=2, budgetFraction=0.95)
    stack.emulator.traffic.inject_fault(
        ACR_EXCHANGE, status=None, delay=120.0, count=100, listener=stack.acr_stall.login_server
    )
    try:
        before = alerting.scrape()
        for _ in range(3):
            started = time.monotonic()
            alerting.admit(image)
            assert time.monotonic() - started > 1.6
        after = alerting.scrape()
    finally:
        stack.emulator.traffic.clear_faults()
        alerting.reload(timeoutSeconds=10, budgetFraction=0.6)
    assert total(after, "pull_secret_webhook_admission_timeout_seconds") == 2
    expect_alert(
        promtool,
        tmp_path,
        "PullSecretWebhookAdmissionLatencyNearTimeout",
        before,
        after,
        instance=INSTANCE,
        labels=[{}],
    )
    # The healthy replica's own latency, for contrast: the same rule stays silent there
    # (expect_alert's second case), and on the fast admissions of the first test.


def test_a_lease_held_by_nobody_of_the_install_raises_the_leader_count_alert(
    alerting: Alerting, promtool: Path, tmp_path: Path
) -> None:
    before = alerting.until(
        "the replica to lead on its own Lease",
        lambda s: total(s, "pull_secret_webhook_leader") == 1,
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Someone else (a stuck old install, a hand edit) holds the Lease for an hour.
    stolen = {
        "spec": {
            "holderIdentity": "intruder",
            "leaseDurationSeconds": 3600,
            "renewTime": now,
            "acquireTime": now,
        }
    }
    alerting.stack.controlplane.kubectl(
        "patch", "lease", LEASE, "-n", WEBHOOK_NAMESPACE, "--type=merge", "-p", json.dumps(stolen)
    )
    after = alerting.until(
        "the replica to see it no longer leads",
        lambda s: total(s, "pull_secret_webhook_leader") == 0,
    )
    # The Lease given back: the replica leads again (the healing tests need a leader).
    alerting.stack.controlplane.kubectl("delete", "lease", LEASE, "-n", WEBHOOK_NAMESPACE)
    alerting.until(
        "the replica to lead again", lambda s: total(s, "pull_secret_webhook_leader") == 1
    )
    expect_alert(
        promtool,
        tmp_path,
        "PullSecretWebhookLeaderCount",
        before,
        after,
        instance=INSTANCE,
        labels=[{}],
    )


def stuck_pull(alerting: Alerting, namespace: str, pod: str, image: str) -> None:
    """Write what the kubelet writes for a container that cannot pull its image (no node
    runs these pods here; the healing reads nothing else)."""
    status = {
        "status": {
            "containerStatuses": [
                {
                    "name": "c0",
                    "image": image,
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{image}"',
                        }
                    },
                }
            ]
        }
    }
    alerting.stack.controlplane.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def made_before_opting_in(alerting: Alerting, manifest: dict[str, Any]) -> str:
    """``manifest`` created in a namespace that opts in only afterwards (install day):
    its pods have no pull secret. Returns the namespace."""
    cp = alerting.stack.controlplane
    namespace = alerting.stack.labelled_namespace(ns_name("heal"), inject=False)
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    return namespace


def opt_in(alerting: Alerting, namespace: str) -> None:
    alerting.stack.controlplane.kubectl(
        "label", "namespace", namespace, "pull-secret-webhook/inject=enabled"
    )


def test_a_bare_pod_stuck_without_its_secret_raises_the_not_healed_and_awaiting_alerts(
    alerting: Alerting, promtool: Path, tmp_path: Path
) -> None:
    image = alerting.stack.acr_image
    namespace = made_before_opting_in(alerting, pod_manifest("bare", image))
    before = alerting.scrape()
    opt_in(alerting, namespace)
    stuck_pull(alerting, namespace, "bare", image)
    after = alerting.until(
        "the bare pod to be reported",
        lambda s: (
            total(s, "pull_secret_webhook_heal_actions_total", action="reported")
            > total(before, "pull_secret_webhook_heal_actions_total", action="reported")
        ),
    )
    after = alerting.until(
        "the pod to count as awaiting healing",
        lambda s: total(s, "pull_secret_webhook_pods_awaiting_heal") >= 1,
    )
    expected: dict[str, list[dict[str, str]]] = {
        "PullSecretWebhookPodsNotHealed": [{"action": "reported"}],
        "PullSecretWebhookPodsAwaitingHeal": [{}],
        "PullSecretWebhookPodsHealed": [],
    }
    for alert, labels in expected.items():
        expect_alert(promtool, tmp_path, alert, before, after, instance=INSTANCE, labels=labels)
    alerting.stack.controlplane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_replicaset_pod_stuck_without_its_secret_is_evicted_and_raises_the_healed_alert(
    alerting: Alerting, promtool: Path, tmp_path: Path
) -> None:
    image = alerting.stack.acr_image
    replicaset = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c0", "image": image}]},
            },
        },
    }
    cp = alerting.stack.controlplane
    namespace = made_before_opting_in(alerting, replicaset)
    pods = wait_for(
        "the ReplicaSet's pod",
        lambda: get_json(cp, "pods", "-n", namespace)["items"],
    )
    [pod] = pods
    assert not pod["spec"].get("imagePullSecrets")
    before = alerting.scrape()
    opt_in(alerting, namespace)
    stuck_pull(alerting, namespace, pod["metadata"]["name"], image)
    after = alerting.until(
        "the pod to be evicted",
        lambda s: (
            total(s, "pull_secret_webhook_heal_actions_total", action="evicted")
            > total(before, "pull_secret_webhook_heal_actions_total", action="evicted")
        ),
    )
    # Its replacement came through the webhook, with its pull secret.
    wait_for(
        "a replacement pod with its pull secret",
        lambda: [
            p
            for p in get_json(cp, "pods", "-n", namespace)["items"]
            if p["spec"].get("imagePullSecrets")
        ],
    )
    expected: dict[str, list[dict[str, str]]] = {
        "PullSecretWebhookPodsHealed": [{}],
        "PullSecretWebhookPodsNotHealed": [],
    }
    for alert, labels in expected.items():
        expect_alert(promtool, tmp_path, alert, before, after, instance=INSTANCE, labels=labels)
    cp.kubectl("delete", "namespace", namespace, "--wait=false")
