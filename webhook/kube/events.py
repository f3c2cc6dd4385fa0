"""Events: what an operator reads with ``kubectl describe``."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.kube.base import CORE, KubeBase
from webhook.kube.client import resource_path
from webhook.kube.rfc3339 import now_rfc3339
from webhook.telemetry import redact

#: Who the webhook's Events say reported them (``kubectl describe`` shows it).
EVENT_COMPONENT = "pull-secret-webhook"


class EventCalls(KubeBase):
    """Events, created (never read)."""

    async def create_event(
        self,
        namespace: str,
        *,
        involved: Mapping[str, str],
        reason: str,
        message: str,
        event_type: str = "Warning",
    ) -> None:
        now = now_rfc3339()
        name = (involved.get("name") or "pod").rstrip("-")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": redact.scrub(message)[:1024],
            "type": event_type,
            "source": {"component": EVENT_COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": EVENT_COMPONENT,
        }
        await self._call(
            "create_namespaced_event",
            "POST",
            resource_path(CORE, "events", namespace=namespace),
            body=body,
        )
