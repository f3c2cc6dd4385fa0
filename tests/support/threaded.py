"""The real webhook server on loopback TLS, run on its own event loop in a thread.

Property-based tests (hypothesis drives plain functions) post to it with a blocking
keep-alive client, so thousands of generated requests go through the real transport:
TLS, aiohttp's HTTP parser, the handler and the response encoder.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import ssl
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv.support.configs import sample_config
from webhook.certs.pki import make_ca, make_serving_cert
from webhook.config.store import ConfigStore
from webhook.server.app import NamesOnlySource, RunningServer, ServeOptions, start_server
from webhook.telemetry.logs import _ContextFilter


class RecordingHandler(logging.Handler):
    """Keeps every record logged while the server runs (thread-safe by logging's lock)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(_ContextFilter())  # records carry uid/namespace/pod as in production
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def review(self) -> Any:
        return json.loads(self.body)


@dataclass
class ThreadedServer:
    port: int
    context: ssl.SSLContext
    log: RecordingHandler
    _conn: http.client.HTTPSConnection | None = field(default=None, repr=False)

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self.context, timeout=30
            )
        return self._conn

    def post(
        self,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        path: str = "/mutate",
    ) -> Reply:
        """Send one request on the kept-alive connection (reconnecting once if it was closed)."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=sent)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException, ssl.SSLError):
                self.close_client()
                if attempt == 2:
                    raise
                continue
            if resp.will_close:
                self.close_client()
            return Reply(resp.status, data, dict(resp.getheaders()))
        raise AssertionError("unreachable")

    def close_client(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def threaded_server() -> Iterator[ThreadedServer]:
    """Start the webhook (names-only source, the sample config) and yield a client for it."""
    ca = make_ca()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    holder: dict[str, RunningServer] = {}
    recorder = RecordingHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)

    with tempfile.TemporaryDirectory() as tmp:
        pair = make_serving_cert(ca, ["localhost"], ["127.0.0.1"])
        pair.write(Path(tmp) / "tls.crt", Path(tmp) / "tls.key")
        options = ServeOptions(
            cert_file=str(Path(tmp) / "tls.crt"),
            key_file=str(Path(tmp) / "tls.key"),
            host="127.0.0.1",
            port=0,
            health_host="127.0.0.1",
            health_port=0,
        )

        async def main() -> None:
            try:
                holder["server"] = await start_server(
                    ConfigStore(sample_config()), NamesOnlySource(), options
                )
            finally:
                started.set()
            await stop.wait()
            await holder["server"].stop()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        if not started.wait(30) or "server" not in holder:
            raise RuntimeError("the webhook server did not start (see the thread's exception)")
        ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
        client = ThreadedServer(holder["server"].port, ctx, recorder)
        try:
            yield client
        finally:
            client.close_client()
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            loop.close()
            root.removeHandler(recorder)
            root.setLevel(old_level)
