"""What is counted and clipped before a review is decoded or quoted."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import pytest

from webhook.admission.reviews import (
    MAX_DEPTH,
    MAX_VALUES,
    WARNING_MAX,
    BadReview,
    clip,
    clip_warning,
    decode_review,
    decoded_string_bytes,
    estimate_values,
    quote,
)


def values_in(doc: object) -> int:
    """Every value, plus every key: what decoding makes."""
    if isinstance(doc, dict):
        return 1 + sum(1 + values_in(v) for v in doc.values())
    if isinstance(doc, list):
        return 1 + sum(values_in(v) for v in doc)
    return 1


@pytest.mark.parametrize(
    "doc",
    [
        [1],
        [1, 2, 3],
        {"a": 1},
        {"a": [], "b": {}},
        [[1], [2, [3]]],
        {"a,b:c{[": "x,y:{[", "k": ['\\"', {"z": None}]},
    ],
    ids=["list", "three", "object", "empties", "nested", "separators-in-strings"],
)
def test_the_estimate_is_at_least_the_real_count(doc: object) -> None:
    body = json.dumps(doc).encode()
    assert estimate_values(body) >= values_in(doc)
    assert estimate_values(body) <= 2 * values_in(doc) + 1


def test_separators_inside_strings_are_not_counted_once_over_the_limit() -> None:
    body = json.dumps({"note": "a,b:c[d{" * (MAX_VALUES // 2)}).encode()
    assert estimate_values(body) == 3


def test_too_many_values_are_refused_before_decoding() -> None:
    body = b'{"kind":"AdmissionReview","x":[' + b"0," * MAX_VALUES + b"0]}"
    with pytest.raises(BadReview, match="more than 250000 JSON values"):
        decode_review(body)


def review_holding(value: object) -> bytes:
    """A valid review whose ``request.x`` (depth 3: review, request, x) is ``value``."""
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "x": value,
            },
        }
    ).encode()


def chain(levels: int, leaf: object, *, keyed: bool) -> object:
    """``leaf`` inside ``levels`` lists (or one-key objects)."""
    for _ in range(levels):
        leaf = {"k": leaf} if keyed else [leaf]
    return leaf


@pytest.mark.parametrize("keyed", [False, True], ids=["lists", "objects"])
@pytest.mark.parametrize(
    ("leaf", "leaf_depth"),
    [(1, 0), ("s", 0), ([], 0), ({}, 0), ([1], 1), ({"a": None}, 1)],
    ids=["number", "string", "empty-list", "empty-object", "list", "object"],
)
def test_values_at_the_depth_limit_are_accepted_and_one_deeper_refused(
    keyed: bool, leaf: object, leaf_depth: int
) -> None:
    # The deepest value of request.x sits at depth 3 + levels + leaf_depth.
    at_limit = MAX_DEPTH - 3 - leaf_depth
    decode_review(review_holding(chain(at_limit, leaf, keyed=keyed)))
    with pytest.raises(BadReview, match=f"nested deeper than {MAX_DEPTH} levels"):
        decode_review(review_holding(chain(at_limit + 1, leaf, keyed=keyed)))


def test_a_deep_branch_beside_shallow_ones_is_found() -> None:
    deep = chain(MAX_DEPTH, 1, keyed=False)
    wide = [{"a": [1, 2, {"b": "c"}]} for _ in range(50)]
    with pytest.raises(BadReview, match="nested deeper"):
        decode_review(review_holding({"wide": wide, "z": {"deep": deep}}))


def test_quote_clips_long_values_and_names_other_types() -> None:
    assert quote("K" * 10_000).endswith("…")
    assert len(quote("K" * 10_000)) == 80
    assert quote(10**5000) == "<int>"
    assert quote({"a": 1}) == "<dict>"
    assert quote("ok") == "'ok'"


def test_clip_keeps_one_line_and_no_lone_surrogates() -> None:
    text = clip("a\nb\rc\ud800d")
    assert "\n" not in text
    assert "\r" not in text
    text.encode("utf-8")


@pytest.mark.parametrize("clipper", [clip, clip_warning], ids=["clip", "clip_warning"])
def test_quoted_text_cannot_drive_a_terminal(clipper: Callable[[str], str]) -> None:
    """Messages and warnings quote text from requests and remote answers; a terminal shows
    them (kubectl, a log tail). Every unprintable character arrives as its escape."""
    hostile = "a\x1b[2Jb\x9b31mc\x07d\u2028e\x00f\ud800"
    text = clipper(hostile)
    assert text.isprintable(), text
    assert "\\x1b[2J" in text and "\\x9b" in text and "\\x07" in text and "\\x00" in text
    text.encode("utf-8")
    # Printable text, non-ASCII included, is kept as it is.
    assert clipper("image 'registry.example/équipe/app:1' — 日本") == (
        "image 'registry.example/équipe/app:1' — 日本"
    )


def test_clip_warning_stays_within_what_kubernetes_keeps() -> None:
    text = clip_warning("\x1b" * 500)
    assert len(text) == WARNING_MAX and text.endswith("…")


@pytest.mark.parametrize(
    ("text", "width"),
    [
        pytest.param("x" * 1000, 1, id="ascii"),
        pytest.param("x" * 1000 + "é", 1, id="latin-1"),
        pytest.param("x" * 1000 + "Ā", 2, id="bmp"),
        pytest.param("x" * 1000 + "😀", 4, id="astral"),
    ],
)
@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "utf-8"])
def test_decoded_string_bytes_bound_what_python_stores_the_strings_in(
    text: str, width: int, ensure_ascii: bool
) -> None:
    """PEP 393: a string is stored at the width of its widest character; one emoji at the
    end of a long string makes all of it 4 bytes a character, escaped or not."""
    body = json.dumps({"pad": text}, ensure_ascii=ensure_ascii).encode()
    bound = decoded_string_bytes(body)
    # Its characters as CPython stores them (the object's header is counted per value).
    assert sys.getsizeof(text) - sys.getsizeof(text[-1]) == width * (len(text) - 1)
    assert bound >= width * len(text)
    assert bound <= width * len(body)
