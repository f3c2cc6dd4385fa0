"""Text from requests and remote answers made safe to show: one printable line."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character that is not printable as its Python escape: line
    breaks, tabs, terminal control sequences (ESC, C1 controls), and lone surrogates (they
    break log encoders). Text from a request or a remote answer goes through this before
    it reaches a log line or a message a user's terminal shows."""
    if text.isprintable():
        return text  # the usual case
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
