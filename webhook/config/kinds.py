"""The registry kinds: one row each, the only place a kind is registered.

A row says everything the rest of the webhook needs to know about a kind: its entry
type (whose ``kind`` tag is the config's ``kind:`` value and whose ``auth`` is one
dataclass per mode), the keys and parser of its entries in the config file, its family
of hosts (the anchored matching behind ``anyRegistry: true``), and the module of its
credential provider. Loading the config, matching hosts, ``explain``, ``validate``,
``doctor`` and the credential cache all read this table; nothing else lists the kinds.

The provider is named by its module, not imported: a kind's provider pulls in its cloud's
SDK (azure-identity, boto3, google-auth), which a replica loads only for the kinds its config uses
(``webhook.credentials.cache.import_providers``). Each provider module defines
``make(context) -> Provider[<its entry type>]``; the config layer never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from webhook.config import acr, ecr, gar, generic
from webhook.config.acr import AcrEntry
from webhook.config.ecr import EcrEntry
from webhook.config.entry import Entry
from webhook.config.gar import GarEntry
from webhook.config.generic import GenericEntry
from webhook.config.hosts import Family, HostRule
from webhook.config.reader import Reader

#: One configured registry entry (match on the class to narrow). A new kind's entry type
#: joins this union and gets a row in ``KINDS``.
RegistryEntry: TypeAlias = AcrEntry | EcrEntry | GarEntry | GenericEntry

E = TypeVar("E", bound=Entry)

#: Reads one entry of the kind (``registries[i]``, its host rule already read, None when
#: the hosts were unusable); None when it is unusable, with the problems recorded.
EntryParser: TypeAlias = Callable[[Reader, Mapping[str, Any], str, str, HostRule | None], E | None]
#: Reads the kind's family options (an ACR entry's ``suffixes``, an ECR entry's
#: ``accounts``) into the family ``anyRegistry: true`` covers.
FamilyParser: TypeAlias = Callable[[Reader, Mapping[str, Any], str], Family]


@dataclass(frozen=True)
class Kind(Generic[E]):
    """One registry kind."""

    entry: type[E]
    """The entry type; its ``kind`` class attribute is the config's ``kind:`` value."""
    keys: tuple[str, ...]
    """The keys of an entry of this kind besides ``name``, ``kind``, ``hosts``,
    ``anyRegistry`` and ``auth``."""
    parse: EntryParser[E]
    family: FamilyParser | None
    """None: the kind has no family of hosts (an entry must list its hosts)."""
    recognises: Callable[[str], bool]
    """Whether a host looks like one of this kind's (for ``explain``'s hints)."""
    example_host: str
    """A host of the family, as a placeholder in messages (``doctor``)."""
    provider: str
    """The module of the credential provider; it defines ``make(context)``."""

    @property
    def name(self) -> str:
        return self.entry.kind


KINDS: tuple[Kind[Any], ...] = (
    Kind(
        AcrEntry,
        keys=acr.KEYS,
        parse=acr.parse_entry,
        family=acr.parse_family,
        recognises=acr.recognises,
        example_host="REGISTRY.azurecr.io",
        provider="webhook.credentials.acr",
    ),
    Kind(
        EcrEntry,
        keys=ecr.KEYS,
        parse=ecr.parse_entry,
        family=ecr.parse_family,
        recognises=ecr.recognises,
        example_host="ACCOUNT.dkr.ecr.REGION.amazonaws.com",
        provider="webhook.credentials.ecr",
    ),
    Kind(
        GarEntry,
        keys=gar.KEYS,
        parse=gar.parse_entry,
        family=gar.parse_family,
        recognises=gar.recognises,
        example_host="LOCATION-docker.pkg.dev",
        provider="webhook.credentials.gar",
    ),
    Kind(
        GenericEntry,
        keys=generic.KEYS,
        parse=generic.parse_entry,
        family=None,
        recognises=generic.recognises,
        example_host="registry.example.com",
        provider="webhook.credentials.generic",
    ),
)


def names() -> list[str]:
    """Every kind's name, in the table's order."""
    return [kind.name for kind in KINDS]


def named(name: object) -> Kind[Any] | None:
    """The kind a config's ``kind:`` value names, or None (any value: it is unchecked)."""
    return next((kind for kind in KINDS if kind.name == name), None)


def kind_of(entry_type: type[E]) -> Kind[E]:
    """The row of an entry type."""
    for kind in KINDS:
        if kind.entry is entry_type:
            found: Kind[E] = kind
            return found
    raise LookupError(f"{entry_type.__name__} is not a registry kind's entry type")


def recognised_kind(host: str) -> str | None:
    """The kind whose family ``host`` looks like one of (for hints), or None."""
    return next((kind.name for kind in KINDS if kind.recognises(host)), None)
