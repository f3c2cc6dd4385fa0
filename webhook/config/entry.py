"""What every registry entry has, whatever its kind: a name, the hosts it serves, and
an identity to mint credentials as.

Each kind (``webhook.config.kinds``) declares its entry as a frozen dataclass deriving
from ``Entry`` and its auth settings as one dataclass per mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from webhook.config.hosts import HostRule


@dataclass(frozen=True)
class SecretRef:
    """A key of a Kubernetes Secret the webhook reads (never writes)."""

    name: str
    """Secret name. Required."""
    namespace: str = ""
    """Namespace. Default: the webhook's own namespace."""
    key: str = ""
    """Key inside the Secret; empty means the mode's documented default keys."""


class Auth(Protocol):
    """One auth mode of one kind: its class is the tag, its fields what the mode needs."""

    @property
    def mode(self) -> str:
        """The mode's name in the config file (``auth.mode``)."""
        ...

    @property
    def per_pod(self) -> bool:
        """Minted as each pod's own service account (``podServiceAccount``)."""
        ...

    def identity(self) -> str:
        """A stable, non-secret label of the identity (secret names derive from it)."""
        ...


class Entry:
    """What every kind of entry has (each kind's dataclass declares the fields)."""

    kind: ClassVar[str]
    """The config's ``kind:`` value; one row of ``webhook.config.kinds.KINDS`` per kind."""
    name: str
    """Unique, DNS-label-like name; appears in secret names, logs and metrics."""
    rule: HostRule
    """Which image hosts this entry serves (exact hosts and/or the kind's family)."""
    auth: Auth
    """How credentials are obtained."""
    prefetch: bool
    """Exchange the credential of each of ``rule.hosts`` when the webhook starts and again
    before it is due, so that no admission waits for the identity round trips (entries
    minted as the webhook's own identity only)."""

    @property
    def per_pod_identity(self) -> bool:
        return self.auth.per_pod

    def identity(self) -> str:
        return self.auth.identity()
