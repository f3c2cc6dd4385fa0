"""The real server over TLS on loopback: reviews in, AdmissionReviews out, on every path."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devenv.support.reviews import make_pod, make_review
from devenv.support.serving import loopback_options
from webhook.admission.decision import Outcome, SecretSource
from webhook.admission.needs import PullNeed
from webhook.certs.pki import KeyPair, make_ca, make_serving_cert
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.server.app import (
    MAX_BODY_BYTES,
    NamesOnlySource,
    RunningServer,
    start_server,
)

ACR = "contoso.azurecr.io/app:1"


@dataclass
class Served:
    server: RunningServer
    session: aiohttp.ClientSession
    ca: KeyPair
    cert_dir: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/mutate"

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.server.health_port}"

    async def post(self, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
        async with self.session.post(
            self.url, data=body, headers={"Content-Type": content_type}
        ) as resp:
            return resp.status, await resp.json(content_type=None)


def write_pair(ca: KeyPair, cert_dir: Path) -> KeyPair:
    pair = make_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    pair.write(cert_dir / "tls.crt", cert_dir / "tls.key")
    return pair


@pytest.fixture
def source() -> SecretSource:
    return NamesOnlySource()


@pytest.fixture
async def served(config: Config, tmp_path: Path, source: SecretSource) -> AsyncIterator[Served]:
    ca = make_ca()
    write_pair(ca, tmp_path)
    server = await start_server(
        ConfigStore(config),
        source,
        loopback_options(tmp_path),
    )
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True))
    try:
        yield Served(server, session, ca, tmp_path)
    finally:
        await session.close()
        await server.stop()


async def test_pod_review_gets_a_jsonpatch_and_echoes_uid_and_api_version(
    served: Served,
) -> None:
    review = make_review(make_pod(ACR, generate_name="web-"), uid="3b1c-uid")
    status, body = await served.post(json.dumps(review).encode())
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == "3b1c-uid"
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    assert ops[0]["op"] == "add"
    assert ops[0]["path"] == "/spec/imagePullSecrets"
    assert ops[0]["value"][0]["name"].startswith("psw-contoso-azurecr-io-")


async def test_v1beta1_request_is_answered_in_v1beta1(served: Served) -> None:
    review = make_review(make_pod("nginx"), api_version="admission.k8s.io/v1beta1")
    status, body = await served.post(json.dumps(review).encode())
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"
    assert "patch" not in body["response"]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        pytest.param(b"", "application/json", "empty request body", id="empty"),
        pytest.param(b"{not json", "application/json", "not valid JSON", id="not-json"),
        pytest.param(b"[1, 2]", "application/json", "JSON object", id="json-array"),
        pytest.param(
            b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
            "application/json",
            "no request",
            id="missing-request",
        ),
        pytest.param(
            b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
            b'"request":{"kind":{},"resource":{},"operation":"CREATE"}}',
            "application/json",
            "request.uid",
            id="missing-uid",
        ),
        pytest.param(
            b'{"apiVersion":"v1","kind":"Pod","request":{"uid":"u1"}}',
            "application/json",
            "kind is 'Pod'",
            id="wrong-kind",
        ),
        pytest.param(
            b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1"}}',
            "application/json",
            "request.kind",
            id="incomplete-request",
        ),
        pytest.param(b"{}", "text/plain", "Content-Type", id="wrong-content-type"),
        pytest.param(b"\xff\xfe\x00", "application/json", "not valid JSON", id="binary"),
    ],
)
async def test_malformed_input_is_a_400_that_is_still_an_admission_review(
    served: Served, body: bytes, content_type: str, message: str
) -> None:
    status, doc = await served.post(body, content_type)
    assert status == 400
    assert doc["kind"] == "AdmissionReview"
    assert doc["response"]["allowed"] is False
    assert doc["response"]["status"]["code"] == 400
    assert message in doc["response"]["status"]["message"]


async def test_uid_is_echoed_even_on_a_400(served: Served) -> None:
    doc = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "keep-me", "operation": "CREATE"},
    }
    status, body = await served.post(json.dumps(doc).encode())
    assert status == 400
    assert body["response"]["uid"] == "keep-me"


# aiohttp's client warns that a multi-megabyte bytes body is sent in one piece: intended here.
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
async def test_body_over_the_limit_is_a_400(served: Served) -> None:
    review = make_review(make_pod(ACR))
    review["request"]["object"]["metadata"]["annotations"] = {"big": "x" * MAX_BODY_BYTES}
    status, body = await served.post(json.dumps(review).encode())
    assert status == 400
    assert "exceeds the limit" in body["response"]["status"]["message"]


async def test_health_readiness_and_metrics_are_served_on_the_plain_port(served: Served) -> None:
    await served.post(json.dumps(make_review(make_pod(ACR))).encode())
    await served.post(b"nope")
    async with aiohttp.ClientSession() as plain:
        async with plain.get(served.health + "/healthz") as r:
            assert (r.status, await r.text()) == (200, "ok")
        async with plain.get(served.health + "/readyz") as r:
            assert r.status == 200
        async with plain.get(served.health + "/metrics") as r:
            text = await r.text()
    assert 'pull_secret_webhook_admissions_total{result="patched"} 1.0' in text
    assert 'pull_secret_webhook_admissions_total{result="bad_request"} 1.0' in text
    assert "pull_secret_webhook_admission_duration_seconds_bucket" in text


async def test_readiness_fails_while_shutting_down(served: Served) -> None:
    served.server.state.shutting_down = True
    async with aiohttp.ClientSession() as plain, plain.get(served.health + "/readyz") as r:
        assert r.status == 503
        assert "shutting down" in await r.text()


async def test_rotated_certificate_is_served_without_a_restart(served: Served) -> None:
    new_ca = make_ca("rotated-ca")
    write_pair(new_ca, served.cert_dir)
    assert served.server.tls.reload()
    ctx = ssl.create_default_context(cadata=new_ca.cert_pem.decode())
    connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as fresh:
        review = json.dumps(make_review(make_pod("nginx"))).encode()
        async with fresh.post(
            served.url, data=review, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 200
    # The old CA no longer verifies the server.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await served.post(review)


async def test_certificate_watcher_picks_up_new_files(served: Served) -> None:
    before = served.server.tls._fingerprint
    write_pair(served.ca, served.cert_dir)
    for _ in range(50):  # the watcher polls every 2 s; give it up to 5 s
        if served.server.tls._fingerprint != before:
            break
        await asyncio.sleep(0.1)
    assert served.server.tls._fingerprint != before


async def test_half_written_rotation_keeps_the_old_certificate(served: Served) -> None:
    (served.cert_dir / "tls.key").write_bytes(make_ca().key_pem)  # key no longer matches
    with pytest.raises(ssl.SSLError):
        served.server.tls.reload()
    status, _ = await served.post(json.dumps(make_review(make_pod("nginx"))).encode())
    assert status == 200


class SlowSource(NamesOnlySource):
    async def ensure(
        self, namespace: str, needs: Sequence[PullNeed], *, budget: float, dry_run: bool
    ) -> Outcome:
        await asyncio.sleep(0.5)
        return await super().ensure(namespace, needs, budget=budget, dry_run=dry_run)


@pytest.mark.parametrize("source", [SlowSource()], ids=["slow-source"])
async def test_in_flight_admission_finishes_during_shutdown(served: Served) -> None:
    pending = asyncio.create_task(served.post(json.dumps(make_review(make_pod(ACR))).encode()))
    await asyncio.sleep(0.1)
    stopping = asyncio.create_task(served.server.stop())
    status, body = await pending
    await stopping
    assert status == 200
    assert body["response"]["allowed"] is True


async def _raw_exchange(served: Served, parts: Sequence[bytes], pause: float) -> bytes:
    """Send ``parts`` on one TLS connection, ``pause`` seconds apart; return the whole reply."""
    ctx = ssl.create_default_context(cadata=served.ca.cert_pem.decode())
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port, ssl=ctx)
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def _head(length: int) -> bytes:
    return (
        f"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


async def test_body_arriving_in_pieces_after_the_headers_is_read_whole(served: Served) -> None:
    body = json.dumps(make_review(make_pod(ACR))).encode()
    reply = await _raw_exchange(served, [_head(len(body)) + body[:100], body[100:]], pause=0.2)
    status, _, payload = reply.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200")
    assert json.loads(payload)["response"]["patchType"] == "JSONPatch"


async def test_no_tls_session_ticket_is_issued(served: Served) -> None:
    """The API server never resumes sessions, so none are minted for it (tlsreload.py)."""
    ctx = ssl.create_default_context(cadata=served.ca.cert_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # tickets arrive after the handshake
    body = json.dumps(make_review(make_pod(ACR))).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.server.port, ssl=ctx)
    try:
        writer.write(_head(len(body)) + body)
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), timeout=10)).startswith(b"HTTP/1.1 200")
        session = writer.get_extra_info("ssl_object").session
        assert session is not None
        assert not session.has_ticket
    finally:
        writer.close()
