"""Proof that the API server holds this replica to its write policy.

RBAC lets the webhook's identity write Secrets everywhere; the shipped
ValidatingAdmissionPolicy narrows that to its own pull secrets in opted-in namespaces. The
policy finds the webhook by username (``system:serviceaccount:<namespace>:<name>``), a
string an install can get wrong (another namespace, a kustomize ``namePrefix``, a Helm
``serviceAccount.name``) without anything failing: the policy then matches nobody and the
boundary is gone. So the webhook asks the API server itself: a server-side dry run
(``dryRun=All`` runs every admission policy and persists nothing) of a write the policy
must refuse whatever else it says — an Opaque Secret without the webhook's label or name
prefix, in the webhook's own namespace.

- refused by a ValidatingAdmissionPolicy: the policy binds this identity (``bound``);
- accepted: it does not. Logged as an error, ``pull_secret_webhook_write_policy_bound``
  at 0, and the replica does not become ready until a later check finds the policy
  bound, so a rollout or ``helm install --wait`` with a misnamed policy stops there
  instead of running unguarded. Until then the check is repeated (from 1 s, doubling up
  to ``MAX_RETRY_SECONDS``): a policy created in the same apply as the Deployment is
  enforced only once the API server's own watch of policies and bindings has it, which
  can be after the first replica's first check;
- anything else (RBAC refusing the create, a webhook without dry-run support, an API
  server that does not answer) proves nothing either way: logged, gauge at -1, retried.

Once found bound it re-checks every ``RECHECK_SECONDS``: a policy deleted or renamed
later is logged and counted, but does not take serving replicas out of the Service (that
would stop pull secrets everywhere over a policy problem).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from webhook.kube.errors import ApiError, ForbiddenError, InvalidError

log = logging.getLogger(__name__)

#: The dry-run Secret's name: no pull secret prefix, so no policy rule could allow it.
CHECK_SECRET = "pull-secret-webhook-policy-self-check"
#: How long a replica waits for the first conclusive answer before readiness stops
#: waiting for it (an API server that does not answer at all keeps other checks red).
START_GRACE_SECONDS = 10.0
#: Between re-checks: one dry-run request per replica every 10 minutes.
RECHECK_SECONDS = 600.0
#: Retries of an inconclusive answer, or of an unbound one before the policy was ever
#: found bound, doubling from 1 s up to this.
MAX_RETRY_SECONDS = 60.0


class DryRunWriter(Protocol):
    async def dry_run_create_secret(self, namespace: str, body: Mapping[str, Any]) -> None: ...


class Verdict(enum.Enum):
    PENDING = "pending"
    BOUND = "bound"
    UNBOUND = "unbound"
    UNKNOWN = "unknown"


#: The gauge's value per verdict (1 bound, 0 not bound, -1 not known).
GAUGE = {Verdict.PENDING: -1, Verdict.UNKNOWN: -1, Verdict.BOUND: 1, Verdict.UNBOUND: 0}


def probe_body() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CHECK_SECRET},
        "type": "Opaque",
        "data": {},
    }


def judge(error: ApiError | None) -> tuple[Verdict, str]:
    """The verdict on one dry-run answer (None: accepted), and what to log."""
    if error is None:
        return Verdict.UNBOUND, "the API server accepted a write the policy must refuse"
    refused = isinstance(error, ForbiddenError | InvalidError)
    if refused and "ValidatingAdmissionPolicy" in error.message:
        return Verdict.BOUND, error.message
    return Verdict.UNKNOWN, str(error)


class PolicyCheck:
    def __init__(
        self,
        kube: DryRunWriter,
        namespace: str,
        *,
        on_verdict: Callable[[Verdict], None] = lambda verdict: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._on_verdict = on_verdict
        self._clock = clock
        self._started = clock()
        self.verdict = Verdict.PENDING
        self._proof: Verdict | None = None
        """The last conclusive answer (bound or unbound)."""
        self._bound_once = False
        self._task: asyncio.Task[None] | None = None

    def not_ready_reason(self) -> str | None:
        """Readiness at start: not ready while the first answer is pending (for at most
        ``START_GRACE_SECONDS``), nor while the policy has been found unbound and never
        bound. Once found bound, a later loss is only reported."""
        if self._bound_once:
            return None
        if self._proof is Verdict.UNBOUND:
            return (
                "the write policy (ValidatingAdmissionPolicy) does not apply to this "
                "webhook's ServiceAccount: its username in the policy's "
                "the-webhook-itself condition must match (docs/install.md)"
            )
        pending = self.verdict is Verdict.PENDING
        if pending and self._clock() - self._started < START_GRACE_SECONDS:
            return "checking that the write policy applies to this webhook"
        return None

    async def check_once(self) -> Verdict:
        try:
            await self._kube.dry_run_create_secret(self._namespace, probe_body())
            error = None
        except ApiError as e:
            error = e
        verdict, detail = judge(error)
        if verdict is Verdict.BOUND:
            log.info(
                "write policy applies to this webhook: a dry-run write was refused (%s)", detail
            )
        elif verdict is Verdict.UNBOUND:
            log.error(
                "write policy NOT enforced for this webhook: %s (a dry-run create of Secret "
                "%s/%s). The ValidatingAdmissionPolicy's the-webhook-itself condition must name "
                "this pod's ServiceAccount, and its binding must exist; see docs/install.md",
                detail,
                self._namespace,
                CHECK_SECRET,
            )
        else:
            log.warning("could not check the write policy (will retry): %s", detail)
        self.verdict = verdict
        if verdict is not Verdict.UNKNOWN:  # no proof either way: the last proof stands
            self._proof = verdict
        self._bound_once |= verdict is Verdict.BOUND
        self._on_verdict(verdict)
        return verdict

    async def run(self) -> None:
        delay = 1.0
        while True:
            verdict = await self.check_once()
            if verdict is Verdict.UNKNOWN or not self._bound_once:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            delay = 1.0
            await asyncio.sleep(RECHECK_SECONDS)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
