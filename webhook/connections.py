"""Bounds on what open connections may cost: count, header wait, TLS buffers, freed memory.

aiohttp gives a connection that never completes its headers as long as its keep-alive
timer (3,630 s by default), keeps every connection it accepts, and asyncio gives every TLS
connection a 256 KiB read buffer. A few hundred idle or trickling clients then hold a
replica's whole memory limit. This module keeps them in check from outside aiohttp, through
its public surface (``Server.connections``, ``RequestHandler.force_close``):

- a sweep closes connections that have not completed a request's headers within
  ``HEADER_TIMEOUT`` of connecting (cert-manager's webhook: ``ReadHeaderTimeout``);
- above ``MAX_CONNECTIONS`` it closes the longest-open connections that are not serving a
  request, so a flood of idle clients cannot lock the API server out;
- the TLS read buffer is sized for TLS records, not 256 KiB;
- once many connections have come or gone, or a large review is done, glibc is asked to give
  freed memory back to the system (``malloc_trim``).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)

#: Connections one replica keeps open. A real API server has at most
#: --max-requests-inflight + --max-mutating-requests-inflight (400 + 200 by default)
#: requests in flight, and keeps 25 idle connections per webhook host
#: (client-go transport: DefaultMaxIdleConnsPerHost); three API servers stay well below.
MAX_CONNECTIONS = 2048
#: A new connection must complete the headers of its first request within this time
#: (Go net/http's ReadHeaderTimeout in the reference webhooks is 10-30 s; the API server
#: sends a whole request in one write right after the handshake).
HEADER_TIMEOUT = 10.0
#: Idle keep-alive. The API server's webhook client closes its own idle connections after
#: 90 s (Go http.Transport IdleConnTimeout, as client-go's utilnet.SetTransportDefaults
#: leaves it). The server must wait longer: a server that closes first races with a reused
#: connection, and Go does not retry a POST that fails that way (net/http transport.go,
#: shouldRetryRequest: only replayable requests).
KEEPALIVE_TIMEOUT = 120.0
#: How often the sweep runs.
SWEEP_SECONDS = 1.0
#: asyncio's TLS transport reads ciphertext into a per-connection buffer of
#: SSLProtocol.max_size bytes (256 KiB, CPython Lib/asyncio/sslproto.py). A TLS record is at
#: most 16 KiB + 256 bytes of overhead (RFC 8446 section 5.2); a buffer of one record's
#: plaintext size costs 1/16 of the default, and a larger record is simply read in two.
TLS_READ_BUFFER = 16 * 1024
#: Ask glibc to return free memory once this many connections opened or closed since the
#: last trim (TLS handshakes leave ~100 KiB each of freed but unreturned heap behind).
TRIM_AFTER_CHANGES = 64
#: ... and at most this often (a trim walks the heap: milliseconds, not free).
TRIM_MIN_INTERVAL = 5.0


def limit_tls_read_buffer(size: int = TLS_READ_BUFFER) -> None:
    """Shrink the per-connection TLS read buffer of every TLS connection of this process."""
    asyncio.sslproto.SSLProtocol.max_size = size


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (musl, macOS): nothing to trim there."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


class ConnectionGuard:
    """Tracks which connections are serving a request; sweeps the rest against the limits."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._on_close = on_close
        # RequestHandler has __slots__ without __weakref__: plain containers, pruned to the
        # live connections on every sweep.
        self._first_seen: dict[web.RequestHandler, float] = {}
        self._served: set[web.RequestHandler] = set()
        self._busy: dict[web.RequestHandler, int] = {}
        self._last_count = 0
        self._changes_since_trim = 0
        self._last_trim = 0.0
        self._trim_wanted = False

    # -- called by the handler -----------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        handler = request.protocol
        if isinstance(handler, web.RequestHandler):
            self._served.add(handler)
            self._busy[handler] = self._busy.get(handler, 0) + 1

    def request_finished(self, request: web.BaseRequest, large: bool = False) -> None:
        handler = request.protocol
        if isinstance(handler, web.RequestHandler) and handler in self._busy:
            self._busy[handler] -= 1
            if self._busy[handler] <= 0:
                del self._busy[handler]
        if large:
            self._trim_wanted = True

    # -- the sweep -------------------------------------------------------------------

    def sweep(self, server: web.Server, now: float | None = None) -> int:
        """Close what breaks a limit; return how many connections were closed."""
        now = time.monotonic() if now is None else now
        connections = server.connections
        live = set(connections)
        for gone in [h for h in self._first_seen if h not in live]:
            del self._first_seen[gone]
        self._served &= live
        closed = 0
        idle: list[tuple[float, web.RequestHandler]] = []
        for handler in connections:
            first = self._first_seen.setdefault(handler, now)
            if handler in self._busy:
                continue
            if handler not in self._served and now - first >= self.header_timeout:
                self._close(handler, "no request headers in time")
                closed += 1
                continue
            idle.append((first, handler))
        excess = len(connections) - closed - self.max_connections
        if excess > 0:
            idle.sort(key=lambda pair: pair[0])
            for _, handler in idle[:excess]:
                self._close(handler, "connection limit reached")
                closed += 1
        count = len(connections) - closed
        self._changes_since_trim += abs(self._last_count - count)
        self._last_count = count
        self._maybe_trim(now)
        return closed

    def _close(self, handler: web.RequestHandler, reason: str) -> None:
        handler.force_close()
        if self._on_close:
            self._on_close(reason)

    def _maybe_trim(self, now: float) -> None:
        if _MALLOC_TRIM is None or now - self._last_trim < TRIM_MIN_INTERVAL:
            return
        if self._trim_wanted or self._changes_since_trim >= TRIM_AFTER_CHANGES:
            _MALLOC_TRIM(0)
            self._last_trim = now
            self._changes_since_trim = 0
            self._trim_wanted = False

    async def watch(self, server: web.Server, every: float = SWEEP_SECONDS) -> None:
        """Sweep until cancelled."""
        while True:
            await asyncio.sleep(every)
            closed = self.sweep(server)
            if closed:
                log.info("closed %d connection(s) over the limits", closed)
