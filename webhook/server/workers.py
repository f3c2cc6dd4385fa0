"""Several worker processes per replica, sharing the HTTPS port with ``SO_REUSEPORT``.

One Python process serves from one core. ``serve --workers N`` forks N-1 secondary
workers after the configuration is loaded and before any thread or event loop
exists; every worker then binds the same port with ``SO_REUSEPORT`` (the kernel
spreads new connections across the listeners) and serves the hot path from its own
watch of the managed secrets. Only the primary (worker 0) serves health and
metrics and may take part in leader election, so a replica claims the Lease once,
under one holder name.

The primary supervises: it forwards SIGTERM/SIGINT to the secondaries, and when a
secondary exits on its own the whole replica shuts down (and exits non-zero) so the
kubelet restarts it, rather than serving on with a missing worker. Secondaries ask
the kernel to send them SIGTERM if the primary dies first.

Each secondary sends the primary its counters and histograms over a socket pair made
before the fork (nothing on the filesystem, nothing another process can open) whenever
they changed, at most every PUSH_SECONDS; the primary's ``/metrics`` adds them to its
own, so a scrape counts every admission the replica answered.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from webhook.admission import jsonio
from webhook.telemetry.metrics import Totals

log = logging.getLogger(__name__)

#: How often the primary checks its secondaries (waitpid with WNOHANG: no syscall cost
#: worth counting, and a dead worker is noticed long before the kubelet's probes would).
POLL_SECONDS = 1.0
#: prctl(2) option: the signal a child gets when its parent thread exits.
_PR_SET_PDEATHSIG = 1
#: How often a secondary sends the primary its counts when they changed: a scrape sees
#: another worker's admissions at most this late.
PUSH_SECONDS = 1.0
#: A message's length prefix (network order); a worker's counts are a few KiB.
_LENGTH = struct.Struct("!I")


@dataclass(frozen=True)
class Worker:
    """This process's place among the replica's workers."""

    index: int
    """0 for the primary (health, metrics, leader election), 1..count-1 for secondaries."""
    count: int
    channel: socket.socket | None = field(default=None, compare=False)
    """A secondary's end of its socket pair to the primary (``push_totals``)."""

    @property
    def primary(self) -> bool:
        return self.index == 0

    @property
    def shares_port(self) -> bool:
        return self.count > 1


SINGLE = Worker(0, 1)


@dataclass
class Secondaries:
    """The primary's view of the workers it forked."""

    pids: list[int] = field(default_factory=list)
    exited: dict[int, int] = field(default_factory=dict)
    """pid → wait status of the workers that have ended."""
    channels: list[socket.socket] = field(default_factory=list)
    """The primary's end of each secondary's socket pair (``WorkerTotals``)."""

    def signal(self, sig: int) -> None:
        for pid in self.pids:
            if pid not in self.exited:
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def reap(self) -> list[tuple[int, int]]:
        """Collect the workers that ended since the last call: (pid, exit code)."""
        ended: list[tuple[int, int]] = []
        for pid in self.pids:
            if pid in self.exited:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.exited[pid] = status
                ended.append((pid, os.waitstatus_to_exitcode(status)))
        return ended

    async def watch(self, on_exit: Callable[[int, int], None]) -> None:
        """Call ``on_exit(pid, code)`` for each worker that ends, until all have."""
        while len(self.exited) < len(self.pids):
            for pid, code in self.reap():
                on_exit(pid, code)
            await asyncio.sleep(POLL_SECONDS)

    async def wait(self, grace: float) -> None:
        """Wait for every worker to end; SIGKILL the ones still there after ``grace`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while len(self.exited) < len(self.pids) and loop.time() < deadline:
            self.reap()
            await asyncio.sleep(0.05)
        self.signal(signal.SIGKILL)
        while len(self.exited) < len(self.pids):
            self.reap()
            await asyncio.sleep(0.01)


def fork_workers(count: int) -> tuple[Worker, Secondaries]:
    """Fork ``count - 1`` secondaries. Call before any thread or event loop starts.

    Returns this process's role; in the primary, the secondaries to supervise.
    """
    if count < 1:
        raise ValueError(f"workers must be at least 1, not {count}")
    if count == 1:
        return SINGLE, Secondaries()
    # Objects that exist now (modules, the config) are never freed: keeping them out of
    # the collector's generations stops its passes from writing to their pages, so the
    # workers go on sharing them copy-on-write.
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    secondaries = Secondaries()
    for index in range(1, count):
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            for inherited in (*secondaries.channels, ours):  # the other workers' ends
                inherited.close()
            return Worker(index, count, theirs), Secondaries()
        theirs.close()
        secondaries.pids.append(pid)
        secondaries.channels.append(ours)
    return Worker(0, count), secondaries


async def push_totals(channel: socket.socket, totals: Callable[[], Totals]) -> None:
    """In a secondary: send ``totals()`` to the primary whenever they changed, at most
    every PUSH_SECONDS, until cancelled or the primary is gone."""
    _, writer = await asyncio.open_connection(sock=channel)
    sent = b""
    try:
        while True:
            message = jsonio.dumps(totals())
            if message != sent:
                writer.write(_LENGTH.pack(len(message)) + message)
                await writer.drain()
                sent = message
            await asyncio.sleep(PUSH_SECONDS)
    except (ConnectionError, OSError):
        return  # the primary is gone; PR_SET_PDEATHSIG ends this worker
    finally:
        writer.close()


class WorkerTotals:
    """In the primary: the latest counts each secondary sent (``Metrics.peers``)."""

    def __init__(self, channels: list[socket.socket]) -> None:
        self._channels = channels
        self._latest: dict[int, Totals] = {}

    def latest(self) -> list[Totals]:
        return list(self._latest.values())

    async def follow(self) -> None:
        """Read every secondary's messages until each channel closes (or cancelled)."""
        await asyncio.gather(*(self._read(i, c) for i, c in enumerate(self._channels)))

    async def _read(self, index: int, channel: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=channel)
        try:
            while True:
                (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                doc = jsonio.loads(await reader.readexactly(size))
                # A worker that ends takes the replica down with it (Secondaries.watch),
                # so its last counts stay in the sum: counters never go backwards.
                self._latest[index] = [(name, labels, value) for name, labels, value in doc]
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        except (ValueError, TypeError) as e:  # a message this version cannot read
            log.warning("worker %d sent unreadable metrics; not counted from now: %s", index, e)
        finally:
            writer.close()


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the primary dies, so no worker is left serving alone."""
    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the primary was already gone before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
