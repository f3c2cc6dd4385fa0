"""The ``generic`` kind's config: any registry, with static credentials from a Secret.
It has no family of hosts: an entry lists the hosts it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from webhook.config.entry import Entry, SecretRef
from webhook.config.hosts import HostRule
from webhook.config.reader import Reader


def recognises(host: str) -> bool:
    """Any host can be a generic registry: none looks like one in particular."""
    return False


@dataclass(frozen=True)
class SecretCredentials:
    """Static credentials read from a Secret (the only mode)."""

    secret: SecretRef
    """Secret with ``username`` and ``password`` keys, or a ``.dockerconfigjson``."""
    mode: ClassVar[str] = "secret"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return f"secret:{self.secret.namespace}/{self.secret.name}"


@dataclass(frozen=True)
class GenericEntry(Entry):
    """Any registry, with static credentials from a Secret."""

    kind: ClassVar[str] = "generic"
    name: str
    rule: HostRule
    auth: SecretCredentials
    prefetch: bool = True
    """Exchange this entry's credential ahead of need (``prefetch``). Default true."""


#: The keys a ``generic`` entry has besides the common ones.
KEYS: tuple[str, ...] = ()


def parse_entry(
    r: Reader, m: Mapping[str, Any], where: str, name: str, rule: HostRule | None
) -> GenericEntry | None:
    auth = r.mapping(m.get("auth", {}), f"{where}.auth")
    r.unknown(auth, f"{where}.auth", ("secretRef",))
    ref = r.secret_ref(auth, "secretRef", f"{where}.auth")
    if ref is None:
        r.bad(f"{where}.auth.secretRef", None, "a Secret reference with username/password")
        return None
    if rule is None:
        return None
    return GenericEntry(name=name, rule=rule, auth=SecretCredentials(ref))
