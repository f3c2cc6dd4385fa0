"""The ``ecr`` kind's config: Amazon ECR entries, their AWS identity (one dataclass per
auth mode), how they are read from the file, and the family of ECR registry hosts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from webhook.config.entry import Entry, SecretRef
from webhook.config.hosts import HostRule
from webhook.config.reader import Reader

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
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


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


def recognises(host: str) -> bool:
    """Whether ``host`` looks like an ECR registry, private or public (for hints)."""
    host = host.lower()
    return ECR_HOST_RE.match(host) is not None or host == ECR_PUBLIC_HOST


@dataclass(frozen=True)
class EcrFamily:
    """Any ECR registry host, optionally of listed AWS accounts only."""

    accounts: frozenset[str] = frozenset()
    """Allowlist of AWS accounts (empty: any account)."""

    def matches(self, host: str) -> bool:
        m = ECR_HOST_RE.match(host)
        return m is not None and (not self.accounts or m["account"] in self.accounts)

    def describe(self) -> str:
        accounts = ",".join(sorted(self.accounts)) if self.accounts else "any account"
        return f"any ECR host ({accounts})"

    def why_not(self, host: str) -> str | None:
        parsed = parse_ecr_host(host)
        if parsed is None or self.matches(host.lower()):
            return None
        return (
            "covers any ECR host, but only of the accounts it lists in accounts: "
            f"add {parsed.account} to accounts, or the host to hosts"
        )


# -- auth: one dataclass per mode ----------------------------------------------------


@dataclass(frozen=True)
class DefaultChain:
    """AWS's default credential chain: IRSA, EKS Pod Identity, instance profile. The
    default mode."""

    mode: ClassVar[str] = "default"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return "default"


@dataclass(frozen=True)
class StaticKeys:
    """Access keys from a Kubernetes Secret."""

    access_keys: SecretRef
    """Secret with ``accessKeyId`` and ``secretAccessKey`` keys."""
    mode: ClassVar[str] = "staticKeys"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return f"keys:{self.access_keys.namespace}/{self.access_keys.name}"


@dataclass(frozen=True)
class AssumeRole:
    """A role assumed (cross-account) on top of the default chain."""

    role_arn: str
    """The role to assume."""
    external_id: str = ""
    """Optional external id the role's trust policy requires."""
    session_name: str = "pull-secret-webhook"
    """Role session name."""
    mode: ClassVar[str] = "assumeRole"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return f"role:{self.role_arn}"


@dataclass(frozen=True)
class PodServiceAccount:
    """Each pod's own service account, annotated with the role to assume (IRSA-style)."""

    session_name: str = "pull-secret-webhook"
    """Role session name."""
    mode: ClassVar[str] = "podServiceAccount"
    per_pod: ClassVar[bool] = True

    def identity(self) -> str:
        return "pod-sa"


EcrAuth: TypeAlias = DefaultChain | StaticKeys | AssumeRole | PodServiceAccount
#: The modes in the order the docs and error messages list them.
MODES: tuple[type[EcrAuth], ...] = (DefaultChain, StaticKeys, AssumeRole, PodServiceAccount)


@dataclass(frozen=True)
class EcrEntry(Entry):
    """Amazon ECR registries (or the family of them) and the AWS identity to use."""

    kind: ClassVar[str] = "ecr"
    name: str
    rule: HostRule
    auth: EcrAuth
    region: str = ""
    """Region override. Default: read from the host."""
    endpoint_url: str = ""
    """ECR API endpoint override (VPC endpoints, tests). Default: AWS's."""
    sts_endpoint_url: str = ""
    """STS endpoint override. Default: AWS's regional endpoint."""
    prefetch: bool = True
    """Exchange this entry's credential ahead of need (``prefetch``). Default true."""


# -- reading it from the config file -----------------------------------------------

#: The keys an ``ecr`` entry has besides the common ones.
KEYS = ("accounts", "region", "endpointUrl", "stsEndpointUrl")


def parse_family(r: Reader, m: Mapping[str, Any], where: str) -> EcrFamily:
    accounts = r.string_list(m, "accounts", where)
    for a in accounts:
        if not ECR_ACCOUNT_RE.match(a):
            r.bad(f"{where}.accounts", a, "a 12-digit AWS account id")
    return EcrFamily(frozenset(accounts))


def parse_entry(
    r: Reader, m: Mapping[str, Any], where: str, name: str, rule: HostRule | None
) -> EcrEntry | None:
    auth = parse_auth(r, r.mapping(m.get("auth", {}), f"{where}.auth"), f"{where}.auth")
    region = r.string(m, "region", where)
    if region and not _REGION_RE.match(region):
        r.bad(f"{where}.region", region, "an AWS region such as us-east-1")
    endpoint = r.string(m, "endpointUrl", where)
    sts_endpoint = r.string(m, "stsEndpointUrl", where)
    for key, url in (("endpointUrl", endpoint), ("stsEndpointUrl", sts_endpoint)):
        if url and not re.match(r"^https?://[^\s/]+", url):
            r.bad(f"{where}.{key}", url, "an http(s) URL")
        elif url:
            r.port_in_range(f"{where}.{key}", url)
    if rule is None or auth is None:
        return None
    return EcrEntry(
        name=name,
        rule=rule,
        auth=auth,
        region=region,
        endpoint_url=endpoint,
        sts_endpoint_url=sts_endpoint,
    )


def parse_auth(r: Reader, m: Mapping[str, Any], where: str) -> EcrAuth | None:
    r.unknown(m, where, ("mode", "accessKeysRef", "roleArn", "externalId", "sessionName"))
    names = [mode.mode for mode in MODES]
    mode = m.get("mode", DefaultChain.mode)
    if mode not in names:
        r.bad(f"{where}.mode", mode, f"one of {', '.join(names)}")
        return None
    keys = r.secret_ref(m, "accessKeysRef", where)
    role_arn = r.string(m, "roleArn", where)
    if mode == StaticKeys.mode and keys is None:
        r.bad(f"{where}.accessKeysRef", None, "a Secret reference for mode staticKeys")
    if mode != StaticKeys.mode and keys is not None:
        r.bad(f"{where}.accessKeysRef", keys.name, "only with mode staticKeys")
    if mode == AssumeRole.mode and not role_arn:
        r.bad(f"{where}.roleArn", role_arn, "a role ARN for mode assumeRole")
    if role_arn and not _ROLE_ARN_RE.match(role_arn):
        r.bad(f"{where}.roleArn", role_arn, "arn:aws:iam::ACCOUNT:role/NAME")
    if role_arn and mode != AssumeRole.mode:
        r.bad(f"{where}.roleArn", role_arn, "only with mode assumeRole")
    session = r.string(m, "sessionName", where, "pull-secret-webhook")
    if not re.match(r"^[\w+=,.@-]{2,64}$", session):
        r.bad(f"{where}.sessionName", session, "2-64 characters of [A-Za-z0-9+=,.@_-]")
    external_id = r.string(m, "externalId", where)
    if mode == StaticKeys.mode:
        return StaticKeys(keys) if keys is not None else None
    if mode == AssumeRole.mode:
        if not role_arn:
            return None
        return AssumeRole(role_arn, external_id=external_id, session_name=session)
    if mode == PodServiceAccount.mode:
        return PodServiceAccount(session_name=session)
    return DefaultChain()
