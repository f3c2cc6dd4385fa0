"""Which waiting connection gives way when a new one needs room within the cap."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from webhook.server.connections import IDLE_LOOKAHEAD, ConnectionGuard, _Accepted


@pytest.fixture
def pairs() -> Iterator[list[tuple[_Accepted, socket.socket]]]:
    made: list[tuple[_Accepted, socket.socket]] = []
    yield made
    for accepted, client in made:
        accepted.sock.close()
        client.close()


def connect(pairs: list[tuple[_Accepted, socket.socket]], said: bytes = b"") -> _Accepted:
    """A server-side socket as the listener holds it, its client having sent ``said``."""
    server, client = socket.socketpair()
    server.setblocking(False)
    if said:
        client.sendall(said)
    accepted = _Accepted(server, time.monotonic())
    pairs.append((accepted, client))
    return accepted


async def test_a_client_whose_hello_is_already_buffered_is_not_the_one_to_go(
    pairs: list[tuple[_Accepted, socket.socket]],
) -> None:
    """Under a flood the accept loop runs ahead of the reads: the oldest waiting connection
    may be a real client whose ClientHello is waiting in its buffer. An idle one goes."""
    guard = ConnectionGuard(max_connections=2)
    spoke = connect(pairs, b"\x16\x03\x01")  # the first bytes of a TLS ClientHello
    idle = connect(pairs)
    guard.connection_accepted(spoke)
    guard.connection_accepted(idle)
    newest = connect(pairs)
    guard.connection_accepted(newest)
    assert guard.unsettled == 2
    assert idle.sock.fileno() == -1  # closed
    assert spoke.sock.fileno() != -1
    assert guard.handshake_started(spoke)  # its handshake may still begin


async def test_when_every_waiting_client_has_spoken_the_oldest_goes(
    pairs: list[tuple[_Accepted, socket.socket]],
) -> None:
    """The look-ahead is bounded: a flood of clients that each send one byte costs at most
    IDLE_LOOKAHEAD peeks per new connection, and the cap still holds."""
    guard = ConnectionGuard(max_connections=IDLE_LOOKAHEAD + 1)
    waiting = [connect(pairs, b"x") for _ in range(IDLE_LOOKAHEAD + 1)]
    for accepted in waiting:
        guard.connection_accepted(accepted)
    guard.connection_accepted(connect(pairs, b"x"))
    assert guard.unsettled == IDLE_LOOKAHEAD + 1
    assert waiting[0].sock.fileno() == -1
    assert all(a.sock.fileno() != -1 for a in waiting[1:])


async def test_a_client_that_left_goes_before_one_that_spoke(
    pairs: list[tuple[_Accepted, socket.socket]],
) -> None:
    guard = ConnectionGuard(max_connections=2)
    spoke = connect(pairs, b"\x16")
    gone = connect(pairs)
    pairs[-1][1].close()  # its client closed without a byte
    guard.connection_accepted(spoke)
    guard.connection_accepted(gone)
    guard.connection_accepted(connect(pairs))
    assert gone.sock.fileno() == -1
    assert spoke.sock.fileno() != -1
