"""Anchored host rules: which image hosts a configured entry serves.

Every rule compares the whole host (``host[:port]``, lower-cased) with exact hosts or an
anchored pattern of its kind's family, so ``x.azurecr.io.evil.com`` or
``evil.com/x.azurecr.io/app`` can never match an Azure or AWS entry. The families
themselves (which hosts are any ACR login server, any ECR registry) belong to their kinds:
``webhook.config.acr``, ``webhook.config.ecr``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

_HOST_RE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:]+\])(?::\d{1,5})?$"
)


def valid_host(host: str) -> bool:
    """A lower-case ``host[:port]`` as it appears in an image reference."""
    return bool(_HOST_RE.match(host)) and len(host) <= 253


class Family(Protocol):
    """A kind's whole family of hosts (``anyRegistry: true``), matched anchored."""

    def matches(self, host: str) -> bool:
        """Whether ``host`` (lower-case) is one of the family."""
        ...

    def describe(self) -> str:
        """The family in a few words, for ``explain``."""
        ...

    def why_not(self, host: str) -> str | None:
        """Why a host that looks like one of the family's is not covered (a setting of the
        entry narrows it), or None."""
        ...


@dataclass(frozen=True)
class HostRule:
    """Which hosts an entry covers: exact hosts, and/or its kind's whole family."""

    hosts: frozenset[str] = frozenset()
    """Exact hosts (``host[:port]``, lower-case)."""
    family: Family | None = None
    """Also cover any host of the kind's family (any ACR login server / any ECR host)."""

    def matches(self, host: str) -> bool:
        host = host.lower()
        if host in self.hosts:
            return True
        return self.family is not None and self.family.matches(host)

    def describe(self) -> str:
        parts = sorted(self.hosts)
        if self.family is not None:
            parts.append(self.family.describe())
        return ", ".join(parts)
