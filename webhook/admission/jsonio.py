"""The JSON codec of the request path: bytes in, bytes out (orjson).

Decoding the review is the largest single cost of an admission answered from
memory: orjson decodes the benchmark's ~9 KB review in about a third of the time
``json`` takes (bench/README.md). One module, so the server, the response builders
and the benchmark's floor all use the same codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson

#: A subclass of ``json.JSONDecodeError`` (and ``ValueError``); invalid UTF-8 raises it too.
JSONDecodeError = orjson.JSONDecodeError


def loads(data: bytes | bytearray) -> Any:
    return orjson.loads(data)


def dumps(doc: Any) -> bytes:
    """Compact JSON (no spaces), as the API server itself writes it."""
    return orjson.dumps(doc)


def is_object(value: object) -> TypeGuard[Mapping[str, Any]]:
    """A JSON object: a dict (what ``loads`` gives) or another Mapping. ``type()`` first: a
    Mapping check goes through the ABC's ``__instancecheck__`` (a tenth of a microsecond,
    several times per container of every review)."""
    return type(value) is dict or isinstance(value, Mapping)
