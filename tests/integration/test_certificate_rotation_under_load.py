"""Rotating the serving pair (to a new CA the caBundle already trusts) while admissions
flow fails none of them: connections made before, during and after the swap all succeed."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiohttp

from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_options, write_serving_pair
from webhook.certs.pki import make_ca
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.server.app import NamesOnlySource, start_server

ADMISSIONS = 400
CONCURRENCY = 8
#: Workers pause this long between admissions so the run outlasts the certificate
#: watcher's 2 s poll by a few seconds (~5 s in all).
PAUSE = 0.1


async def test_no_admission_fails_while_the_pair_and_ca_rotate(
    config: Config, tmp_path: Path
) -> None:
    old_ca, new_ca = make_ca("old-ca"), make_ca("new-ca")
    write_serving_pair(old_ca, tmp_path)
    server = await start_server(
        ConfigStore(config),
        NamesOnlySource(),
        loopback_options(tmp_path),
    )
    # The caBundle during a CA rotation trusts both (what `webhook certs` publishes first).
    ctx = ssl.create_default_context(cadata=(old_ca.cert_pem + new_ca.cert_pem).decode())
    body = json.dumps(make_review(make_pod("contoso.azurecr.io/app:1"))).encode()
    statuses: list[int] = []
    issuers: set[str] = set()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(ADMISSIONS):
        queue.put_nowait(i)

    async def worker() -> None:
        # A new connection for every admission, as after the API server's idle timeout.
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not queue.empty():
                i = queue.get_nowait()
                if i == ADMISSIONS // 3:
                    write_serving_pair(new_ca, tmp_path)
                async with session.post(
                    f"https://127.0.0.1:{server.port}/mutate",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    statuses.append(resp.status)
                await asyncio.sleep(PAUSE)

    async def issuer_watch(done: asyncio.Event) -> None:
        """Which CA signed the certificate served, sampled through the run."""
        while not done.is_set():
            _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
            cert = writer.get_extra_info("peercert")
            issuers.add(str(dict(x[0] for x in cert["issuer"])["commonName"]))
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.2)

    done = asyncio.Event()
    watch = asyncio.create_task(issuer_watch(done))
    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        done.set()
        await watch
        await server.stop()
    assert statuses == [200] * ADMISSIONS
    assert issuers == {"old-ca", "new-ca"}  # the rotation really happened mid-stream
