"""Bounded memos of the admission path: answers kept because the pods of one workload
repeat them (their images, their secrets, the structure of their reviews).

Each memo is a plain dict in insertion order, so the oldest answer is the first key:
at its limit a memo forgets that one for each new answer. Only the event loop's thread
uses them.
"""

from __future__ import annotations

from typing_extensions import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Keep ``value`` under ``key`` in ``memo`` (at most ``limit`` entries) and return it."""
    if len(memo) >= limit:
        del memo[next(iter(memo))]
    memo[key] = value
    return value
