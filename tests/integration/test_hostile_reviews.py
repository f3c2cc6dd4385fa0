"""Hostile /mutate requests get a 200 or a 4xx AdmissionReview: never a 5xx, never a traceback."""

from __future__ import annotations

import gzip
import json
import socket
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from devenv.support.reviews import make_pod, make_review
from tests.support.hostile import REFUSAL_MAX_BYTES, check_logs, check_reply
from tests.support.threaded import ThreadedServer, threaded_server
from webhook.admission.reviews import MAX_DEPTH, MAX_VALUES

ACR = "contoso.azurecr.io/app:1"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with threaded_server() as s:
        yield s


@pytest.fixture(autouse=True)
def clean_logs(server: ThreadedServer) -> Iterator[None]:
    server.log.records.clear()
    yield
    check_logs(server.log.records)


def review(uid: str = "hostile-uid", **request: Any) -> dict[str, Any]:
    doc = make_review(make_pod(ACR, generate_name="web-"), uid=uid)
    doc["request"].update(request)
    return doc


def post_json(server: ThreadedServer, doc: object) -> tuple[int, dict[str, Any]]:
    reply = server.post(json.dumps(doc).encode())
    return reply.status, check_reply(reply, None)


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 980, 100_000], ids=["limit+1", "980", "100k"])
def test_deeply_nested_json_is_a_400(server: ThreadedServer, depth: int) -> None:
    body = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"d",'
    body += b'"x":' + b"[" * depth + b"]" * depth + b"}}"
    reply = server.post(body)
    check_reply(reply, None)
    assert reply.status == 400
    assert "nested deeper" in reply.review()["response"]["status"]["message"]


def test_a_5000_digit_integer_is_a_400_that_echoes_the_uid(server: ThreadedServer) -> None:
    body = json.dumps(review()).encode()[:-2] + b',"huge":' + b"9" * 5000 + b"}}"
    reply = server.post(body)
    check_reply(reply, "hostile-uid" if reply.status == 200 else None)
    assert reply.status == 400


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param("gzip", b"\x1f\x8b garbage, not gzip", id="gzip-garbage"),
        pytest.param("deflate", b"garbage, not deflate", id="deflate-garbage"),
        pytest.param("gzip", gzip.compress(json.dumps(review()).encode()), id="gzip-valid"),
        pytest.param("deflate", zlib.compress(b"{}" * 10), id="deflate-valid"),
        pytest.param("br", b"anything", id="brotli"),
    ],
)
def test_a_content_encoding_is_refused_with_a_400(
    server: ThreadedServer, encoding: str, body: bytes
) -> None:
    reply = server.post(body, {"Content-Encoding": encoding})
    check_reply(reply, None)
    assert reply.status == 400
    assert "Content-Encoding" in reply.review()["response"]["status"]["message"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        pytest.param("subResource", 1, "request.subResource", id="subResource-int"),
        pytest.param("namespace", ["a"], "request.namespace", id="namespace-list"),
        pytest.param("name", {}, "request.name", id="name-object"),
        pytest.param("operation", "PATCH", "request.operation", id="operation-unknown"),
        pytest.param("dryRun", "yes", "request.dryRun", id="dryRun-string"),
        pytest.param("kind", {"kind": 5}, "request.kind", id="kind-int-value"),
        pytest.param("object", "x", "request.object", id="object-string"),
    ],
)
def test_wrongly_typed_request_fields_are_a_400_that_echoes_the_uid(
    server: ThreadedServer, field: str, value: object, message: str
) -> None:
    doc = review()
    doc["request"][field] = value
    status, doc = post_json(server, doc)
    assert status == 400
    assert doc["response"]["uid"] == "hostile-uid"
    assert message in doc["response"]["status"]["message"]


@pytest.mark.parametrize("field", ["metadata", "spec"])
def test_object_metadata_or_spec_that_is_not_an_object_is_a_400(
    server: ThreadedServer, field: str
) -> None:
    doc = review()
    doc["request"]["object"][field] = "x"
    status, body = post_json(server, doc)
    assert status == 400
    assert body["response"]["uid"] == "hostile-uid"
    assert f"request.object.{field}" in body["response"]["status"]["message"]


def test_image_pull_secrets_nested_500_deep_are_a_400(server: ThreadedServer) -> None:
    doc = review()
    doc["request"]["object"]["spec"]["imagePullSecrets"] = [{"name": nested(500)}]
    status, body = post_json(server, doc)
    assert status == 400
    assert body["response"]["uid"] == "hostile-uid"


@pytest.mark.parametrize("depth", [1, 20], ids=["flat", "20-deep"])
def test_odd_but_shallow_image_pull_secrets_are_answered_200(
    server: ThreadedServer, depth: int
) -> None:
    doc = review()
    doc["request"]["object"]["spec"]["imagePullSecrets"] = [
        {"name": nested(depth)},
        "not-an-object",
        {"name": 7},
    ]
    status, body = post_json(server, doc)
    assert status == 200
    assert body["response"]["allowed"] is True


def test_a_6_mb_kind_string_is_refused_without_echoing_it(server: ThreadedServer) -> None:
    doc = review()
    doc["kind"] = "K" * (6 * 1024 * 1024)
    reply = server.post(json.dumps(doc).encode())
    check_reply(reply, "hostile-uid")
    assert reply.status == 400
    assert len(reply.body) <= REFUSAL_MAX_BYTES
    # check_logs (autouse) holds every log line under 1 KiB


def test_a_huge_uid_is_not_echoed(server: ThreadedServer) -> None:
    status, body = post_json(server, review(uid="u" * 100_000))
    assert status == 400
    assert body["response"]["uid"] == ""


def test_a_huge_pod_name_and_namespace_do_not_reach_the_log_whole(server: ThreadedServer) -> None:
    doc = review()
    doc["request"]["object"]["metadata"]["name"] = "n" * 1_000_000
    status, _ = post_json(server, doc)
    assert status == 200


def test_too_many_values_is_a_400(server: ThreadedServer) -> None:
    doc = review()
    doc["request"]["object"]["spec"]["containers"] = [{}] * (MAX_VALUES + 1)
    status, body = post_json(server, doc)
    assert status == 400
    assert "JSON values" in body["response"]["status"]["message"]


def test_lone_surrogates_and_newlines_are_answered_and_logged_on_one_line(
    server: ThreadedServer,
) -> None:
    body = json.dumps(review(namespace="ns\ud800\nFAKE LOG LINE")).encode()
    reply = server.post(body)
    check_reply(reply, None)  # orjson refuses a lone surrogate: a 400 without a uid
    for record in server.log.records:
        assert "\n" not in record.getMessage()
        for value in getattr(record, "ctx", {}).values():
            assert "\n" not in value
            value.encode("utf-8")  # no lone surrogate left


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_get_a_405_admission_review(server: ThreadedServer, method: str) -> None:
    reply = server.post(json.dumps(review()).encode(), method=method)
    check_reply(reply, None)
    assert reply.status == 405


def test_nan_and_infinity_are_refused_cleanly(server: ThreadedServer) -> None:
    body = json.dumps(review(dryRun=False)).encode()[:-2] + b',"x":[NaN,Infinity,-1e999]}}'
    check_reply(server.post(body), None)  # not JSON (RFC 8259): refused


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"POST /mutate HTTP/1.1\r\nBad Header\r\n\r\n", id="bad-header"),
        pytest.param(
            b"POST /mutate HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", id="huge-header"
        ),
        pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
    ],
)
def test_malformed_http_is_a_400_without_a_traceback(server: ThreadedServer, raw: bytes) -> None:
    # The parser refuses these before any route: aiohttp's own 400 (text/plain). What is
    # checked here is the status and the log (one WARNING line, no traceback; autouse).
    with (
        socket.create_connection(("127.0.0.1", server.port)) as plain,
        server.context.wrap_socket(plain, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(raw)
        assert tls.recv(64).startswith(b"HTTP/1.0 400")
