"""What the release ships, as tests look at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def images(obj: Any) -> Iterator[str]:
    """Every ``image:`` anywhere in an object (pods, templates, job templates, hooks)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "image" and isinstance(v, str):
                yield v
            else:
                yield from images(v)
    elif isinstance(obj, list):
        for item in obj:
            yield from images(item)
