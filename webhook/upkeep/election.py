"""Leader election on a Lease: which replica does the background upkeep."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from webhook.kube.errors import ConflictError
from webhook.kube.rfc3339 import from_rfc3339

log = logging.getLogger(__name__)

#: client-go's defaults for leader election: a 15 s lease renewed every few seconds
#: (LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s). A crashed leader is
#: replaced within ~15 s, far below any credential's refresh margin.
LEASE_SECONDS = 15
RENEW_SECONDS = 5.0
#: On shutdown, how long releasing the Lease may take before it is left to expire.
RELEASE_SECONDS = 2.0


def _micro_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseApi(Protocol):
    """The Lease calls leader election makes (``webhook.kube.calls.Kube`` has them)."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...


class LeaderElector:
    """One replica at a time holds a ``coordination.k8s.io`` Lease, as client-go's
    leaderelection does: take it when it is free or expired, renew it while held, and
    give it up on shutdown. A 409 means another replica wrote it first: not ours."""

    def __init__(
        self,
        kube: LeaseApi,
        namespace: str,
        name: str,
        holder: str,
        *,
        lease_seconds: int = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.clock = clock

    async def try_acquire(self) -> bool:
        """Acquire or renew the Lease; False when another replica holds it."""
        now = self.clock()
        lease = await self.kube.get_lease(self.namespace, self.name)
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _micro_time(now),
        }
        try:
            if lease is None:
                spec.update(acquireTime=_micro_time(now), leaseTransitions=0)
                await self.kube.create_lease(
                    self.namespace,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": spec,
                    },
                )
                return True
            current = lease.get("spec") or {}
            holder = current.get("holderIdentity") or ""
            renewed = from_rfc3339(current.get("renewTime") or "") or 0.0
            duration = float(current.get("leaseDurationSeconds") or self.lease_seconds)
            if holder and holder != self.holder and renewed + duration > now:
                return False
            transitions = int(current.get("leaseTransitions") or 0)
            if holder != self.holder:
                spec.update(acquireTime=_micro_time(now), leaseTransitions=transitions + 1)
            else:
                spec.update(
                    acquireTime=current.get("acquireTime") or _micro_time(now),
                    leaseTransitions=transitions,
                )
            lease["spec"] = spec
            await self.kube.replace_lease(self.namespace, self.name, lease)
            if holder != self.holder:
                log.info("took the refresher lease over from %r", holder or "nobody")
            return True
        except ConflictError:  # another replica created or renewed it first
            return False

    async def release(self) -> bool:
        """Give the Lease up if this replica holds it (as client-go's ReleaseOnCancel
        does): the next replica to try takes it at once, not a lease duration later."""
        lease = await self.kube.get_lease(self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.holder:
            return False
        now = _micro_time(self.clock())
        spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=now, acquireTime=now)
        lease["spec"] = spec
        try:
            await self.kube.replace_lease(self.namespace, self.name, lease)
        except ConflictError:  # renewed or taken meanwhile: no longer ours to give
            return False
        log.info("released the refresher lease")
        return True
