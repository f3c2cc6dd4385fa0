"""Settings: what a configuration file says, as frozen dataclasses.

Reading and validating a file into these is ``webhook.config.load``'s job; reloading it
while serving is ``webhook.config.watch``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeAlias

from webhook.config.hosts import (
    HostRule,
)

AcrAuthMode: TypeAlias = Literal[
    "workloadIdentity", "managedIdentity", "servicePrincipal", "podServiceAccount"
]
EcrAuthMode: TypeAlias = Literal["default", "staticKeys", "assumeRole", "podServiceAccount"]

ACR_MODES: tuple[str, ...] = (
    "workloadIdentity",
    "managedIdentity",
    "servicePrincipal",
    "podServiceAccount",
)
ECR_MODES: tuple[str, ...] = ("default", "staticKeys", "assumeRole", "podServiceAccount")

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


#: The system namespaces, always excluded (as is the webhook's own): their pods must
#: start while the webhook is down, and no tenant is ever served there.
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class SecretRef:
    """A key of a Kubernetes Secret the webhook reads (never writes)."""

    name: str
    """Secret name. Required."""
    namespace: str = ""
    """Namespace. Default: the webhook's own namespace."""
    key: str = ""
    """Key inside the Secret; empty means the mode's documented default keys."""


@dataclass(frozen=True)
class AcrAuth:
    """How an ``acr`` entry gets an Entra ID token."""

    mode: AcrAuthMode = "workloadIdentity"
    """workloadIdentity (default) | managedIdentity | servicePrincipal | podServiceAccount."""
    client_id: str = ""
    """App or managed identity client id. Default: AZURE_CLIENT_ID / the node's identity."""
    tenant_id: str = ""
    """Tenant. Default: AZURE_TENANT_ID (workload identity) or required (servicePrincipal)."""
    resource_id: str = ""
    """managedIdentity only: select the user-assigned identity by ARM resource id."""
    client_secret: SecretRef | None = None
    """servicePrincipal: Secret holding the client secret (default key ``clientSecret``)."""
    client_secret_file: str = ""
    """servicePrincipal: file holding the client secret."""
    certificate: SecretRef | None = None
    """servicePrincipal: Secret holding a PEM certificate+key (default key ``tls.pem``)."""
    certificate_file: str = ""
    """servicePrincipal: PEM file with certificate and private key."""
    token_file: str = ""
    """workloadIdentity: federated token file. Default: AZURE_FEDERATED_TOKEN_FILE."""
    authority_host: str = ""
    """Entra ID authority. Default: AZURE_AUTHORITY_HOST or login.microsoftonline.com."""
    audience: str = "containerregistry"
    """Token audience: ``containerregistry`` (default), ``arm`` for old registries (the
    Resource Manager of the authority's cloud), or an explicit ``https://`` audience."""

    def scope(self, default_authority: str = DEFAULT_AUTHORITY_HOST) -> str:
        """The token's scope; ``default_authority`` when the entry names no authority."""
        return acr_scope(self.audience, self.authority_host or default_authority)

    def identity(self) -> str:
        """A stable, non-secret label of the identity (secret names derive from it)."""
        if self.mode == "managedIdentity":
            return f"mi:{self.client_id or self.resource_id or 'system'}"
        if self.mode == "servicePrincipal":
            return f"sp:{self.tenant_id}/{self.client_id}"
        if self.mode == "workloadIdentity":
            return f"wi:{self.client_id or 'env'}"
        return "pod-sa"


@dataclass(frozen=True)
class EcrAuth:
    """How an ``ecr`` entry gets AWS credentials."""

    mode: EcrAuthMode = "default"
    """default (AWS chain: IRSA, Pod Identity, instance profile) | staticKeys | assumeRole |
    podServiceAccount."""
    access_keys: SecretRef | None = None
    """staticKeys: Secret with ``accessKeyId`` and ``secretAccessKey`` keys."""
    role_arn: str = ""
    """assumeRole: role to assume (cross-account) on top of the default chain."""
    external_id: str = ""
    """assumeRole: optional external id the role's trust policy requires."""
    session_name: str = "pull-secret-webhook"
    """assumeRole / podServiceAccount: role session name."""

    def identity(self) -> str:
        if self.mode == "assumeRole":
            return f"role:{self.role_arn}"
        if self.mode == "staticKeys" and self.access_keys is not None:
            return f"keys:{self.access_keys.namespace}/{self.access_keys.name}"
        if self.mode == "podServiceAccount":
            return "pod-sa"
        return "default"


@dataclass(frozen=True)
class GenericAuth:
    """Static credentials for a ``generic`` entry."""

    secret: SecretRef
    """Secret with ``username`` and ``password`` keys, or a ``.dockerconfigjson``."""
    mode: Literal["secret"] = "secret"
    """The only mode: credentials read from ``secret``."""

    def identity(self) -> str:
        return f"secret:{self.secret.namespace}/{self.secret.name}"


Auth: TypeAlias = AcrAuth | EcrAuth | GenericAuth


class _Entry:
    """What every kind of entry has (the dataclasses below declare the fields)."""

    name: str
    """Unique, DNS-label-like name; appears in secret names, logs and metrics."""
    rule: HostRule
    """Which image hosts this entry serves (exact hosts and/or the kind's family)."""
    auth: Auth
    """How credentials are obtained."""

    @property
    def per_pod_identity(self) -> bool:
        return self.auth.mode == "podServiceAccount"

    def identity(self) -> str:
        return self.auth.identity()


@dataclass(frozen=True)
class AcrEntry(_Entry):
    """An Azure Container Registry (or the family of them) and its Entra ID identity."""

    name: str
    rule: HostRule
    auth: AcrAuth
    scope: str = ""
    """Space-separated ``repository:NAME:pull`` list for a scoped token. Default: none."""
    kind: Literal["acr"] = "acr"


@dataclass(frozen=True)
class EcrEntry(_Entry):
    """Amazon ECR registries (or the family of them) and the AWS identity to use."""

    name: str
    rule: HostRule
    auth: EcrAuth
    region: str = ""
    """Region override. Default: read from the host."""
    endpoint_url: str = ""
    """ECR API endpoint override (VPC endpoints, tests). Default: AWS's."""
    sts_endpoint_url: str = ""
    """STS endpoint override. Default: AWS's regional endpoint."""
    kind: Literal["ecr"] = "ecr"


@dataclass(frozen=True)
class GenericEntry(_Entry):
    """Any registry, with static credentials from a Secret."""

    name: str
    rule: HostRule
    auth: GenericAuth
    kind: Literal["generic"] = "generic"


#: One configured registry entry; ``kind`` tells which (match on the class to narrow).
RegistryEntry: TypeAlias = AcrEntry | EcrEntry | GenericEntry


@dataclass(frozen=True)
class AdmissionSettings:
    """How admissions behave when credentials are slow or failing."""

    timeout_seconds: int = 10
    """The MutatingWebhookConfiguration's ``timeoutSeconds``. Default 10."""
    budget_fraction: float = 0.6
    """Share of ``timeout_seconds`` an admission may spend minting secrets. Default 0.6."""
    fail_closed: bool = False
    """Deny the pod when its pull secret cannot be made in time. Default false (admit,
    warn, and make the secret in the background)."""

    @property
    def budget_seconds(self) -> float:
        return self.timeout_seconds * self.budget_fraction


@dataclass(frozen=True)
class RefreshSettings:
    """Background refresh and garbage collection (leader only)."""

    fraction: float = 0.5
    """Renew a credential once this share of its lifetime has passed. Default 0.5."""
    interval_seconds: float = 60.0
    """How often the refresher scans managed secrets. Default 60."""
    gc_grace_seconds: float = 3600.0
    """Delete a managed secret no pod has referenced for this long. Default 3600."""
    lease_name: str = "pull-secret-webhook"
    """coordination.k8s.io Lease used for leader election. Default pull-secret-webhook."""


@dataclass(frozen=True)
class HealingSettings:
    """Self-healing of pods admitted without their pull secret (leader only)."""

    evict: bool = True
    """Evict a stuck pod that a controller re-creates (ReplicaSet, StatefulSet, DaemonSet,
    Job), through the Eviction API. false: report only (an Event and a metric). Default
    true."""
    grace_seconds: float = 90.0
    """How long a pod must fail to pull an image it lacks the webhook's secret for before
    it is healed. Default 90: the kubelet retries a failed pull after about 15, 40 and 83
    seconds, so a failure that clears by itself has had three retries first."""


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    registries: tuple[RegistryEntry, ...] = ()
    """Registry entries, matched in order; the first match wins."""
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    refresh: RefreshSettings = field(default_factory=RefreshSettings)
    healing: HealingSettings = field(default_factory=HealingSettings)
    namespace: str = "pull-secret-webhook"
    """The webhook's own namespace (default Secret namespace, Lease namespace). Default: the
    ``POD_NAMESPACE`` environment variable (the manifests set it from the pod's namespace),
    else ``pull-secret-webhook``."""
    secret_prefix: str = "psw"
    """Prefix of generated pull secret names. Default ``psw``."""
    ca_file: str = ""
    """Extra CA bundle to trust for outbound TLS (Entra ID, ACR). Default: system CAs."""
    excluded_namespaces: tuple[str, ...] = ()
    """More namespaces never given pull secrets, even when labelled. Default: none; the
    system namespaces (kube-system, kube-public, kube-node-lease) and the webhook's own
    are always excluded."""

    def entry_for(self, host: str) -> RegistryEntry | None:
        """The first entry whose rule covers ``host`` (entries match in config order)."""
        for entry in self.registries:
            if entry.rule.matches(host):
                return entry
        return None

    @cached_property
    def never_injected(self) -> frozenset[str]:
        """Every namespace the webhook refuses to write in (asked on every admission, so
        computed once per config)."""
        return frozenset((*SYSTEM_NAMESPACES, self.namespace, *self.excluded_namespaces))


#: The settings a running replica cannot take from a reload, with why; every other setting
#: is read from ``ConfigStore.current`` where it is used. ``namespace`` is where the
#: replica's records are watched and its Lease lives, and must be the pod's own;
#: ``refresh.leaseName`` decides who leads: replicas see a ConfigMap change up to a minute
#: apart, and two Lease names at once would mean two leaders.
RESTART_ONLY: tuple[tuple[str, str], ...] = (
    ("namespace", "the replica watches its records and holds its Lease there"),
    ("refresh.leaseName", "replicas on two Lease names at once would both lead"),
)


def _setting(config: Config, key: str) -> object:
    if key == "namespace":
        return config.namespace
    if key == "refresh.leaseName":
        return config.refresh.lease_name
    raise KeyError(key)


def restart_needed(old: Config, new: Config) -> list[str]:
    """Why ``new`` cannot replace ``old`` in a running replica: one line per setting that
    changed and needs a restart (none: it can be applied live)."""
    return [
        f"{key}: changed from {_setting(old, key)!r} to {_setting(new, key)!r}, which needs "
        f"a restart ({why}); the running replicas keep {_setting(old, key)!r}"
        for key, why in RESTART_ONLY
        if _setting(old, key) != _setting(new, key)
    ]


class ConfigStore:
    """The one config in use. Every consumer (the server, the pull-secret writer, the
    credential cache and its providers, the refresher) reads ``current`` where it uses a
    setting, never a copy taken at start, so a reload applies to all of them at once."""

    def __init__(self, config: Config) -> None:
        self.current = config
        self.generation = 1
        """Bumped by each reload, for readers that derive something from the config."""

    def replace(self, config: Config) -> None:
        self.current = config
        self.generation += 1


def store_of(config: Config | ConfigStore) -> ConfigStore:
    """``config`` as a store: a plain Config (tests, one-shot commands) never changes."""
    return config if isinstance(config, ConfigStore) else ConfigStore(config)
