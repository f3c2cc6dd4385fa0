"""What every answer to a hostile request must look like, checked the same way everywhere."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tests.support.threaded import Reply

#: A 400 body quotes at most a few clipped values; anything near this size echoes input.
REFUSAL_MAX_BYTES = 2048
#: No log line may be longer than this (the handler clips what it quotes to 300 characters).
LOG_LINE_MAX = 1024


def check_reply(reply: Reply, uid: str | None) -> dict[str, Any]:
    """A 200, or a 4xx whose body is an AdmissionReview; ``uid`` echoed when given."""
    assert reply.status == 200 or 400 <= reply.status < 500, reply.status
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    doc: dict[str, Any] = reply.review()
    assert doc["kind"] == "AdmissionReview"
    assert doc["apiVersion"] in ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
    response = doc["response"]
    assert isinstance(response["allowed"], bool)
    if uid is not None:
        assert response["uid"] == uid
    if reply.status != 200:
        assert response["allowed"] is False
        assert response["status"]["code"] == reply.status
        assert len(reply.body) <= REFUSAL_MAX_BYTES, len(reply.body)
    return doc


def check_logs(records: Sequence[logging.LogRecord]) -> None:
    """No traceback, no ERROR (an unexpected failure), no oversized line."""
    for record in records:
        assert record.exc_info is None or record.levelno < logging.INFO, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()[:300]
        assert len(record.getMessage()) <= LOG_LINE_MAX, record.getMessage()[:300]
        for value in getattr(record, "ctx", {}).values():
            assert len(value) <= LOG_LINE_MAX
