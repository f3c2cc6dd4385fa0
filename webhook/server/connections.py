"""Bounds on what open connections may cost: count, header wait, TLS buffers, freed memory.

aiohttp gives a connection that never completes its headers as long as its keep-alive
timer (3,630 s by default), keeps every connection it accepts, and asyncio gives every TLS
connection a 256 KiB read buffer. A few hundred idle or trickling clients then hold a
replica's whole memory limit. This module keeps them in check from outside aiohttp, through
its public surface (``Server.connections``, ``RequestHandler.force_close``):

- every connection is counted from the moment it is accepted (``TLSListener``): it costs a
  bare socket until its first byte, then a TLS object and buffers during its handshake.
  The first byte and the handshake must come within ``HANDSHAKE_TIMEOUT`` of the accept;
  at most ``MAX_HANDSHAKING`` handshakes run at once (the oldest gives way), and every
  connection, whatever its stage, counts towards ``MAX_CONNECTIONS`` (a new one takes the
  place of the oldest that has not sent a byte);
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
import contextlib
import itertools
import logging
import socket
import ssl
import time
from collections.abc import Callable

from aiohttp import web

from webhook.telemetry.memory import MALLOC_TRIM

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
#: How long a new connection has for its TLS handshake, ClientHello included: the API
#: server's own webhook client gives up on a handshake after 10 s (client-go's transport
#: defaults, TLSHandshakeTimeout in k8s.io/apimachinery/pkg/util/net/http.go), so a
#: handshake taking longer is never the API server's. asyncio's default is 60 s.
HANDSHAKE_TIMEOUT = 10.0
#: Connections waiting for their handshake at once. A handshake takes milliseconds; the
#: API server opens at most one connection per admission in flight, and its in-flight
#: limits (400 + 200 by default) spread over seconds. Each waiting connection holds an
#: SSL object and a TLS read buffer (~66 KiB measured with asyncio's TLS server): 512 of
#: them cost ~33 MiB.
MAX_HANDSHAKING = 512
#: Connections the kernel queues for accept (asyncio's create_server default is 100).
LISTEN_BACKLOG = 1024
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


#: How many waiting connections with bytes already sent a new connection's room may pass
#: over (one non-blocking peek each) before the oldest goes whatever it sent.
IDLE_LOOKAHEAD = 16


def _has_bytes(sock: socket.socket) -> bool:
    """Bytes wait to be read on ``sock``: its client has spoken and is not idle."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))  # b"": the client went; drop it first
    except OSError:  # BlockingIOError: nothing yet; anything else: broken, as droppable
        return False


class ConnectionGuard:
    """Tracks which connections are serving a request; sweeps the rest against the limits."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        on_close: Callable[[str], None] | None = None,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_handshaking: int = MAX_HANDSHAKING,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.handshake_timeout = handshake_timeout
        self.max_handshaking = max_handshaking
        self._on_close = on_close
        self._server: web.Server | None = None
        self._waiting: dict[_Accepted, None] = {}
        """Connections accepted whose first byte has not come yet, oldest first."""
        self._handshaking: dict[_Accepted, None] = {}
        """Connections in their TLS handshake, oldest first."""
        # RequestHandler has __slots__ without __weakref__: plain containers, pruned to the
        # live connections on every sweep.
        self._first_seen: dict[web.RequestHandler, float] = {}
        self._served: set[web.RequestHandler] = set()
        self._busy: dict[web.RequestHandler, int] = {}
        self._last_count = 0
        self._changes_since_trim = 0
        self._last_trim = 0.0
        self._trim_wanted = False

    # -- called by the listener -----------------------------------------------------

    @property
    def unsettled(self) -> int:
        """Connections accepted that aiohttp does not have yet (no byte yet, or in TLS)."""
        return len(self._waiting) + len(self._handshaking)

    def connection_accepted(self, accepted: _Accepted) -> None:
        """A new connection: make room for it within MAX_CONNECTIONS, at the cost of the
        oldest connection that has not sent a byte (idle established ones are the sweep's)."""
        self._waiting[accepted] = None
        self._changes_since_trim += 1
        established = len(self._server.connections) if self._server is not None else 0
        while self._waiting and self.unsettled + established > self.max_connections:
            victim = self._idlest_waiting(accepted)
            if victim is None:
                break
            self._drop(victim, "connection limit reached")

    def _idlest_waiting(self, newest: _Accepted) -> _Accepted | None:
        """The oldest waiting connection that has still sent nothing. Under a flood the
        accept loop can take many connections before the loop reads any of them: a client
        whose ClientHello is already in its socket buffer is about to start its handshake
        and is passed over, up to IDLE_LOOKAHEAD of them (beyond that the oldest goes
        whatever it sent, so a flood of clients that send one byte costs no long scans)."""
        oldest = next(iter(self._waiting))
        if oldest is newest:
            return None
        for waiting in itertools.islice(self._waiting, IDLE_LOOKAHEAD):
            if waiting is newest:
                break
            if not _has_bytes(waiting.sock):
                return waiting
        return oldest

    def handshake_started(self, accepted: _Accepted) -> bool:
        """Its first byte came: may its handshake start? The oldest handshake gives way when
        MAX_HANDSHAKING are under way (a real handshake takes milliseconds, so the oldest is
        the likeliest to be a client that stopped)."""
        if accepted not in self._waiting:
            return False  # already closed
        del self._waiting[accepted]
        self._handshaking[accepted] = None
        while len(self._handshaking) > self.max_handshaking:
            self._drop(next(iter(self._handshaking)), "handshake limit reached")
        return accepted in self._handshaking

    def connection_settled(self, accepted: _Accepted) -> bool:
        """It went (closed, timed out) or aiohttp has it now; False if it was already."""
        for stage in (self._waiting, self._handshaking):
            if accepted in stage:
                del stage[accepted]
                self._changes_since_trim += 1
                return True
        return False

    def close_unsettled(self) -> None:
        """Close every connection aiohttp does not have yet (the server is stopping)."""
        for stage in (self._waiting, self._handshaking):
            items = list(stage)
            stage.clear()
            for accepted in items:
                accepted.close()

    def _drop(self, accepted: _Accepted, reason: str) -> None:
        self.connection_settled(accepted)
        accepted.close()
        if self._on_close:
            self._on_close(reason)

    # -- called by the handler -----------------------------------------------------

    def attach(self, server: web.Server) -> None:
        """The aiohttp server whose established connections count with the handshaking."""
        self._server = server

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
        excess = len(connections) + self.unsettled - closed - self.max_connections
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
        if MALLOC_TRIM is None or now - self._last_trim < TRIM_MIN_INTERVAL:
            return
        if self._trim_wanted or self._changes_since_trim >= TRIM_AFTER_CHANGES:
            MALLOC_TRIM(0)
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


class _Accepted:
    """One accepted connection before aiohttp has it: waiting for its first byte, then in
    its TLS handshake."""

    __slots__ = ("accepted", "sock", "task", "timer")

    def __init__(self, sock: socket.socket, accepted: float) -> None:
        self.sock = sock
        self.accepted = accepted
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.task is None:  # still waiting for its first byte: only the reader has it
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(self.sock)
            self.sock.close()
            return
        # In its handshake, the socket belongs to a transport: shut it down (the handshake
        # then fails at once and its transport closes the socket) rather than close a file
        # descriptor the transport may still unregister after the number is reused.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class TLSListener(asyncio.AbstractServer):
    """Accepts the webhook port's connections itself, so that each is counted from its
    accept.

    asyncio's own TLS server (``create_server(ssl=…)``) makes an SSL object and a 16 KiB
    buffer for every connection at once (~66 KiB measured) and tells the application only
    once the handshake is over: a client that connects and never says ClientHello was
    invisible to every limit for asyncio's 60 s. Here a new connection is a bare socket
    (~1 KiB) until its first byte arrives; only then does TLS start
    (``loop.connect_accepted_socket``), and the connection goes to aiohttp's handler when
    the handshake is done. The guard counts both stages and closes what exceeds its
    limits, and the first byte and the handshake together must come within
    ``handshake_timeout`` of the accept. Public asyncio API only.
    """

    def __init__(
        self,
        sockets: list[socket.socket],
        handler_factory: Callable[[], asyncio.BaseProtocol],
        context: ssl.SSLContext,
        guard: ConnectionGuard,
    ) -> None:
        self.sockets = sockets
        self._factory = handler_factory
        self._context = context
        self._guard = guard
        self._loop = asyncio.get_running_loop()
        self._last_accept_error = -60.0
        self._tasks = [self._loop.create_task(self._accept(s)) for s in sockets]

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = await self._loop.sock_accept(listener)
            except OSError as e:  # out of file descriptors, and the like: breathe, go on
                now = time.monotonic()
                if now - self._last_accept_error >= 60.0:  # one line a minute, not ten a second
                    self._last_accept_error = now
                    log.warning("cannot accept a connection: %s", e)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            accepted = _Accepted(conn, time.monotonic())
            self._guard.connection_accepted(accepted)
            accepted.timer = self._loop.call_later(
                self._guard.handshake_timeout, self._expired, accepted
            )
            self._loop.add_reader(conn, self._readable, accepted)

    def _readable(self, accepted: _Accepted) -> None:
        try:
            first = accepted.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return  # nothing after all
        except OSError:
            first = b""
        if not first:  # the client went without a byte: no TLS for it
            if self._guard.connection_settled(accepted):
                accepted.close()
            return
        self._loop.remove_reader(accepted.sock)
        if accepted.timer is not None:
            accepted.timer.cancel()  # the handshake is held to what is left of the time
        if not self._guard.handshake_started(accepted):
            return  # closed to stay within the handshake limit
        accepted.task = self._loop.create_task(self._handshake(accepted))

    async def _handshake(self, accepted: _Accepted) -> None:
        left = self._guard.handshake_timeout - (time.monotonic() - accepted.accepted)
        try:
            await self._loop.connect_accepted_socket(
                self._factory,
                accepted.sock,
                ssl=self._context,
                ssl_handshake_timeout=max(left, 0.1),
            )
        except (OSError, ValueError, RuntimeError):
            # A failed, timed-out or abandoned handshake (ssl.SSLError, ConnectionResetError,
            # ConnectionAbortedError for the timeout) is the client's business, as it is
            # in asyncio's own TLS server: the connection just goes.
            accepted.sock.close()
        finally:
            self._guard.connection_settled(accepted)

    def _expired(self, accepted: _Accepted) -> None:
        """No first byte within the handshake timeout."""
        if self._guard.connection_settled(accepted):
            accepted.close()

    # -- asyncio.AbstractServer ------------------------------------------------------

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for listener in self.sockets:
            listener.close()
        self._guard.close_unsettled()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return any(not task.done() for task in self._tasks)

    async def start_serving(self) -> None:
        return None  # serving from construction

    async def serve_forever(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _listening_sockets(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address ``host`` resolves to, as
    ``loop.create_server`` makes them."""
    sockets: list[socket.socket] = []
    # "" means every interface, as it does to loop.create_server.
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GatedTLSSite(web.TCPSite):
    """A TCP site whose connections come through a ``TLSListener``: TLS as ``TCPSite``
    with an ``ssl_context`` serves it, with every connection counted from its accept."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext,
        guard: ConnectionGuard,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port)
        self._tls_context = ssl_context
        self._guard = guard
        self._listen = (host, port, bool(reuse_port))

    @property
    def name(self) -> str:
        return super().name.replace("http://", "https://", 1)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._guard.attach(server)
        self._server = TLSListener(
            _listening_sockets(*self._listen), server, self._tls_context, self._guard
        )
