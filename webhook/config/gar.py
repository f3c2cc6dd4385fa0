"""The ``gar`` kind's config: Google Artifact Registry (``LOCATION-docker.pkg.dev``) and
Container Registry (``gcr.io``, ``*.gcr.io``) entries, their Google identity (one
dataclass per auth mode), how they are read from the file, and the family of hosts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from webhook.config.entry import Entry, SecretRef
from webhook.config.hosts import HostRule
from webhook.config.reader import Reader

#: Artifact Registry's Docker hosts are ``LOCATION-docker.pkg.dev`` (a multi-region such as
#: ``us``/``europe``/``asia``, or a region such as ``us-central1``,
#: ``northamerica-northeast1``: Artifact Registry's "Repository locations"); Container
#: Registry's are ``gcr.io`` and its regional ``us.``/``eu.``/``asia.gcr.io`` (any single
#: label under ``gcr.io``). Anchored at both ends, no port: ``us-docker.pkg.dev.evil``,
#: ``evil-docker.pkg.dev.attacker.com`` and ``gcr.io.evil.com`` are not Google's.
GAR_HOST_RE = re.compile(r"^(?P<location>[a-z]+(?:-[a-z]+[0-9]+)?)-docker\.pkg\.dev$")
GCR_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)?gcr\.io$")
#: ``//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/
#: providers/PROVIDER``: STS's ``audience`` for a workload identity pool provider.
PROVIDER_RE = re.compile(
    r"^//iam\.googleapis\.com/projects/\d+/locations/global/workloadIdentityPools/"
    r"[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}$"
)
#: A Google service account's email (user-managed accounts end in
#: ``.iam.gserviceaccount.com``; Google-managed ones in ``gserviceaccount.com``).
SERVICE_ACCOUNT_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*@[a-z0-9][a-z0-9.-]*\.gserviceaccount\.com$")

#: Google's endpoints, as google-auth names them; an entry may point them elsewhere
#: (Private Service Connect endpoints, tests).
GOOGLE_STS_URL = "https://sts.googleapis.com/v1/token"
GOOGLE_IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
GOOGLE_OAUTH2_TOKEN_URL = "https://oauth2.googleapis.com/token"


def recognises(host: str) -> bool:
    """Whether ``host`` looks like a Google registry host (for hints)."""
    host = host.lower()
    return GAR_HOST_RE.match(host) is not None or GCR_HOST_RE.match(host) is not None


@dataclass(frozen=True)
class GarFamily:
    """Any Artifact Registry Docker host and any Container Registry host."""

    def matches(self, host: str) -> bool:
        return recognises(host)

    def describe(self) -> str:
        return "any *-docker.pkg.dev, gcr.io or *.gcr.io host"

    def why_not(self, host: str) -> str | None:
        return None  # the family has no narrowing setting


# -- auth: one dataclass per mode ----------------------------------------------------


@dataclass(frozen=True)
class MetadataServer:
    """The metadata server's token: GKE Workload Identity (the webhook's own Kubernetes
    ServiceAccount, or the Google service account it is annotated with), or the node's
    service account on Compute Engine. The default mode."""

    service_account: str = ""
    """Which of the metadata server's accounts. Default: ``default``."""
    mode: ClassVar[str] = "metadataServer"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return f"gce:{self.service_account or 'default'}"


@dataclass(frozen=True)
class Federation:
    """Workload identity federation from the webhook's own projected ServiceAccount token
    (an ``external_account`` identity pool credential), for clusters outside Google."""

    audience: str
    """The workload identity pool provider (``//iam.googleapis.com/projects/…``)."""
    token_file: str
    """The webhook's projected token, with an audience the provider accepts."""
    service_account: str = ""
    """A Google service account to impersonate; without one the federated principal
    itself needs the registry role."""
    mode: ClassVar[str] = "federation"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return f"wif:{self.audience}>{self.service_account}"


@dataclass(frozen=True)
class PodServiceAccount:
    """Each pod's own ServiceAccount, federated: a TokenRequest token with the provider's
    audience, exchanged at STS, then the Google service account its
    ``iam.gke.io/gcp-service-account`` annotation names impersonated (without one, the
    federated principal itself is the identity)."""

    audience: str
    """The workload identity pool provider (``//iam.googleapis.com/projects/…``)."""
    token_audience: str = ""
    """The pods' tokens' audience. Default: the provider's default allowed audience,
    ``https:`` + ``audience``."""
    mode: ClassVar[str] = "podServiceAccount"
    per_pod: ClassVar[bool] = True

    @property
    def pod_token_audience(self) -> str:
        return self.token_audience or "https:" + self.audience

    def identity(self) -> str:
        return "pod-sa"


@dataclass(frozen=True)
class ServiceAccountKey:
    """A service account key from a Kubernetes Secret: a long-lived secret, the last
    resort when no federation is possible."""

    key: SecretRef
    """Secret holding the JSON key file (default key ``key.json``)."""
    mode: ClassVar[str] = "serviceAccountKey"
    per_pod: ClassVar[bool] = False

    def identity(self) -> str:
        return f"key:{self.key.namespace}/{self.key.name}"


GarAuth: TypeAlias = MetadataServer | Federation | PodServiceAccount | ServiceAccountKey
#: The modes in the order the docs and error messages list them.
MODES: tuple[type[GarAuth], ...] = (
    MetadataServer,
    Federation,
    PodServiceAccount,
    ServiceAccountKey,
)


@dataclass(frozen=True)
class GarEntry(Entry):
    """Google Artifact Registry and Container Registry hosts, and the Google identity to
    read them as."""

    kind: ClassVar[str] = "gar"
    name: str
    rule: HostRule
    auth: GarAuth
    sts_url: str = GOOGLE_STS_URL
    """STS token endpoint. Default https://sts.googleapis.com/v1/token."""
    iam_credentials_url: str = GOOGLE_IAM_CREDENTIALS_URL
    """IAM Credentials API base URL. Default https://iamcredentials.googleapis.com."""
    oauth2_token_url: str = GOOGLE_OAUTH2_TOKEN_URL
    """Where a key's signed JWT is exchanged (a key file's own ``token_uri`` is never
    followed). Default https://oauth2.googleapis.com/token."""
    prefetch: bool = True
    """Exchange this entry's credential ahead of need (``prefetch``). Default true."""


# -- reading it from the config file -----------------------------------------------

#: The keys a ``gar`` entry has besides the common ones.
KEYS = ("stsUrl", "iamCredentialsUrl", "oauth2TokenUrl")


def parse_family(r: Reader, m: Mapping[str, Any], where: str) -> GarFamily:
    return GarFamily()


def parse_entry(
    r: Reader, m: Mapping[str, Any], where: str, name: str, rule: HostRule | None
) -> GarEntry | None:
    auth = parse_auth(r, r.mapping(m.get("auth", {}), f"{where}.auth"), f"{where}.auth")
    urls = {
        "stsUrl": r.string(m, "stsUrl", where, GOOGLE_STS_URL),
        "iamCredentialsUrl": r.string(m, "iamCredentialsUrl", where, GOOGLE_IAM_CREDENTIALS_URL),
        "oauth2TokenUrl": r.string(m, "oauth2TokenUrl", where, GOOGLE_OAUTH2_TOKEN_URL),
    }
    for key, url in urls.items():
        # https only: these endpoints are sent a Kubernetes token or a signed assertion.
        if not re.match(r"^https://[^\s/]+", url):
            r.bad(f"{where}.{key}", url, "an https:// URL")
        else:
            r.port_in_range(f"{where}.{key}", url)
    if rule is None or auth is None:
        return None
    return GarEntry(
        name=name,
        rule=rule,
        auth=auth,
        sts_url=urls["stsUrl"],
        iam_credentials_url=urls["iamCredentialsUrl"],
        oauth2_token_url=urls["oauth2TokenUrl"],
    )


def parse_auth(r: Reader, m: Mapping[str, Any], where: str) -> GarAuth | None:
    before = len(r.problems)
    r.unknown(
        m, where, ("mode", "serviceAccount", "audience", "tokenAudience", "tokenFile", "keyRef")
    )
    names = [mode.mode for mode in MODES]
    mode = m.get("mode", MetadataServer.mode)
    if mode not in names:
        r.bad(f"{where}.mode", mode, f"one of {', '.join(names)}")
        return None
    account = r.string(m, "serviceAccount", where)
    audience = r.string(m, "audience", where)
    token_audience = r.string(m, "tokenAudience", where)
    token_file = r.string(m, "tokenFile", where)
    key = r.secret_ref(m, "keyRef", where)
    if account and not SERVICE_ACCOUNT_RE.match(account):
        r.bad(
            f"{where}.serviceAccount",
            account,
            "a service account email, NAME@PROJECT.iam.gserviceaccount.com",
        )
    if account and mode in (PodServiceAccount.mode, ServiceAccountKey.mode):
        r.bad(
            f"{where}.serviceAccount",
            account,
            "not with mode podServiceAccount (each ServiceAccount names its own with the "
            "iam.gke.io/gcp-service-account annotation) nor serviceAccountKey",
        )
    federated = mode in (Federation.mode, PodServiceAccount.mode)
    if federated and not PROVIDER_RE.match(audience):
        r.bad(
            f"{where}.audience",
            audience or None,
            "//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/"
            f"POOL/providers/PROVIDER for mode {mode}",
        )
    if audience and not federated:
        r.bad(f"{where}.audience", audience, "only with mode federation or podServiceAccount")
    if token_audience and mode != PodServiceAccount.mode:
        r.bad(f"{where}.tokenAudience", token_audience, "only with mode podServiceAccount")
    if mode == Federation.mode and not token_file.startswith("/"):
        r.bad(f"{where}.tokenFile", token_file or None, "the absolute path of the projected token")
    if token_file and mode != Federation.mode:
        r.bad(f"{where}.tokenFile", token_file, "only with mode federation")
    if mode == ServiceAccountKey.mode and key is None:
        r.bad(f"{where}.keyRef", None, "a Secret reference for mode serviceAccountKey")
    if key is not None and mode != ServiceAccountKey.mode:
        r.bad(f"{where}.keyRef", key.name, "only with mode serviceAccountKey")
    if len(r.problems) > before:
        return None
    if mode == Federation.mode:
        return Federation(audience, token_file, service_account=account)
    if mode == PodServiceAccount.mode:
        return PodServiceAccount(audience, token_audience=token_audience)
    if mode == ServiceAccountKey.mode:
        return ServiceAccountKey(key) if key is not None else None
    return MetadataServer(service_account=account)
