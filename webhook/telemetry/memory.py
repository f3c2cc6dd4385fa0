"""Giving freed memory back to the system.

glibc keeps what a process frees in its heap for reuse. After a burst (a few hundred TLS
handshakes, a large review, the pages of a long LIST) that is megabytes the replica no
longer uses but still counts as resident, towards its memory limit. ``malloc_trim``
returns the free pages. Elsewhere (musl, macOS) there is nothing to call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (musl, macOS): nothing to trim there."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


MALLOC_TRIM = _load_malloc_trim()


def release_freed() -> None:
    """Return the heap's free pages to the system (milliseconds: it walks the heap)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)
