"""The JSON codec of the request path: bytes in, bytes out.

One place to choose the library, so the server, the response builders and the
benchmark's floor all use the same one.
"""

from __future__ import annotations

import json
from typing import Any

JSONDecodeError = json.JSONDecodeError


def loads(data: bytes) -> Any:
    return json.loads(data)


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
