"""What every local component shares: ``with`` starts it and stops it, whatever happens."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Component:
    """A process (or a set of them) with ``start()`` and ``stop()``; ``stop`` must be safe to
    call after a failed or partial start."""

    def start(self) -> object:
        """Start; what it returns (an endpoint, say) is the component's own business."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
