"""A wall clock a test sets by hand, for code that takes a ``clock`` callable."""

from __future__ import annotations


class Clock:
    """Reads ``now``; a test moves it forward by assigning it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
