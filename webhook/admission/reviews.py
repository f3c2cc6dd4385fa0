"""AdmissionReview ``admission.k8s.io/v1`` wire format: TypedDicts, decoding, responses.

Two error channels: a review that cannot be understood raises ``BadReview`` (the
server answers HTTP 400 with an AdmissionReview carrying the message); a policy
or credential outcome is an allowed/denied ``AdmissionResponse``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict

from webhook.admission import jsonio
from webhook.admission.memo import remember
from webhook.telemetry import redact
from webhook.telemetry.text import printable

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: The API server sends v1 (and v1beta1 when a webhook still lists it); the
#: response must carry the request's own apiVersion.
SUPPORTED_API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
#: Kubernetes truncates each admission warning to 120 characters and refuses newlines
#: (staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/mutating/dispatcher.go).
WARNING_MAX = 120
#: Values quoted back in an error message (and so in a log line) are cut to this length:
#: a 6 MB ``kind`` must not become a 6 MB log line or response.
QUOTE_MAX = 80
#: The deepest a Pod review legitimately nests is ~20 levels (review → request → object →
#: spec.volumes[].ephemeral.volumeClaimTemplate.spec.selector.matchExpressions[].values[],
#: and metadata.managedFields[].fieldsV1, which mirrors those paths). Anything much deeper
#: is hostile, and would overflow the recursion of the code that walks it.
MAX_DEPTH = 64
#: Values (objects, arrays, strings, numbers) one review may hold. A Pod is at most ~1.5 MiB
#: in etcd (``--max-request-bytes`` default, etcd docs "System limits"), so a real review
#: holds tens of thousands of values (a Pod with 5,000 env vars: ~15,000). Capping the count
#: bounds the memory a 7 MiB body of ``[{},{},…]`` would take once decoded (~150 MB; at
#: most ~30 MB under this cap, ~110 bytes per value).
MAX_VALUES = 250_000
#: The API server sends a UUID; an over-long uid is not echoed (it would be a large log field).
UID_MAX = 128
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    resource: GroupVersionResource
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    subResource: NotRequired[str]
    name: NotRequired[str]
    namespace: NotRequired[str]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    patchType: NotRequired[Literal["JSONPatch"]]
    patch: NotRequired[str]
    status: NotRequired[Status]
    warnings: NotRequired[list[str]]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: Literal["AdmissionReview"]
    request: NotRequired[AdmissionRequest]
    response: NotRequired[AdmissionResponse]


class BadReview(ValueError):
    """The body is not an AdmissionReview we can answer; becomes an HTTP 400."""

    def __init__(
        self, message: str, uid: str = "", api_version: str = API_VERSION, status: int = 400
    ) -> None:
        super().__init__(message)
        self.uid = uid
        self.api_version = api_version
        self.status = status
        """The HTTP status of the refusal: 400, or 405 for a method other than POST."""


def quote(value: object, limit: int = QUOTE_MAX) -> str:
    """``repr`` of a value from a request, cut to ``limit`` characters, safe for one log line."""
    if isinstance(value, str | int | float | bool) or value is None:
        # A 5,000-digit int cannot be repr'd (sys.int_info.str_digits_check_threshold).
        shown = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else "<int>"
    else:
        shown = f"<{type(value).__name__}>"
    return clip(shown, limit)


def clip(text: str, limit: int = QUOTE_MAX) -> str:
    """One printable line of at most ``limit`` characters: every unprintable character
    (line breaks, terminal control sequences, lone surrogates) as its escape."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_depth(doc: dict[str, Any]) -> None:
    """Refuse documents holding a value nested deeper than MAX_DEPTH (the document is 1).

    A level at a time over the containers only, so it cannot itself overflow the stack on
    the documents it refuses, and it skips the scalars a review is mostly made of. The
    value count needs no walk: ``estimate_values``, checked before decoding, is never below
    it. ``_shallow`` settles most reviews from their bytes first.
    """
    level: list[Any] = [doc]  # containers only, from here on
    for _ in range(MAX_DEPTH - 1):
        level = [
            child
            for value in level
            for child in (value.values() if type(value) is dict else value)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return
    if any(level):  # a non-empty container at MAX_DEPTH: its values are one level deeper
        raise BadReview(f"request body is nested deeper than {MAX_DEPTH} levels")


#: A JSON string (with escapes), for blanking strings out before counting separators.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def estimate_values(body: bytes | bytearray) -> int:
    """About how many values decoding ``body`` makes, counted without decoding it.

    Every value but the first of an array or object follows a ',', every key a ':', and
    every array or object opens with '[' or '{'. Strings are blanked first so separators
    inside them do not count (only when the raw count is over the limit: the blanking takes
    ~0.2 s for 7 MiB, the raw count ~10 ms).
    """
    raw = _separators(body) + 1
    if raw <= MAX_VALUES:
        return raw  # an upper bound, close enough for budgeting
    return _values_outside_strings(body)


def _values_outside_strings(body: bytes | bytearray) -> int:
    # Count only between strings, a gap at a time: a blanked copy of the body (re.sub)
    # would cost ~15x the body in transient memory, which a hostile client could repeat.
    values, last = 1, 0
    for match in _JSON_STRING.finditer(body):
        values += _separators(body[last : match.start()])
        last = match.end()
        if values > MAX_VALUES:
            break
    else:
        values += _separators(body[last:])
    return values


#: Keeps a body's quotes, brackets and separators, braces written as brackets (only the
#: nesting matters), and drops every other byte: one ``bytes.translate`` pass.
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{},:')
#: A shape longer than this is not kept for the depth check (the walk decides instead):
#: what is kept beside the body is not counted in the memory budget.
SHAPE_KEPT_MAX = 64 * 1024


class BodyScan(NamedTuple):
    """What one pass over a body's bytes tells before it is decoded."""

    values: int
    """``estimate_values(body)``."""
    shape: bytes | None
    """The body's brackets (braces as brackets), for ``_shallow``; None for a body with a
    backslash, a string holding a bracket, or a shape over SHAPE_KEPT_MAX."""


#: What the marks (quotes and brackets) of a body tell, by the marks: the pods of one
#: workload share them, so most reviews find theirs here. At most SCANNED_MARKS_MAX
#: entries, for marks of up to SCANNED_MARKS_BYTES_MAX bytes (2 MiB in all, with their
#: shapes); the oldest is forgotten first.
_SCANNED: dict[bytes, tuple[int, bytes | None]] = {}
SCANNED_MARKS_MAX = 128
SCANNED_MARKS_BYTES_MAX = 8 * 1024


def scan_body(body: bytes | bytearray) -> BodyScan:
    """The value estimate and the shape of ``body`` from one C pass over it (the estimate
    and the depth check each made their own before)."""
    structure = body.translate(_BRACES_AS_BRACKETS, _NOT_STRUCTURE)
    marks = bytes(structure.translate(None, b",:"))  # brackets and quotes (a bytearray's:
    # a body read in pieces; copied to be a key, a quarter of the structure's length)
    if len(marks) > SCANNED_MARKS_BYTES_MAX:
        quotes_and_closes, paired_shape = _read_marks(marks)
    else:
        known = _SCANNED.get(marks)
        if known is None:
            known = remember(_SCANNED, marks, _read_marks(marks), SCANNED_MARKS_MAX)
        quotes_and_closes, paired_shape = known
    # What is left besides quotes and closing brackets is the separators estimate_values
    # counts (',', ':', and '[' or '{').
    raw = len(structure) - quotes_and_closes + 1
    if raw > MAX_VALUES:
        return BodyScan(_values_outside_strings(body), None)
    # Without a backslash (memchr; escapes are rare in pod reviews) the quotes alternate,
    # opening and closing strings, and the marks' pairing (``_read_marks``) holds.
    return BodyScan(raw, paired_shape if b"\\" not in body else None)


def _read_marks(marks: bytes) -> tuple[int, bytes | None]:
    """From a body's quotes and brackets: how many quotes and closing brackets there are,
    and the shape (the brackets) when no string holds a bracket, assuming the body has no
    backslash (``scan_body`` checks).

    Counted from the left without overlaps, the ``""`` pairs cover every quote exactly
    when each string's two quotes are adjacent among the marks, so no string holds a
    bracket: the brackets left are the document's. A shape over SHAPE_KEPT_MAX is not kept.
    """
    quotes = marks.count(b'"')
    counted = quotes + marks.count(b"]")
    if 2 * marks.count(b'""') != quotes:
        return counted, None
    shape = marks.translate(None, b'"')
    return counted, shape if len(shape) <= SHAPE_KEPT_MAX else None


#: Shapes already settled, and how: the pods of one workload share one shape, so most
#: reviews find theirs here. At most SETTLED_SHAPES_MAX shapes of at most
#: SETTLED_SHAPE_BYTES_MAX bytes each (1 MiB in all); the oldest is forgotten first.
_SETTLED: dict[bytes, bool] = {}
SETTLED_SHAPES_MAX = 128
SETTLED_SHAPE_BYTES_MAX = 8 * 1024


def _shallow(shape: bytes | None) -> bool:
    """``_settle``, remembered for shapes of up to SETTLED_SHAPE_BYTES_MAX bytes."""
    if shape is None or len(shape) > SETTLED_SHAPE_BYTES_MAX:
        return _settle(shape)
    settled = _SETTLED.get(shape)
    if settled is None:
        settled = remember(_SETTLED, shape, _settle(shape), SETTLED_SHAPES_MAX)
    return settled


def _settle(shape: bytes | None) -> bool:
    """True when a document's containers provably nest at most MAX_DEPTH - 1 deep, so that
    no value is deeper than MAX_DEPTH; False when undecided (``_check_depth`` then walks the
    decoded document). ``shape`` is ``BodyScan.shape`` of a body that decoded as JSON.

    Without a backslash in the body, a string is a quote, characters that are not quotes, a
    quote. Of the quotes and brackets, every string becomes ``""`` if none holds a bracket,
    and only then are the brackets exactly the document's containers (``scan_body`` keeps a
    shape only then: a string holding a bracket leaves a quote that no adjacent quote
    pairs with). Each pass of taking out ``[]`` then removes the containers that hold no
    container, so the document is gone after as many passes as its containers nest deep.
    ~2.5x cheaper than the walk for the benchmark's review; the same refusals (unit tests
    compare the two on random documents).
    """
    if shape is None or b'"' in shape:
        return False
    for _ in range(MAX_DEPTH - 1):
        if not shape:
            return True
        shape = shape.replace(b"[]", b"")
    return not shape


#: UTF-8 lead bytes of a character Python stores in 4 bytes (beyond U+FFFF: F0-F4) and in
#: 2 bytes (U+0100-U+FFFF: C4-EF); each table deletes every other byte value, so one
#: ``bytes.translate`` pass in C leaves only the lead bytes it looks for.
_NOT_LEAD4 = bytes(range(0xF0)) + bytes(range(0xF5, 0x100))
_NOT_LEAD2 = bytes(range(0xC4)) + bytes(range(0xF0, 0x100))
#: The JSON escapes of such characters: the high surrogate of a pair (\uD800-\uDBFF),
#: and any code point above U+00FF. Searched apart from the lead bytes: a pattern that
#: starts with a literal is scanned for that literal first, ~50x faster than an
#: alternation with a byte class over a whole 10 KB review.
_ESCAPE4 = re.compile(rb"\\u[dD][89abAB]")
_ESCAPE2 = re.compile(rb"\\u(?!00)[0-9a-fA-F]{4}")


def decoded_string_bytes(body: bytes | bytearray) -> int:
    """An upper bound on what the strings of ``body`` take once decoded.

    CPython stores a string at 1, 2 or 4 bytes per character, the widest character of the
    string deciding (PEP 393): a long ASCII string that ends in one emoji takes four times
    its length. A string never has more characters than its JSON has bytes, so the body's
    length times the widest width present bounds them all. An ASCII body without escapes
    (nearly every review) is known in one C pass; otherwise a few more passes, none
    copying more than the non-ASCII bytes.
    """
    # A backslash first (memchr): a two-byte search over the body costs ~40x as much.
    escapes = b"\\" in body and b"\\u" in body
    if body.isascii() and not escapes:
        return len(body)
    if body.translate(None, _NOT_LEAD4) or (escapes and _ESCAPE4.search(body)):
        return 4 * len(body)
    if body.translate(None, _NOT_LEAD2) or (escapes and _ESCAPE2.search(body)):
        return 2 * len(body)
    return len(body)


def _separators(chunk: bytes | bytearray) -> int:
    # One pass in C (four bytes.count calls take twice as long); the copy it makes is
    # at most the chunk's size and lives for this call only.
    return len(chunk) - len(chunk.translate(None, b",:[{"))


def _loads(body: bytes | bytearray, values: int) -> object:
    if values > MAX_VALUES:
        raise BadReview(f"request body holds more than {MAX_VALUES} JSON values")
    try:
        return jsonio.loads(body)
    except (UnicodeDecodeError, jsonio.JSONDecodeError) as e:
        if "depth limit" in str(e):  # orjson stops at 1,024 levels
            raise BadReview(f"request body is nested deeper than {MAX_DEPTH} levels") from e
        raise BadReview(f"request body is not valid JSON: {clip(str(e))}") from e
    except RecursionError as e:
        raise BadReview(f"request body is nested deeper than {MAX_DEPTH} levels") from e
    except ValueError as e:  # e.g. an integer over Python's 4,300-digit conversion limit
        raise BadReview(f"request body has an unacceptable value: {clip(str(e))}") from e


def decode_review(
    body: bytes | bytearray, scan: BodyScan | None = None
) -> tuple[str, AdmissionRequest]:
    """Decode and check a request body; return (apiVersion, request) or raise BadReview.

    ``scan`` is ``scan_body(body)`` when the caller has already made it.
    """
    if not body.strip():
        raise BadReview("empty request body; expected an AdmissionReview")
    if scan is None:
        scan = scan_body(body)
    doc = _loads(body, scan.values)
    if not isinstance(doc, dict):
        raise BadReview("request body must be a JSON object (an AdmissionReview)")
    api_version = doc.get("apiVersion")
    echo = api_version if api_version in SUPPORTED_API_VERSIONS else API_VERSION
    request = doc.get("request")
    uid = request.get("uid", "") if isinstance(request, dict) else ""
    uid = uid if isinstance(uid, str) and len(uid) <= UID_MAX else ""
    try:
        if not _shallow(scan.shape):
            _check_depth(doc)
    except BadReview as e:
        raise BadReview(str(e), uid, echo) from None
    if doc.get("kind") != KIND:
        raise BadReview(f"kind is {quote(doc.get('kind'))}, expected {KIND!r}", uid, echo)
    if api_version not in SUPPORTED_API_VERSIONS:
        raise BadReview(
            f"apiVersion {quote(api_version)} is not supported; expected {API_VERSION}", uid, echo
        )
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request", uid, echo)
    if not uid:
        raise BadReview(f"request.uid is missing, empty or longer than {UID_MAX}", "", echo)
    problems = _request_problems(request)
    if problems:
        raise BadReview("; ".join(problems), uid, echo)
    return echo, request  # type: ignore[return-value]


def _request_problems(request: dict[str, Any]) -> list[str]:
    """Type errors in the fields the webhook reads, each with the path and what was expected."""
    problems = []
    for key in ("kind", "resource"):
        group = request.get(key)
        if not isinstance(group, dict):
            problems.append(f"request.{key} is missing or not an object")
            continue
        for value in group.values():  # a loop, not all() over a generator: on every review
            if not isinstance(value, str):
                problems.append(f"request.{key} has a value that is not a string")
                break
    if request.get("operation") not in OPERATIONS:
        problems.append(
            f"request.operation is {quote(request.get('operation'))}, "
            f"expected one of {', '.join(OPERATIONS)}"
        )
    for key in ("subResource", "name", "namespace"):
        if not isinstance(request.get(key, ""), str):
            problems.append(f"request.{key} is {quote(request.get(key))}, expected a string")
    if not isinstance(request.get("dryRun", False), bool):
        problems.append(f"request.dryRun is {quote(request.get('dryRun'))}, expected a boolean")
    obj = request.get("object")
    if obj is None:
        return problems
    if not isinstance(obj, dict):
        problems.append("request.object is not an object")
        return problems
    for key in ("metadata", "spec"):
        if not isinstance(obj.get(key, {}), dict):
            problems.append(f"request.object.{key} is {quote(obj.get(key))}, expected an object")
    return problems


def review(api_version: str, response: AdmissionResponse) -> AdmissionReview:
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def deny(uid: str, message: str, code: int = 403, reason: str = "Forbidden") -> AdmissionResponse:
    return {
        "uid": uid,
        "allowed": False,
        "status": {"code": code, "message": redact.scrub(message), "reason": reason},
    }


def bad_request(error: BadReview) -> AdmissionReview:
    """The 400 body: still an AdmissionReview, denying with the reason."""
    reason = "MethodNotAllowed" if error.status == 405 else "BadRequest"
    return review(error.api_version, deny(error.uid, str(error), code=error.status, reason=reason))


def clip_warning(text: str) -> str:
    """A warning as kubectl prints it to a terminal: scrubbed, one printable line, cut."""
    text = printable(" ".join(redact.scrub(text).split()))
    return text if len(text) <= WARNING_MAX else text[: WARNING_MAX - 1] + "…"
