"""How the write-policy self-check reads the API server's answers to its dry-run write, and
what it does to readiness (the real API server: tests/e2e/test_write_policy_self_check.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from webhook.kube.errors import ApiError
from webhook.upkeep.policycheck import (
    CHECK_SECRET,
    RECHECK_SECONDS,
    START_GRACE_SECONDS,
    PolicyCheck,
    Verdict,
    judge,
)

#: The API server's message when a ValidatingAdmissionPolicy denies (its wording, 1.36).
DENIED = (
    'secrets "pull-secret-webhook-policy-self-check" is forbidden: ValidatingAdmissionPolicy '
    "'pull-secret-webhook-secrets' with binding 'pull-secret-webhook-secrets' denied request: "
    "the webhook never writes in system namespaces or its own"
)


class Answers:
    """A DryRunWriter answering from a list (None: accepted), recording what it was sent."""

    def __init__(self, *answers: ApiError | None) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, Mapping[str, Any]]] = []

    async def dry_run_create_secret(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.sent.append((namespace, body))
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        pytest.param(None, Verdict.UNBOUND, id="accepted-means-unbound"),
        pytest.param(ApiError(403, "Forbidden", DENIED), Verdict.BOUND, id="policy-denied"),
        pytest.param(
            ApiError(403, "Forbidden", 'User "x" cannot create resource "secrets"'),
            Verdict.UNKNOWN,
            id="rbac-denied-proves-nothing",
        ),
        pytest.param(
            ApiError(400, "BadRequest", "admission webhook does not support dry run"),
            Verdict.UNKNOWN,
            id="dry-run-unsupported",
        ),
        pytest.param(ApiError(0, "unreachable"), Verdict.UNKNOWN, id="no-answer"),
    ],
)
def test_each_answer_to_the_dry_run_write_gets_its_verdict(
    error: ApiError | None, verdict: Verdict
) -> None:
    assert judge(error)[0] is verdict


async def test_the_probe_is_a_write_no_rule_of_the_policy_could_allow() -> None:
    writer = Answers(ApiError(403, "Forbidden", DENIED))

    await PolicyCheck(writer, "pull-secret-webhook").check_once()

    [(namespace, body)] = writer.sent
    # The webhook's own namespace, a non-dockerconfigjson type, no prefix, no label.
    assert namespace == "pull-secret-webhook"
    assert body["type"] == "Opaque" and body["metadata"] == {"name": CHECK_SECRET}
    assert not CHECK_SECRET.startswith("psw-")


async def test_an_accepted_write_keeps_the_replica_unready_and_sets_the_gauge_to_zero() -> None:
    seen: list[Verdict] = []
    check = PolicyCheck(
        Answers(None, ApiError(0, "unreachable"), None), "ns", on_verdict=seen.append
    )
    assert check.not_ready_reason() is not None  # pending

    await check.check_once()

    reason = check.not_ready_reason()
    assert reason is not None and "does not apply" in reason
    # An answer that proves nothing leaves the last proof standing ...
    await check.check_once()
    assert check.not_ready_reason() == reason
    # ... and another accepted write keeps it unready.
    await check.check_once()
    assert check.not_ready_reason() == reason
    assert seen == [Verdict.UNBOUND, Verdict.UNKNOWN, Verdict.UNBOUND]


async def test_a_policy_enforced_only_after_the_first_check_readies_the_replica() -> None:
    """A policy applied with the Deployment takes effect once the API server's watch of
    policies has it, which can be after the first replica's first check: the check is
    repeated until the policy is found bound, and the replica becomes ready then."""
    check = PolicyCheck(Answers(None, None, ApiError(403, "Forbidden", DENIED)), "ns")
    await check.check_once()
    await check.check_once()
    assert check.not_ready_reason() is not None
    await check.check_once()
    assert check.not_ready_reason() is None


async def test_an_unbound_policy_is_checked_again_with_back_off_until_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:
            raise asyncio.CancelledError

    monkeypatch.setattr(asyncio, "sleep", sleep)
    writer = Answers(None, None, ApiError(403, "Forbidden", DENIED), None)
    with pytest.raises(asyncio.CancelledError):
        await PolicyCheck(writer, "ns").run()
    # Unbound twice (1 s, 2 s), bound (the long re-check), then a later loss is re-checked
    # on the long period too: it no longer decides readiness.
    assert sleeps == [1.0, 2.0, RECHECK_SECONDS, RECHECK_SECONDS]


async def test_a_bound_policy_makes_the_check_ready_and_a_later_loss_is_only_reported() -> None:
    seen: list[Verdict] = []
    check = PolicyCheck(
        Answers(ApiError(403, "Forbidden", DENIED), None), "ns", on_verdict=seen.append
    )

    await check.check_once()
    assert check.not_ready_reason() is None
    await check.check_once()

    assert check.not_ready_reason() is None
    assert seen == [Verdict.BOUND, Verdict.UNBOUND]


async def test_inconclusive_answers_hold_readiness_only_for_the_start_grace() -> None:
    clock = Clock()
    check = PolicyCheck(Answers(ApiError(0, "unreachable")), "ns", clock=clock)
    assert check.not_ready_reason() is not None

    clock.now += START_GRACE_SECONDS + 1
    assert check.not_ready_reason() is None  # pending, but past the grace
    await check.check_once()
    assert check.verdict is Verdict.UNKNOWN and check.not_ready_reason() is None
