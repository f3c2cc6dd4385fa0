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
        self._waiting = 0
        self._notifying: set[asyncio.Task[None]] = set()

    def hold(self) -> Held:
        """What one request holds; released on leaving the ``async with`` block."""
        return Held(self)

    async def _take(self, n: int, wait: float) -> None:
        n = min(n, self.capacity)  # one request may always use the whole budget, alone
        if self.available >= n:
            # Room: no lock, no timer (one event loop, so nothing runs between the check
            # and the subtraction). A waiter re-checks the same way when woken.
            self.available -= n
            return
        self._waiting += 1
        try:
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
        finally:
            self._waiting -= 1

    def _give(self, n: int) -> None:
        self.available += n
        if self._waiting:  # wake the queued requests (they re-check under the lock)
            task = asyncio.get_running_loop().create_task(self._notify())
            self._notifying.add(task)
            task.add_done_callback(self._notifying.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class Held:
    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self.amount = 0

    async def take(self, n: int, wait: float) -> None:
        if not self.take_now(n):
            await self._budget._take(n, wait)
            self.amount += min(n, self._budget.capacity)

    def take_now(self, n: int) -> bool:
        """Take ``n`` if the budget has room now, without a coroutine or the lock; False
        (nothing taken) otherwise, and the caller waits through ``take``. One event loop:
        nothing runs between the check and the subtraction."""
        budget = self._budget
        n = min(n, budget.capacity)
        if budget.available < n:
            return False
        budget.available -= n
        self.amount += n
        return True

    async def __aenter__(self) -> Held:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Give back all that was taken (synchronous: a cancelled request still gives back)."""
        if self.amount:
            amount, self.amount = self.amount, 0
            self._budget._give(amount)
