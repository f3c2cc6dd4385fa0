"""Registry kinds and anchored host rules: which configured entry serves an image host.

Every rule compares the whole host (``host[:port]``, lower-cased) with an
anchored pattern, so ``x.azurecr.io.evil.com`` or ``evil.com/x.azurecr.io/app``
can never match an Azure or AWS entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: ACR login-server suffixes of the public and sovereign clouds in service (Azure public,
#: China, US Government). Microsoft Cloud Deutschland (azurecr.de) closed in 2021; an
#: entry's ``suffixes`` adds it, or a private cloud's, where still wanted.
ACR_DEFAULT_SUFFIXES: tuple[str, ...] = ("azurecr.io", "azurecr.cn", "azurecr.us")

#: A registry name is 5-50 alphanumerics (ACR naming rules); a geo-replica or a
#: dedicated data endpoint adds ``.<region>`` / ``-<suffix>`` parts we also accept.
_ACR_NAME = r"[a-z0-9]{5,50}(?:-[a-z0-9]+)?(?:\.[a-z0-9-]+)?"

#: The host family of the Kubernetes ECR credential provider (cloud-provider-aws,
#: ``ecrPrivateHostPattern``) plus the European Sovereign Cloud's ``amazonaws.eu`` from
#: amazon-ecr-credential-helper: standard, FIPS, China, dual-stack ``on.aws``, ISO.
ECR_HOST_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr[.-]ecr(?P<fips>-fips)?\.(?P<region>[a-z0-9][a-z0-9-_]*)\."
    r"(?P<suffix>amazonaws\.com(?:\.cn)?|amazonaws\.eu|on\.(?:aws|amazonwebservices\.com\.cn)"
    r"|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$"
)
ECR_PUBLIC_HOST = "public.ecr.aws"
ECR_ACCOUNT_RE = re.compile(r"^\d{12}$")

_HOST_RE = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:]+\])(?::\d{1,5})?$"
)


def valid_host(host: str) -> bool:
    """A lower-case ``host[:port]`` as it appears in an image reference."""
    return bool(_HOST_RE.match(host)) and len(host) <= 253


@dataclass(frozen=True)
class HostRule:
    """Which hosts an entry covers: exact hosts, and/or its kind's whole family."""

    kind: str
    """Registry kind: acr | ecr | generic."""
    hosts: frozenset[str] = frozenset()
    """Exact hosts (``host[:port]``, lower-case)."""
    family: bool = False
    """Also cover any host of the kind's family (any ACR login server / any ECR host)."""
    suffixes: tuple[str, ...] = ()
    """acr: login-server suffixes that make up the family."""
    accounts: frozenset[str] = frozenset()
    """ecr: allowlist of AWS accounts for the family (empty: any account)."""

    def matches(self, host: str) -> bool:
        host = host.lower()
        if host in self.hosts:
            return True
        if not self.family:
            return False
        if self.kind == "acr":
            return acr_registry_name(host, self.suffixes) is not None
        if self.kind == "ecr":
            m = ECR_HOST_RE.match(host)
            return m is not None and (not self.accounts or m["account"] in self.accounts)
        return False

    def describe(self) -> str:
        parts = sorted(self.hosts)
        if self.family and self.kind == "acr":
            parts.append("any *." + "|".join(self.suffixes))
        if self.family and self.kind == "ecr":
            accounts = ",".join(sorted(self.accounts)) if self.accounts else "any account"
            parts.append(f"any ECR host ({accounts})")
        return ", ".join(parts)


def acr_registry_name(host: str, suffixes: Iterable[str] = ACR_DEFAULT_SUFFIXES) -> str | None:
    """The registry name of an ACR login server host, or None when it is not one."""
    for suffix in suffixes:
        m = re.fullmatch(rf"({_ACR_NAME})\.{re.escape(suffix)}", host)
        if m:
            return m.group(1)
    return None


@dataclass(frozen=True)
class EcrHost:
    """The parts of an ECR registry host."""

    account: str
    region: str
    fips: bool


def parse_ecr_host(host: str) -> EcrHost | None:
    m = ECR_HOST_RE.match(host.lower())
    if m is None:
        return None
    return EcrHost(account=m["account"], region=m["region"], fips=bool(m["fips"]))


def family_of(host: str) -> str | None:
    """Which kind's family a host belongs to (for `explain` hints), or None."""
    host = host.lower()
    if acr_registry_name(host) is not None:
        return "acr"
    if ECR_HOST_RE.match(host) or host == ECR_PUBLIC_HOST:
        return "ecr"
    return None
