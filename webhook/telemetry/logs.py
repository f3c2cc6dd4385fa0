"""Logging set-up: text or JSON lines, with per-request context (uid, namespace, pod, op).

Every line is scrubbed of secret material on its way out (``webhook.telemetry.redact``), whatever
logged it: a remote body quoted in an exception, a library's message, a traceback."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TypeAlias

from webhook.telemetry import redact
from webhook.telemetry.text import printable

#: The fields of the ``log_context`` blocks being run, innermost last: each block adds a
#: link (the chain around it, its own fields). Merged only when a line is logged: most
#: admissions log none, and a link costs less than a merged copy.
_Chain: TypeAlias = tuple["_Chain", Mapping[str, str]] | None
_context: contextvars.ContextVar[_Chain] = contextvars.ContextVar(
    "pull_secret_webhook_log_context", default=None
)


#: Context values come from requests: each is cut to this length and kept on one line.
CONTEXT_VALUE_MAX = 253  # the longest valid Kubernetes object name


def _safe(value: str) -> str:
    if value.isascii() and value.isprintable() and len(value) <= CONTEXT_VALUE_MAX:
        return value  # the usual case, at no cost
    value = printable(value)
    return value if len(value) <= CONTEXT_VALUE_MAX else value[: CONTEXT_VALUE_MAX - 1] + "…"


def context_fields() -> dict[str, str]:
    """The fields of the blocks being run, outermost first: a block's field replaces the
    same field of a block around it; an empty value adds nothing."""
    layers: list[Mapping[str, str]] = []
    chain = _context.get()
    while chain is not None:
        chain, fields = chain
        layers.append(fields)
    merged: dict[str, str] = {}
    for fields in reversed(layers):
        for key, value in fields.items():
            if value:
                merged[key] = value
    return merged


class log_context:
    """Attach fields (e.g. uid, namespace, pod) to every record logged inside the block.

    A plain class rather than a generator-based context manager: it is entered on every
    admission, and this costs a third as much. Values often come straight from a
    request: each is cut and made printable when a line is logged (most admissions log
    none), never written as given.
    """

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: str) -> None:
        self._fields = fields

    def __enter__(self) -> log_context:
        self._token = _context.set((_context.get(), self._fields))
        return self

    def add(self, **fields: str) -> None:
        """More fields for the rest of this block (the admission's pod once it is known):
        what a nested block would give, without a second enter and exit per admission."""
        _context.set((_context.get(), fields))  # the block's exit still resets to before it

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = {key: _safe(str(value)) for key, value in context_fields().items()}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "ctx", {}),
        }
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return redact.scrub(json.dumps(doc, separators=(",", ":")))


class TextFormatter(logging.Formatter):
    """One line a record (its traceback, if any, on the lines after it), every character
    of it printable: whatever a message quotes, a library's included, cannot move a
    terminal's cursor or forge a line. (JSON lines escape such characters already.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        # The message is one line (formatMessage), the request's fields end it; a
        # traceback's lines follow, each made printable.
        first, *rest = super().format(record).split("\n")
        ctx = getattr(record, "ctx", {})
        if ctx:
            first += " " + " ".join(f"{k}={v}" for k, v in ctx.items())
        return redact.scrub("\n".join([first, *(printable(part) for part in rest)]))


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        formatter.default_msec_format = "%s.%03d"
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDKs log request/response details (azure-core logs headers at INFO):
    # keep them at WARNING so nothing resembling a credential reaches the log.
    for noisy in ("msal", "botocore", "boto3", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # azure-identity also logs every failed token request at WARNING; the webhook logs
    # the same failure once, with the registry entry and a hint.
    logging.getLogger("azure").setLevel(logging.ERROR)
