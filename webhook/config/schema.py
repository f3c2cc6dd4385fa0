"""Settings: what a configuration file says, as frozen dataclasses.

The registry entries' types are their kinds' (``webhook.config.kinds``). Reading and
validating a file into these is ``webhook.config.load``'s job; reloading it while serving
is ``webhook.config.watch``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from webhook.config.kinds import RegistryEntry

#: The system namespaces, always excluded (as is the webhook's own): their pods must
#: start while the webhook is down, and no tenant is ever served there.
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


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
    def memo(self) -> dict[str, object]:
        """Answers derived from this config alone, kept on it by the code that derives them
        (``webhook.admission.needs`` keeps its image matches here, under ``"needs"``): they
        live exactly as long as this snapshot, and a reload, a new Config, starts empty."""
        return {}

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
