"""The depth check from a body's bytes (``scan_body`` + ``_shallow``) refuses exactly what the
walk of the decoded document refuses, and the scan's value estimate is ``estimate_values``'s."""

from __future__ import annotations

import json
import random

import pytest

from devenv.support.reviews import make_pod, make_review
from webhook.admission import jsonio, reviews
from webhook.admission.reviews import (
    MAX_DEPTH,
    SCANNED_MARKS_BYTES_MAX,
    SCANNED_MARKS_MAX,
    SETTLED_SHAPE_BYTES_MAX,
    SETTLED_SHAPES_MAX,
    SHAPE_KEPT_MAX,
    BadReview,
    _check_depth,
    _settle,
    _shallow,
    decode_review,
    estimate_values,
    scan_body,
)

#: Strings that hold what the shape is made of: brackets, braces, quotes, backslashes.
AWKWARD = ["", "a", "[", "]", "{", "}", '"', "\\", "x]y", "[[", "]]}", '"]', "é", "\u2028", "😀"]


def _random_value(rnd: random.Random, depth: int, deepest: int) -> object:
    if depth >= deepest or rnd.random() < 0.2:
        return rnd.choice([1, None, True, 2.5, rnd.choice(AWKWARD), [], {}])
    if rnd.random() < 0.5:
        return [_random_value(rnd, depth + 1, deepest) for _ in range(rnd.randint(0, 2))]
    return {
        rnd.choice(AWKWARD) + str(i): _random_value(rnd, depth + 1, deepest)
        for i in range(rnd.randint(0, 2))
    }


def _chain(levels: int, leaf: object, *, keyed: bool) -> object:
    for _ in range(levels):
        leaf = {"k": leaf} if keyed else [leaf]
    return leaf


def _documents() -> list[dict[str, object]]:
    rnd = random.Random(24)
    docs: list[dict[str, object]] = [
        {"r": _random_value(rnd, 2, rnd.choice([5, 20, 62, 63, 64, 65, 66, 80]))}
        for _ in range(1500)
    ]
    for levels in range(MAX_DEPTH - 6, MAX_DEPTH + 6):
        for leaf in (1, "s", [], {}, [1], {"a": None}, "]]]", "[[["):
            for keyed in (False, True):
                chain = _chain(levels, leaf, keyed=keyed)
                docs += [{"x": chain}, {"s": "]" * 70, "x": chain}, {"s": "[" * 70, "x": chain}]
    return docs


def _walk_refuses(doc: dict[str, object]) -> bool:
    try:
        _check_depth(doc)
    except BadReview:
        return True
    return False


def _shape_by_pairs(body: bytes) -> bytes | None:
    """The shape as first computed: every ``""`` taken out of the quotes and brackets, and
    kept only if no quote is left (a string held a bracket otherwise)."""
    if b"\\" in body:
        return None
    marks = bytes(c for c in body.translate(bytes.maketrans(b"{}", b"[]")) if c in b'"[]')
    shape = marks.replace(b'""', b"")
    return None if b'"' in shape or len(shape) > SHAPE_KEPT_MAX else shape


def test_the_shape_is_the_one_found_by_taking_out_pairs_of_quotes() -> None:
    kept = 0
    for doc in _documents():
        for ensure_ascii in (True, False):
            body = json.dumps(doc, ensure_ascii=ensure_ascii).encode()
            shape = scan_body(body).shape
            assert shape == _shape_by_pairs(body), body[:200]
            kept += shape is not None
    assert kept > 1_000  # and many with a bracket in a string, or a backslash, are not


def test_the_shape_refuses_exactly_what_the_walk_refuses() -> None:
    decided = refused = 0
    for doc in _documents():
        for ensure_ascii in (True, False):
            for indent in (None, 1):
                body = json.dumps(doc, ensure_ascii=ensure_ascii, indent=indent).encode()
                decoded = jsonio.loads(body)
                scan = scan_body(body)
                assert scan.values == estimate_values(body)
                walk_refuses = _walk_refuses(decoded)
                if _shallow(scan.shape):
                    decided += 1
                    assert not walk_refuses, body[:200]
                refused += walk_refuses
    # Both sides are exercised: many documents settled from the bytes, many refused.
    assert decided > 1_000
    assert refused > 100


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps({"a": "x\\"}).encode(), id="backslash"),
        pytest.param(json.dumps({"a": "]"}).encode(), id="bracket-in-a-string"),
        pytest.param(json.dumps({"a": [[]] * (SHAPE_KEPT_MAX // 2)}).encode(), id="large-shape"),
    ],
)
def test_the_walk_decides_what_the_shape_cannot(body: bytes) -> None:
    assert not _shallow(scan_body(body).shape)


def test_a_review_decoded_with_its_scan_is_the_review_decoded_alone() -> None:
    review = make_review(make_pod("x"))
    body = json.dumps(review).encode()
    assert decode_review(body, scan_body(body)) == decode_review(body)
    deep = json.dumps({**review, "x": _chain(MAX_DEPTH, 1, keyed=False)}).encode()
    with pytest.raises(BadReview, match="nested deeper"):
        decode_review(deep, scan_body(deep))


def test_a_remembered_shape_is_settled_as_it_was_the_first_time() -> None:
    """Shapes are remembered (the pods of one workload share one): a shape the first review
    settled, or left to the walk, is answered the same when it comes again; at most
    SETTLED_SHAPES_MAX of them, none longer than SETTLED_SHAPE_BYTES_MAX, oldest first out."""
    reviews._SETTLED.clear()
    shallow = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    for _ in range(2):
        assert _shallow(shallow) is True
        assert _shallow(deep) is False
    assert dict(reviews._SETTLED) == {shallow: True, deep: False}
    # A walk, not the memo, decides an open shape, whatever was settled before.
    assert _shallow(None) is False
    long = b"[]" * (SETTLED_SHAPE_BYTES_MAX // 2 + 1)
    assert _shallow(long) is _settle(long) is True
    assert long not in reviews._SETTLED
    for i in range(SETTLED_SHAPES_MAX):
        _shallow(b"[]" * (i + 1) + b"[[]]")
    assert len(reviews._SETTLED) == SETTLED_SHAPES_MAX
    assert shallow not in reviews._SETTLED and deep not in reviews._SETTLED
    reviews._SETTLED.clear()


def test_a_remembered_scan_is_the_scan_made_afresh() -> None:
    """The marks of a body (its quotes and brackets) are remembered with what they tell:
    a body whose marks came before gets the scan it would get alone, its own backslash
    and value count included, read as bytes or as a bytearray; bounded, oldest first out."""
    reviews._SCANNED.clear()
    plain = json.dumps({"a": ["b", {"c": "d,e:f"}]}).encode()
    escaped = json.dumps({"a": ["b\\x", {"c": "d"}]}).encode()  # the same marks
    alone = {}
    for body in (plain, escaped):
        reviews._SCANNED.clear()
        alone[body] = scan_body(body)
    assert alone[plain].shape is not None and alone[escaped].shape is None
    assert alone[plain].values != alone[escaped].values  # "d,e:f" counts, wrongly but safely
    for order in ((plain, escaped), (escaped, plain)):
        reviews._SCANNED.clear()
        for body in (*order, *order):
            assert scan_body(body) == alone[body]
            assert scan_body(bytearray(body)) == alone[body]
        assert len(reviews._SCANNED) == 1
    long = json.dumps([[]] * (SCANNED_MARKS_BYTES_MAX // 2)).encode()
    assert scan_body(long).values == estimate_values(long)
    assert len(reviews._SCANNED) == 1  # marks over the limit are not kept
    for i in range(SCANNED_MARKS_MAX):
        scan_body(json.dumps([[]] * (i + 1)).encode())
    assert len(reviews._SCANNED) == SCANNED_MARKS_MAX
    reviews._SCANNED.clear()
