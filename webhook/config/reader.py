"""Reading a decoded config document field by field, collecting every problem.

Each problem names the key, the value found and what was expected; reading goes on
after one, so a broken file is reported whole (``webhook.config.load``). The registry
kinds' parsers (``webhook.config.acr``, ``ecr``, ``generic``) read their entries with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from webhook.config.entry import SecretRef

#: A Kubernetes object name (DNS subdomain).
K8S_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
#: An entry name or secret prefix: a short DNS label (it becomes part of secret names).
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


class Reader:
    """Typed getters over a document that may hold anything; ``problems`` collects what
    was wrong."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.namespace = "pull-secret-webhook"
        """The webhook's own namespace: a SecretRef without one points there."""

    def bad(self, key: str, value: Any, expected: str) -> None:
        try:
            shown = repr(value)
        except ValueError:  # an int past Python's 4,300-digit str() limit
            shown = f"<{type(value).__name__}>"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        self.problems.append(f"{key}: got {shown}, expected {expected}")

    def mapping(self, data: Any, key: str) -> Mapping[str, Any]:
        if isinstance(data, Mapping):
            return data
        self.bad(key, data, "a mapping")
        return {}

    def unknown(self, data: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
        for k in data:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                self.bad(where, data[k], f"no such key (known: {', '.join(allowed)})")

    def string(self, data: Mapping[str, Any], key: str, prefix: str, default: str = "") -> str:
        value = data.get(key, default)
        if isinstance(value, str):
            return value
        self.bad(f"{prefix}.{key}" if prefix else key, value, "a string")
        return default

    def number(
        self, data: Mapping[str, Any], key: str, prefix: str, default: float, lo: float, hi: float
    ) -> float:
        value = data.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not lo <= value <= hi  # before isfinite: a huge int overflows float()
            or not math.isfinite(value)
        ):
            self.bad(f"{prefix}.{key}", value, f"a number from {lo:g} to {hi:g}")
            return default
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value
        self.bad(f"{prefix}.{key}", value, "true or false")
        return default

    def string_list(self, data: Mapping[str, Any], key: str, prefix: str) -> list[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.bad(f"{prefix}.{key}", value, "a list of strings")
            return []
        return list(value)

    def secret_ref(self, data: Mapping[str, Any], key: str, prefix: str) -> SecretRef | None:
        if key not in data:
            return None
        ref = self.mapping(data[key], f"{prefix}.{key}")
        where = f"{prefix}.{key}"
        self.unknown(ref, where, ("name", "namespace", "key"))
        name = self.string(ref, "name", where)
        if not K8S_NAME_RE.match(name):
            self.bad(f"{where}.name", name, "a Kubernetes object name")
        namespace = self.string(ref, "namespace", where)
        if namespace and not NAME_RE.match(namespace) and not K8S_NAME_RE.match(namespace):
            self.bad(f"{where}.namespace", namespace, "a namespace name")
        return SecretRef(
            name=name, namespace=namespace or self.namespace, key=self.string(ref, "key", where)
        )

    def port_in_range(self, key: str, value: str) -> None:
        """``host:port`` or a URL's port must be 1-65535 (valid_host checks only digits)."""
        match = re.search(r":(\d+)(?:/|$)", value.split("://", 1)[-1])
        if match and not 1 <= int(match.group(1)[:6]) <= 65535:
            self.bad(key, value, "a port from 1 to 65535")
