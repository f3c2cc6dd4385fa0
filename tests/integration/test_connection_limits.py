"""Idle, trickling and surplus connections are closed; a normal admission still gets through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_options, write_serving_pair
from webhook.certs.pki import make_ca
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.server import app as server_module
from webhook.server.app import NamesOnlySource, RunningServer, start_server
from webhook.server.budget import Budget, BudgetExhausted
from webhook.server.connections import HANDSHAKE_TIMEOUT, KEEPALIVE_TIMEOUT


@dataclass
class Limited:
    server: RunningServer
    ctx: ssl.SSLContext

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.server.port, ssl=self.ctx)

    async def admit(self) -> int:
        connector = aiohttp.TCPConnector(ssl=self.ctx, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"https://127.0.0.1:{self.server.port}/mutate",
                data=json.dumps(make_review(make_pod("nginx"))),
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            return resp.status


@pytest.fixture
async def limited(config: Config, tmp_path: Path) -> AsyncIterator[Limited]:
    ca = make_ca()
    write_serving_pair(ca, tmp_path)
    server = await start_server(
        ConfigStore(config),
        NamesOnlySource(),
        loopback_options(tmp_path, max_connections=4, header_timeout=1.5),
    )
    try:
        yield Limited(server, ssl.create_default_context(cadata=ca.cert_pem.decode()))
    finally:
        await server.stop()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True
    return True


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def test_a_connection_that_never_sends_headers_is_closed(limited: Limited) -> None:
    reader, writer = await limited.connect()
    try:
        assert await closed_within(reader, 5.0)
    finally:
        await close(writer)


async def test_a_connection_trickling_its_headers_is_closed(limited: Limited) -> None:
    reader, writer = await limited.connect()
    writer.write(b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while True:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.2)

    task = asyncio.create_task(trickle())
    try:
        assert await closed_within(reader, 5.0)
    finally:
        task.cancel()
        await close(writer)


async def test_surplus_idle_connections_are_closed_and_admissions_still_work(
    limited: Limited,
) -> None:
    held = [await limited.connect() for _ in range(10)]
    try:
        await asyncio.sleep(1.2)  # one sweep
        hook = limited.server.runners[0].server
        assert hook is not None
        assert len(hook.connections) <= 4
        assert await limited.admit() == 200
    finally:
        for _, writer in held:
            await close(writer)


async def test_a_served_keep_alive_connection_outlives_the_header_deadline(
    limited: Limited,
) -> None:
    reader, writer = await limited.connect()
    body = json.dumps(make_review(make_pod("nginx"))).encode()
    head = (
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        writer.write(head + body)
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200")
        # An idle kept-alive connection, like the API server's pool, is not closed early.
        assert not await closed_within(reader, 3.0)
    finally:
        await close(writer)


def test_keep_alive_outlives_the_api_servers_idle_connection_timeout() -> None:
    # Go's http.Transport closes idle connections after 90 s (client-go keeps that default).
    assert KEEPALIVE_TIMEOUT > 90


async def test_budget_refuses_what_does_not_fit_in_time_and_frees_on_exit() -> None:
    budget = Budget(100)
    async with budget.hold() as first:
        await first.take(80, 1.0)
        async with budget.hold() as second:
            with pytest.raises(BudgetExhausted):
                await second.take(50, 0.1)
        assert budget.available == 20
    async with budget.hold() as third:
        await third.take(100, 0.1)
        assert budget.available == 0
    assert budget.available == 100


async def test_a_waiting_request_proceeds_when_budget_is_freed() -> None:
    budget = Budget(100)
    release = asyncio.Event()

    async def hog() -> None:
        async with budget.hold() as held:
            await held.take(100, 1.0)
            await release.wait()

    task = asyncio.create_task(hog())
    await asyncio.sleep(0.05)
    async with budget.hold() as waiter:
        asyncio.get_running_loop().call_later(0.1, release.set)
        await waiter.take(60, 2.0)
        assert waiter.amount == 60
    await task


async def test_a_cancelled_request_gives_its_budget_back_and_wakes_a_waiter() -> None:
    budget = Budget(100)
    taken = asyncio.Event()

    async def hold_forever() -> None:
        async with budget.hold() as held:
            await held.take(100, 1.0)
            taken.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold_forever())
    await taken.wait()
    async with budget.hold() as waiter:
        waiting = asyncio.create_task(waiter.take(70, 2.0))
        await asyncio.sleep(0.05)
        assert not waiting.done() and budget.available == 0
        holder.cancel()
        await asyncio.wait_for(waiting, 1.0)
        assert budget.available == 30
    assert budget.available == 100


async def test_process_metrics_are_exported(limited: Limited) -> None:
    async with (
        aiohttp.ClientSession() as plain,
        plain.get(f"http://127.0.0.1:{limited.server.health_port}/metrics") as r,
    ):
        text = await r.text()
    assert "process_resident_memory_bytes" in text
    assert "process_open_fds" in text


async def test_a_review_that_does_not_fit_the_memory_budget_gets_a_429_admission_review(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "MEMORY_BUDGET_BYTES", 4096)
    monkeypatch.setattr(server_module, "BUDGET_WAIT", 0.3)
    ca = make_ca()
    write_serving_pair(ca, tmp_path)
    server = await start_server(
        ConfigStore(config),
        NamesOnlySource(),
        loopback_options(tmp_path),
    )
    limited = Limited(server, ssl.create_default_context(cadata=ca.cert_pem.decode()))
    # A client that announces a 4,000-byte body and sends it slowly holds the budget...
    _, writer = await limited.connect()
    writer.write(
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 4000\r\n\r\n{"
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    try:
        connector = aiohttp.TCPConnector(ssl=limited.ctx, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(
                f"https://127.0.0.1:{server.port}/mutate",
                data=json.dumps(make_review(make_pod("nginx"))),
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            # ... so a review arriving meanwhile waits BUDGET_WAIT, then is refused cleanly.
            assert resp.status == 429
            body = await resp.json()
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["status"]["code"] == 429
        assert "too many large reviews in flight" in body["response"]["status"]["message"]
    finally:
        await close(writer)
        await server.stop()


# -- before TLS: connections counted from their accept -----------------------------------


@pytest.fixture
async def gated(config: Config, tmp_path: Path) -> AsyncIterator[Limited]:
    """Small limits so a test can pass them: 20 connections in all, 3 handshakes at once,
    1 s from accept to the end of the handshake."""
    ca = make_ca()
    write_serving_pair(ca, tmp_path)
    server = await start_server(
        ConfigStore(config),
        NamesOnlySource(),
        loopback_options(tmp_path, max_connections=20, handshake_timeout=1.0, max_handshaking=3),
    )
    try:
        yield Limited(server, ssl.create_default_context(cadata=ca.cert_pem.decode()))
    finally:
        await server.stop()


async def plain(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout(
    gated: Limited,
) -> None:
    reader, writer = await plain(gated.server.port)
    try:
        assert not await closed_within(reader, 0.5)  # still open before the timeout
        assert await closed_within(reader, 1.5)
    finally:
        await close(writer)


async def test_a_handshake_that_stops_after_its_first_bytes_is_closed_in_time(
    gated: Limited,
) -> None:
    reader, writer = await plain(gated.server.port)
    writer.write(b"\x16\x03\x01\x02\x00")  # the start of a ClientHello record, no more
    await writer.drain()
    try:
        assert await closed_within(reader, 2.0)
    finally:
        await close(writer)


async def test_connections_before_tls_count_towards_the_limit_and_the_oldest_go_first(
    gated: Limited,
) -> None:
    """100 connections that never start TLS, where 20 may be open: the oldest are closed as
    new ones come, at most 20 stay, and an admission still gets through."""
    held = [await plain(gated.server.port) for _ in range(100)]
    try:
        await asyncio.sleep(0.3)
        closed = [await closed_within(r, 0.05) for r, _ in held]
        assert sum(not c for c in closed) <= 20
        assert all(closed[:50])  # the oldest went first
        assert await gated.admit() == 200
    finally:
        for _, writer in held:
            await close(writer)


async def test_at_most_the_handshake_limit_of_stalled_handshakes_stay_open(
    gated: Limited,
) -> None:
    held = []
    for _ in range(8):
        reader, writer = await plain(gated.server.port)
        writer.write(b"\x16\x03\x01\x02\x00")
        await writer.drain()
        held.append((reader, writer))
        await asyncio.sleep(0.02)
    try:
        await asyncio.sleep(0.2)
        closed = [await closed_within(r, 0.05) for r, _ in held]
        assert sum(not c for c in closed) <= 3, closed
        assert all(closed[:5])  # the oldest gave way
        assert await gated.admit() == 200
    finally:
        for _, writer in held:
            await close(writer)


def test_the_handshake_timeout_is_the_api_servers_own() -> None:
    """client-go's webhook transport gives a TLS handshake 10 s (TLSHandshakeTimeout,
    k8s.io/apimachinery/pkg/util/net/http.go); asyncio's default is 60 s."""
    assert HANDSHAKE_TIMEOUT == 10.0


async def _chunked(limited: Limited, body: bytes, chunk: int = 64 * 1024) -> bytes:
    reader, writer = await limited.connect()
    writer.write(
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    for i in range(0, len(body), chunk):
        part = body[i : i + chunk]
        writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    try:
        return await reader.read()
    finally:
        await close(writer)


async def test_a_chunked_review_is_answered_and_an_oversized_one_refused(
    limited: Limited,
) -> None:
    """The API server sends Content-Length; anything else on the port may send chunks."""
    review = make_review(make_pod("nginx"))
    answer = await _chunked(limited, json.dumps(review).encode(), chunk=100)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert review["request"]["uid"].encode() in answer
    huge = b'{"pad":"' + b"x" * (server_module.MAX_BODY_BYTES + 1) + b'"}'
    answer = await _chunked(limited, huge)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
