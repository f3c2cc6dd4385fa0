"""bench.footprint counts the idle leader's requests from the API server's audit log:
each request once (a watch when it starts, anything else when it ends), only the
webhook's ServiceAccount, only what the API server received inside the window."""

from __future__ import annotations

import json
from pathlib import Path

from bench.footprint import WEBHOOK_USER, webhook_requests


def event(user: str, verb: str, stage: str, received: str, **ref: str) -> str:
    return json.dumps(
        {
            "stage": stage,
            "verb": verb,
            "user": {"username": user},
            "objectRef": ref,
            "requestReceivedTimestamp": received,
        }
    )


def test_each_request_of_the_webhook_inside_the_window_counts_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    inside, before, after = (
        "2026-12-07T01:00:30.000000Z",
        "2026-12-07T00:59:59.000000Z",
        "2026-12-07T01:01:01.000000Z",
    )
    lines = [
        event(WEBHOOK_USER, "get", "ResponseComplete", inside, resource="leases"),
        event(WEBHOOK_USER, "update", "ResponseComplete", inside, resource="leases"),
        # A watch: its start counts, its end (logged too) does not.
        event(WEBHOOK_USER, "watch", "ResponseStarted", inside, resource="pods"),
        event(WEBHOOK_USER, "watch", "ResponseComplete", inside, resource="pods"),
        event(
            WEBHOOK_USER,
            "create",
            "ResponseComplete",
            inside,
            resource="serviceaccounts",
            subresource="token",
        ),
        # Outside the window, or someone else's.
        event(WEBHOOK_USER, "get", "ResponseComplete", before, resource="leases"),
        event(WEBHOOK_USER, "get", "ResponseComplete", after, resource="leases"),
        event(
            "system:serviceaccount:kube-system:x",
            "get",
            "ResponseComplete",
            inside,
            resource="leases",
        ),
        "not json",
    ]
    log.write_text("\n".join(lines) + "\n")
    start = 1796605200.0  # 2026-12-07T01:00:00Z
    counted = webhook_requests(log, start, start + 60)
    assert counted == {
        "get leases": 1,
        "update leases": 1,
        "watch pods": 1,
        "create serviceaccounts/token": 1,
    }
