"""The ``acr`` kind's config: Azure Container Registry entries, their Entra ID identity
(one dataclass per auth mode), how they are read from the file, and the family of ACR
login-server hosts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from webhook.config.entry import Entry, SecretRef
from webhook.config.hosts import HostRule, valid_host
from webhook.config.reader import UUID_RE, Reader

#: ACR login-server suffixes of the public and sovereign clouds in service (Azure public,
#: China, US Government). Microsoft Cloud Deutschland (azurecr.de) closed in 2021; an
#: entry's ``suffixes`` adds it, or a private cloud's, where still wanted.
ACR_DEFAULT_SUFFIXES: tuple[str, ...] = ("azurecr.io", "azurecr.cn", "azurecr.us")

#: A registry name is 5-50 alphanumerics (ACR naming rules); a geo-replica or a
#: dedicated data endpoint adds ``.<region>`` / ``-<suffix>`` parts we also accept.
_ACR_NAME = r"[a-z0-9]{5,50}(?:-[a-z0-9]+)?(?:\.[a-z0-9-]+)?"

#: Entra ID scopes an ACR token may be requested for. ``containerregistry`` is
#: the documented audience; ``arm`` is for registries created before ACR
#: accepted it (the ARM audience is still honoured by every registry).
ACR_AUDIENCES: dict[str, str] = {
    "containerregistry": "https://containerregistry.azure.net/.default",
    "arm": "https://management.azure.com/.default",
}
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
#: Azure Resource Manager's scope in each cloud, by that cloud's Entra ID authority host
#: (azure-identity's AzureAuthorityHosts; Resource Manager endpoints of `az cloud list`):
#: public, US Government, China. Another cloud names its scope as an https:// audience.
ARM_SCOPES: dict[str, str] = {
    "login.microsoftonline.com": "https://management.azure.com/.default",
    "login.microsoftonline.us": "https://management.usgovcloudapi.net/.default",
    "login.chinacloudapi.cn": "https://management.chinacloudapi.cn/.default",
}
_SCOPE_RE = re.compile(r"^repository:[a-z0-9._/-]+:(pull|\*|metadata_read)(,[a-z_*]+)*$")


def acr_scope(audience: str, authority_host: str) -> str:
    """The Entra ID scope an ``acr`` entry's token is requested for: ``containerregistry``,
    ``arm`` (Resource Manager of the cloud ``authority_host`` belongs to), or an explicit
    ``https://`` audience (``/.default`` added when missing)."""
    if audience.startswith("https://"):
        return audience if audience.endswith("/.default") else audience.rstrip("/") + "/.default"
    if audience == "arm":
        host = authority_host.removeprefix("https://").split("/", 1)[0].split(":", 1)[0]
        return ARM_SCOPES.get(host.lower(), ACR_AUDIENCES["arm"])
    return ACR_AUDIENCES[audience]


def acr_registry_name(host: str, suffixes: Iterable[str] = ACR_DEFAULT_SUFFIXES) -> str | None:
    """The registry name of an ACR login server host, or None when it is not one."""
    for suffix in suffixes:
        m = re.fullmatch(rf"({_ACR_NAME})\.{re.escape(suffix)}", host)
        if m:
            return m.group(1)
    return None


def recognises(host: str) -> bool:
    """Whether ``host`` looks like an ACR login server of a public cloud (for hints)."""
    return acr_registry_name(host.lower()) is not None


@dataclass(frozen=True)
class AcrFamily:
    """Any ACR login server: ``<registry name>.<suffix>``, anchored at both ends."""

    suffixes: tuple[str, ...] = ACR_DEFAULT_SUFFIXES

    def matches(self, host: str) -> bool:
        return acr_registry_name(host, self.suffixes) is not None

    def describe(self) -> str:
        return "any *." + "|".join(self.suffixes)

    def why_not(self, host: str) -> str | None:
        return None


# -- auth: one dataclass per mode ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Entra:
    """What every ACR mode shares: where Entra ID is and what the token is for."""

    tenant_id: str = ""
    """Tenant. Default: AZURE_TENANT_ID (workload identity, per pod) or the token's."""
    authority_host: str = ""
    """Entra ID authority. Default: AZURE_AUTHORITY_HOST or login.microsoftonline.com."""
    audience: str = "containerregistry"
    """Token audience: ``containerregistry`` (default), ``arm`` for old registries (the
    Resource Manager of the authority's cloud), or an explicit ``https://`` audience."""

    per_pod: ClassVar[bool] = False

    def scope(self, default_authority: str = DEFAULT_AUTHORITY_HOST) -> str:
        """The token's scope; ``default_authority`` when the entry names no authority."""
        return acr_scope(self.audience, self.authority_host or default_authority)


@dataclass(frozen=True, kw_only=True)
class WorkloadIdentity(_Entra):
    """The webhook's own federated token (Azure Workload Identity). The default mode."""

    mode: ClassVar[str] = "workloadIdentity"
    client_id: str = ""
    """App client id. Default: AZURE_CLIENT_ID."""
    token_file: str = ""
    """Federated token file. Default: AZURE_FEDERATED_TOKEN_FILE."""

    def identity(self) -> str:
        return f"wi:{self.client_id or 'env'}"


@dataclass(frozen=True, kw_only=True)
class ManagedIdentity(_Entra):
    """A managed identity through IMDS: the node's, or one picked by client or resource id."""

    mode: ClassVar[str] = "managedIdentity"
    client_id: str = ""
    """Client id of a user-assigned identity. Default: the node's identity."""
    resource_id: str = ""
    """Or the user-assigned identity's ARM resource id."""

    def identity(self) -> str:
        return f"mi:{self.client_id or self.resource_id or 'system'}"


@dataclass(frozen=True)
class FromSecret:
    """A service principal's client secret or PEM certificate+key in a Kubernetes Secret."""

    ref: SecretRef
    certificate: bool
    """A PEM certificate and key (default key ``tls.pem``) rather than a client secret
    (default key ``clientSecret``)."""


@dataclass(frozen=True)
class FromFile:
    """A service principal's client secret or PEM certificate+key in a mounted file."""

    path: str
    certificate: bool


@dataclass(frozen=True, kw_only=True)
class ServicePrincipal(_Entra):
    """An app registration with a client secret or a certificate."""

    mode: ClassVar[str] = "servicePrincipal"
    client_id: str
    """The app's client id. Required."""
    secret: FromSecret | FromFile
    """Where its client secret or certificate is. Required (exactly one source)."""

    def identity(self) -> str:
        return f"sp:{self.tenant_id}/{self.client_id}"


@dataclass(frozen=True, kw_only=True)
class PodServiceAccount(_Entra):
    """Each pod's own service account, annotated with the Entra ID app to act as."""

    mode: ClassVar[str] = "podServiceAccount"
    per_pod: ClassVar[bool] = True

    def identity(self) -> str:
        return "pod-sa"


AcrAuth: TypeAlias = WorkloadIdentity | ManagedIdentity | ServicePrincipal | PodServiceAccount
#: The modes in the order the docs and error messages list them.
MODES: tuple[type[AcrAuth], ...] = (
    WorkloadIdentity,
    ManagedIdentity,
    ServicePrincipal,
    PodServiceAccount,
)


@dataclass(frozen=True)
class AcrEntry(Entry):
    """An Azure Container Registry (or the family of them) and its Entra ID identity."""

    kind: ClassVar[str] = "acr"
    name: str
    rule: HostRule
    auth: AcrAuth
    scope: str = ""
    """Space-separated ``repository:NAME:pull`` list for a scoped token. Default: none."""
    prefetch: bool = True
    """Exchange this entry's credential ahead of need (``prefetch``). Default true."""


# -- reading it from the config file -----------------------------------------------

#: The keys an ``acr`` entry has besides the common ones.
KEYS = ("suffixes", "scope")
_AUTH_KEYS = (
    "mode",
    "clientId",
    "tenantId",
    "resourceId",
    "clientSecretRef",
    "clientSecretFile",
    "certificateRef",
    "certificateFile",
    "tokenFile",
    "authorityHost",
    "audience",
)


def parse_family(r: Reader, m: Mapping[str, Any], where: str) -> AcrFamily:
    suffixes = [s.lower().lstrip(".") for s in r.string_list(m, "suffixes", where)]
    for s in suffixes:
        if not valid_host(s) or ":" in s:
            r.bad(f"{where}.suffixes", s, "a DNS suffix such as azurecr.example.com")
    return AcrFamily(tuple(dict.fromkeys((*ACR_DEFAULT_SUFFIXES, *suffixes))))


def parse_entry(
    r: Reader, m: Mapping[str, Any], where: str, name: str, rule: HostRule | None
) -> AcrEntry | None:
    auth = parse_auth(r, r.mapping(m.get("auth", {}), f"{where}.auth"), f"{where}.auth")
    scope = r.string(m, "scope", where)
    for part in scope.split():
        if not _SCOPE_RE.match(part):
            r.bad(f"{where}.scope", part, "repository:NAME:pull (space-separated list)")
    if rule is None or auth is None:
        return None
    return AcrEntry(name=name, rule=rule, auth=auth, scope=" ".join(scope.split()))


def parse_auth(r: Reader, m: Mapping[str, Any], where: str) -> AcrAuth | None:
    r.unknown(m, where, _AUTH_KEYS)
    names = [mode.mode for mode in MODES]
    mode = m.get("mode", WorkloadIdentity.mode)
    if mode not in names:
        r.bad(f"{where}.mode", mode, f"one of {', '.join(names)}")
        return None
    client_id = r.string(m, "clientId", where)
    tenant_id = r.string(m, "tenantId", where)
    for key, value in (("clientId", client_id), ("tenantId", tenant_id)):
        if value and not UUID_RE.match(value) and not (key == "tenantId" and "." in value):
            r.bad(f"{where}.{key}", value, "a GUID")
    resource_id = r.string(m, "resourceId", where)
    if resource_id and not resource_id.lower().startswith("/subscriptions/"):
        r.bad(f"{where}.resourceId", resource_id, "an ARM id /subscriptions/…")
    if mode != ManagedIdentity.mode and resource_id:
        r.bad(f"{where}.resourceId", resource_id, "only with mode managedIdentity")
    if client_id and resource_id:
        r.bad(f"{where}.resourceId", resource_id, "either clientId or resourceId, not both")
    secret = r.secret_ref(m, "clientSecretRef", where)
    secret_file = r.string(m, "clientSecretFile", where)
    cert = r.secret_ref(m, "certificateRef", where)
    cert_file = r.string(m, "certificateFile", where)
    given: list[FromSecret | FromFile] = []
    if secret:
        given.append(FromSecret(secret, certificate=False))
    if secret_file:
        given.append(FromFile(secret_file, certificate=False))
    if cert:
        given.append(FromSecret(cert, certificate=True))
    if cert_file:
        given.append(FromFile(cert_file, certificate=True))
    if mode == ServicePrincipal.mode:
        if not client_id or not tenant_id:
            r.bad(where, dict(m), "clientId and tenantId for mode servicePrincipal")
        if len(given) != 1:
            r.bad(
                where,
                sorted(m),
                "exactly one of clientSecretRef, clientSecretFile, certificateRef, "
                "certificateFile for mode servicePrincipal",
            )
    elif given:
        r.bad(where, sorted(m), f"no service principal secret for mode {mode}")
    authority = r.string(m, "authorityHost", where)
    if authority and not authority.startswith("https://"):
        r.bad(f"{where}.authorityHost", authority, "an https:// URL (Entra ID needs TLS)")
    elif authority:
        r.port_in_range(f"{where}.authorityHost", authority)
    audience = r.string(m, "audience", where, "containerregistry")
    if audience not in ACR_AUDIENCES and not audience.startswith("https://"):
        r.bad(
            f"{where}.audience",
            audience,
            f"one of {', '.join(ACR_AUDIENCES)}, or an https:// audience",
        )
        audience = "containerregistry"
    entra = {"tenant_id": tenant_id, "authority_host": authority.rstrip("/"), "audience": audience}
    token_file = r.string(m, "tokenFile", where)
    if mode == WorkloadIdentity.mode:
        return WorkloadIdentity(client_id=client_id, token_file=token_file, **entra)
    if mode == ManagedIdentity.mode:
        return ManagedIdentity(client_id=client_id, resource_id=resource_id, **entra)
    if mode == ServicePrincipal.mode:
        if len(given) != 1:
            return None
        return ServicePrincipal(client_id=client_id, secret=given[0], **entra)
    return PodServiceAccount(**entra)
