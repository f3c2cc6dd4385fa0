"""The webhook proves to itself, against the real API server, that its write policy binds
its own identity; a policy naming another ServiceAccount (a rename done by half) keeps a
new replica out of service instead of letting it write unguarded."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devenv.processes import wait_for
from devenv.stack import NAMESPACE, SERVICE_ACCOUNT, Replica, Stack
from tests.support.alerting import Scrape, expect_alert, scrape
from tests.support.alerts import promtool_binary
from webhook.upkeep.policycheck import START_GRACE_SECONDS

POLICY = "pull-secret-webhook-secrets"
#: What a `namePrefix: team-` overlay renders for the ServiceAccount while the policy still
#: names the base's account (or the other way round): the policy then matches nobody.
OTHER_ACCOUNT = f"team-{SERVICE_ACCOUNT}"

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")


def bound_gauge(replica: Replica) -> float | None:
    for line in replica.metrics().splitlines():
        if line.startswith("pull_secret_webhook_write_policy_bound "):
            return float(line.rpartition(" ")[2])
    return None


def readyz(replica: Replica) -> tuple[int, str]:
    url = f"http://127.0.0.1:{replica.health_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def gauge_only(s: Scrape) -> Scrape:
    """The scrape's write-policy gauge alone: the healthy and the failing scrape come from
    two processes here, whose counters promtool could not read as one series (they would
    go down), and the alert reads nothing else."""
    name = "pull_secret_webhook_write_policy_bound"
    samples = {k: v for k, v in s.samples.items() if k[0] == name}
    assert samples, "the replica exports no write-policy gauge"
    return Scrape(at=s.at, up=s.up, samples=samples, kinds={name: s.kinds[name]})


def dry_run_write_accepted(stack: Stack) -> bool:
    """Does the API server accept, from the webhook's own token, the write the policy
    must refuse (an Opaque Secret in the webhook's namespace)?"""
    proc = stack.as_webhook(
        "create", "secret", "generic", "policy-probe", "-n", NAMESPACE, "--dry-run=server"
    )
    return proc.returncode == 0


def test_the_running_replicas_report_that_the_policy_binds_them(stack: Stack) -> None:
    for replica in stack.replicas:
        wait_for(
            f"{replica.name} to report write_policy_bound 1",
            lambda r=replica: bound_gauge(r) == 1,  # type: ignore[misc]
            timeout=15,
        )


def test_a_policy_naming_another_service_account_keeps_a_new_replica_unready(
    stack: Stack, tmp_path: Path
) -> None:
    promtool = promtool_binary()
    healthy = gauge_only(scrape(stack.replicas[0].health_port, "replica-0"))
    policy = json.loads(
        stack.controlplane.kubectl("get", "validatingadmissionpolicy", POLICY, "-o", "json").stdout
    )
    [condition] = policy["spec"]["matchConditions"]
    original = condition["expression"]
    misnamed = original.replace(f"'{SERVICE_ACCOUNT}'", f"'{OTHER_ACCOUNT}'")
    if misnamed == original:  # the single-string form
        misnamed = original.replace(f":{SERVICE_ACCOUNT}'", f":{OTHER_ACCOUNT}'")
    assert misnamed != original, original

    def set_expression(expression: str) -> None:
        patch = [
            {"op": "replace", "path": "/spec/matchConditions/0/expression", "value": expression}
        ]
        stack.controlplane.kubectl(
            "patch", "validatingadmissionpolicy", POLICY, "--type=json", "-p", json.dumps(patch)
        )

    assert not dry_run_write_accepted(stack)
    set_expression(misnamed)
    try:
        # The API server applies a changed policy within a moment.
        wait_for("the misnamed policy to apply", lambda: dry_run_write_accepted(stack))
        started = time.monotonic()
        with stack.unawaited_replica("misnamed-policy") as replica:
            wait_for(
                "the replica to find the policy unbound",
                lambda: _answers(replica) and bound_gauge(replica) == 0,
                timeout=60,
                explain=lambda: replica.log_tail(),
            )
            # Past the start grace too: the replica stays out of service.
            time.sleep(max(0.0, START_GRACE_SECONDS + 1 - (time.monotonic() - started)))
            status, body = readyz(replica)
            assert status == 503
            assert "write policy" in body and "does not apply" in body
            assert "write policy NOT enforced" in replica.log_tail(200)
            # The alert for it fires on what the replica exports (and not on a bound one).
            unbound = gauge_only(scrape(replica.health_port, "replica-0"))
            expect_alert(
                promtool,
                tmp_path,
                "PullSecretWebhookWritePolicyUnbound",
                healthy,
                unbound,
                instance="replica-0",
                labels=[{}],
            )
    finally:
        set_expression(original)
    wait_for("the restored policy to apply", lambda: not dry_run_write_accepted(stack))


def _answers(replica: Replica) -> bool:
    try:
        replica.metrics()
    except OSError:
        return False
    return True
