"""What every local component shares: ``with`` starts it and stops it, whatever happens."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from devenv.processes import Stopped, stop_on_signals, wait_while_running


class _HasProcesses(Protocol):
    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]: ...


State = TypeVar("State", bound=_HasProcesses)


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


class Running(Component, Generic[State]):
    """A component whose state (processes, files, ports) exists from ``start()`` to
    ``stop()``; ``WHAT`` names it in the error of a use outside that time, ``ERROR`` is
    what a start that fails raises."""

    WHAT = "component"
    ERROR: type[Exception] = RuntimeError
    startup_timeout: float
    _running: State | None = None

    @property
    def _state(self) -> State:
        if self._running is None:
            raise RuntimeError(f"the {self.WHAT} is not running; call start() first")
        return self._running

    @property
    def running(self) -> bool:
        return self._running is not None

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool]) -> None:
        """Until ``ready``; ERROR as soon as one of its processes exits, or at ``deadline``."""
        wait_while_running(
            what,
            ready,
            deadline=deadline,
            timeout=self.startup_timeout,
            processes=self._state.processes,
            error=self.ERROR,
        )


def build_and_report(
    locate: Callable[[], object], errors: tuple[type[Exception], ...], what: str
) -> int:
    """``build`` of a component's command line: find or build its binaries, list them and
    say how long it took; 1 with the error when that fails."""
    started = time.monotonic()
    try:
        binaries = locate()
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in vars(binaries).items():
        print(f"{name:24} {path}")
    print(f"{what} binaries ready in {time.monotonic() - started:.2f}s")
    return 0


class _Checked(Protocol):
    def start(self) -> object: ...
    def stop(self) -> None: ...
    def check_alive(self) -> None: ...


def run_until_stopped(
    parts: Sequence[_Checked],
    errors: tuple[type[Exception], ...],
    ready: Callable[[], Sequence[str]],
    what: str,
    after: Callable[[], Sequence[str]] = lambda: (),
) -> int:
    """``up`` of a component's command line: start ``parts`` in order, print ``ready()``
    (its last line is what a shell evaluates, flushed at once), check every second that they
    are alive until Ctrl-C or SIGTERM, then stop them in reverse order and print ``after()``
    as warnings. 0 when stopped, 130 when interrupted while starting, 1 with the error when
    a part fails."""
    stop_on_signals()
    started = False
    try:
        for part in parts:
            part.start()
        started = True
        print("\n".join(ready()), flush=True)
        print(
            f"# Ctrl-C or SIGTERM stops {what} and removes the files", file=sys.stderr, flush=True
        )
        while True:
            for part in parts:
                part.check_alive()
            time.sleep(1)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Stopped):
        return 0 if started else 130
    finally:
        for part in reversed(parts):
            part.stop()
        for problem in after():
            print(f"warning: {problem}", file=sys.stderr)
        print(f"# {what} stopped", file=sys.stderr)
