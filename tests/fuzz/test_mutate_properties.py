"""Property: whatever reaches /mutate, the answer is a 200 or a 4xx AdmissionReview.

Requests go through the real server (TLS, aiohttp's parser, the handler). Generated inputs
start from realistic pod reviews and mutate them: fields deleted, retyped or replaced by
hostile fragments (deep nesting, 5,000-digit numbers, long strings, lone surrogates), and
raw bodies with arbitrary bytes, content types, encodings and methods.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devenv.support.reviews import make_pod, make_review
from tests.fuzz.conftest import count
from tests.support.hostile import check_logs, check_reply
from tests.support.threaded import ThreadedServer
from webhook.admission import jsonio
from webhook.admission.reviews import UID_MAX

IMAGES = [
    "contoso.azurecr.io/app:1",
    "fabrikam.azurecr.io/team/api@sha256:" + "a" * 64,
    "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web:2",
    "registry.example.com:5000/tools/x",
    "nginx",
    "",
    "UPPER.example.com/x",
]

#: Raw JSON text a mutation may splice in where a value was.
HOSTILE_FRAGMENTS = [
    "9" * 5000,
    "-" + "1" * 4400,
    "1e999999",
    "[" * 70 + "]" * 70,
    "[" * 2000 + "]" * 2000,
    '{"a":' * 300 + "1" + "}" * 300,
    '"' + "x" * 300_000 + '"',
    '"\\ud800\\udfff\\ud800"',
    '"line\\nbreak\\r\\u0000"',
    "NaN",
    "-Infinity",
    "[" + ",".join(["{}"] * 5000) + "]",
]

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def base_review(images: list[str], pull_secrets: bool, sub: str | None, op: str) -> dict[str, Any]:
    pod = make_pod(
        *images,
        init_images=tuple(images[:1]),
        pull_secrets=[{"name": "mine"}] if pull_secrets else None,
        generate_name="web-",
    )
    # A deep copy: make_review shares its GVK dicts between reviews, and mutations must not
    # leak from one generated case into the next.
    return copy.deepcopy(make_review(pod, operation=op, sub_resource=sub, uid="fuzz-uid"))


def paths(doc: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside doc (not the root)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out.extend(paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_reviews(draw: st.DrawFn) -> bytes:
    doc = base_review(
        draw(st.lists(st.sampled_from(IMAGES), min_size=0, max_size=3)),
        draw(st.booleans()),
        draw(st.sampled_from([None, "ephemeralcontainers", "status"])),
        draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"])),
    )
    fragments: dict[str, str] = {}
    for n in range(draw(st.integers(min_value=1, max_value=3))):
        candidates = paths(doc)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "value", "fragment"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "value":
            parent[path[-1]] = draw(json_values)
        else:
            marker = f"@@fragment-{n}@@"
            fragments[json.dumps(marker)] = draw(st.sampled_from(HOSTILE_FRAGMENTS))
            parent[path[-1]] = marker
    text = json.dumps(doc)
    for marker, fragment in fragments.items():
        text = text.replace(marker, fragment)
    return text.encode("utf-8", "surrogatepass")


def readable_uid(body: bytes) -> str | None:
    """The uid the server must echo, or None when its JSON codec cannot read the body."""
    try:
        doc = jsonio.loads(body)
    except ValueError:
        return None
    request = doc.get("request") if isinstance(doc, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) and 0 < len(uid) <= UID_MAX else None


# A failing case with a 300 kB fragment is reported whole; hypothesis warns about its size.
@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@given(body=mutated_reviews())
def test_mutated_reviews_get_an_admission_review_with_the_uid(
    server: ThreadedServer, body: bytes
) -> None:
    count("mutated-review")
    server.log.records.clear()
    reply = server.post(body)
    doc = check_reply(reply, readable_uid(body))
    if reply.status == 200:
        assert doc["response"]["uid"] == readable_uid(body)
    check_logs(server.log.records)


content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "APPLICATION/JSON"]
)
encodings = st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-garbage"])
raw_bodies = st.binary(max_size=512) | st.text(max_size=256).map(
    lambda t: t.encode("utf-8", "surrogatepass")
)


@given(
    body=raw_bodies,
    content_type=content_types,
    encoding=encodings,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "OPTIONS"]),
)
def test_arbitrary_bodies_headers_and_methods_get_an_admission_review(
    server: ThreadedServer, body: bytes, content_type: str, encoding: str | None, method: str
) -> None:
    count("raw-request")
    server.log.records.clear()
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    check_reply(server.post(body, headers, method=method), None)
    check_logs(server.log.records)
