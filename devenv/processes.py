"""The local components' processes: started tied to us, waited for, their logs read back."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

#: How often a start-up wait looks again.
POLL_INTERVAL_SECONDS = 0.1
#: A log line longer than this is cut in failure reports (some components log whole objects).
MAX_LOG_LINE = 1000

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Loaded up front: the child, between fork and exec, should only make the prctl call.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Have the kernel SIGKILL the child if the Python process dies without cleaning up.

    SIGKILL, not SIGTERM: the components die together, and a kube-apiserver shutting down
    gracefully with its etcd gone waits forever. The data is throw-away anyway. (The signal
    fires when the thread that started the child exits, so start components from a
    long-lived thread such as the main one.)
    """
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    args: list[str],
    log: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a component logging to ``log`` (appended: one restarted in place logs on), in
    a session of its own (a terminal's Ctrl-C reaches only us, and we stop them in order),
    killed by the kernel if we die first."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds; reaped either way."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def wait_while_running(
    what: str,
    ready: Callable[[], bool],
    *,
    deadline: float,
    timeout: float,
    processes: Mapping[str, subprocess.Popen[bytes]],
    error: type[Exception],
) -> None:
    """Poll ``ready`` until it says yes; raise ``error`` as soon as one of ``processes``
    exits, or at ``deadline`` (``timeout`` is what the message reports)."""
    while True:
        for name, process in processes.items():
            if process.poll() is not None:
                raise error(f"{name} exited with {process.returncode} while waiting for {what}")
        try:
            if ready():
                return
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_INTERVAL_SECONDS)


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` of a log, long lines cut, reading only its end."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 200 * lines))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(
        line if len(line) <= MAX_LOG_LINE else line[:MAX_LOG_LINE] + " [...]"
        for line in text.splitlines()[-lines:]
    )


def log_tails(
    logs: Mapping[str, Path], processes: Mapping[str, subprocess.Popen[bytes]], lines: int
) -> str:
    """The last ``lines`` of each process's log, headed by whether it still runs."""
    parts = []
    for name, path in logs.items():
        process = processes.get(name)
        status = "running" if process is not None and process.poll() is None else "exited"
        if process is not None and process.returncode is not None:
            status = f"exited with {process.returncode}"
        parts.append(f"===== {name} ({status}) {path} =====\n{tail(path, lines)}")
    return "\n".join(parts)


def kill_left(processes: Mapping[str, subprocess.Popen[bytes]]) -> None:
    """Kill whatever still runs (a stop interrupted, a second Ctrl-C): no more grace."""
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 30.0,
    explain: Callable[[], str] | None = None,
    *,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; on timeout raise
    TimeoutError naming ``what`` (and what ``explain`` says was last seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"\n{explain()}" if explain is not None else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{seen}")
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    """``wait_for`` a condition that has no value to return."""
    wait_for(what, lambda: predicate() or None, timeout, interval=interval)


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: stop as on Ctrl-C."""


def _stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """For a long-running command: SIGTERM and SIGHUP raise ``Stopped``, and Ctrl-C raises
    KeyboardInterrupt even when started from a shell that ignores SIGINT for background
    jobs, so ``finally`` blocks clean up either way."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stopped)
    signal.signal(signal.SIGINT, signal.default_int_handler)
