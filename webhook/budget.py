"""A shared byte budget for what requests in flight hold: bodies being read and decoded reviews.

Each request takes what it needs (a body's bytes as they arrive, then an estimate of its
decoded size) and gives it all back when answered. When the budget is spent, a request
waits a little, then is refused: a burst of huge reviews slows itself down instead of
pushing the replica past its memory limit.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class BudgetExhausted(Exception):
    """The budget stayed spent for longer than the request may wait."""


class Budget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._changed = asyncio.Condition()

    def hold(self) -> Held:
        """What one request holds; released on leaving the ``async with`` block."""
        return Held(self)

    async def _take(self, n: int, wait: float) -> None:
        n = min(n, self.capacity)  # one request may always use the whole budget, alone
        async with self._changed:
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait_for(lambda: self.available >= n)
            except TimeoutError as e:
                raise BudgetExhausted(
                    f"{n} bytes not available within {wait:g}s "
                    f"({self.available} of {self.capacity} free)"
                ) from e
            self.available -= n

    async def _give(self, n: int) -> None:
        async with self._changed:
            self.available += n
            self._changed.notify_all()


class Held:
    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self.amount = 0

    async def take(self, n: int, wait: float) -> None:
        await self._budget._take(n, wait)
        self.amount += min(n, self._budget.capacity)

    async def __aenter__(self) -> Held:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.amount:
            amount, self.amount = self.amount, 0
            await asyncio.shield(self._budget._give(amount))
