"""What a pod needs: its images → (registry entry, host, identity) → a deterministic secret name.

Pure: no I/O. The same (entry, host, identity) always yields the same secret
name, so every replica, every retry and the refresher agree on it without
talking to each other. Because the answer for an image depends only on the config
(and the pod's service account), it is memoised on the config snapshot itself
(``Config.memo``): a Deployment's pods repeat the same few images, and parsing, host
matching and hashing them again cost more than the rest of an admission.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic

from typing_extensions import TypeVar

from webhook.admission.images import ImageRef, InvalidReference, parse_image
from webhook.admission.jsonio import is_object
from webhook.admission.memo import remember
from webhook.config.entry import Entry
from webhook.config.kinds import RegistryEntry
from webhook.config.schema import Config

CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
#: Secret names are DNS subdomains (253); we stay within a DNS label (63) so the name
#: also fits label values and stays readable in `kubectl get secrets`.
SECRET_NAME_MAX = 63
_HASH_LEN = 10
#: Distinct (image, service account) pairs remembered per config. A cluster's pods use a
#: few hundred distinct images; 4096 answers take about 2 MiB. When full, the oldest
#: answers are forgotten first (they are recomputed on demand, never wrong).
MATCH_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Identity:
    """Who the credential is minted as: the entry's own identity or the pod's service account."""

    key: str
    """Stable label: e.g. ``wi:<client id>``, ``role:<arn>``, ``sa:<service account>``."""
    service_account: str = ""
    """Per-pod mode: the pod's service account (in the pod's namespace)."""


#: The kind of entry a need is for: a provider takes only its own kind's needs.
EntryT = TypeVar("EntryT", bound=Entry, default=RegistryEntry, covariant=True)
_E = TypeVar("_E", bound=Entry)


@dataclass(frozen=True)
class PullNeed(Generic[EntryT]):
    """One pull secret a pod needs in its namespace."""

    entry: EntryT
    host: str
    identity: Identity
    secret_name: str
    images: tuple[str, ...] = field(default=(), compare=False)

    @staticmethod
    def make(
        entry: _E,
        host: str,
        *,
        prefix: str,
        service_account: str = "default",
        images: tuple[str, ...] = (),
    ) -> PullNeed[_E]:
        """The pull secret a pod running as ``service_account`` needs for ``host``: the
        one place that decides its identity and its name."""
        identity = identity_for(entry, service_account)
        name = secret_name(prefix, entry, host, identity)
        return PullNeed(entry, host, identity, name, images)


@dataclass(frozen=True)
class ImageMatch:
    """How one image string was understood (for `explain` and logs)."""

    image: str
    ref: ImageRef | None
    error: str = ""
    need: PullNeed | None = None


def pod_images(pod: Mapping[str, Any]) -> list[str]:
    """Every image of a pod's init, regular and ephemeral containers, in spec order."""
    spec = pod.get("spec")
    images: list[str] = []
    if not is_object(spec):
        return images
    for fld in CONTAINER_FIELDS:
        containers = spec.get(fld)
        if not isinstance(containers, list):
            continue
        for c in containers:
            image = c.get("image") if is_object(c) else None
            if isinstance(image, str) and image:
                images.append(image)
    return images


def pod_service_account(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec")
    if is_object(spec):
        for key in ("serviceAccountName", "serviceAccount"):
            sa = spec.get(key)
            if isinstance(sa, str) and sa:
                return sa
    return "default"


def identity_for(entry: Entry, service_account: str) -> Identity:
    if entry.per_pod_identity:
        return Identity(key=f"sa:{service_account}", service_account=service_account)
    return Identity(key=entry.identity())


def secret_name(prefix: str, entry: Entry, host: str, identity: Identity) -> str:
    """``<prefix>-<readable host>-<hash of entry, host, identity>``, at most 63 characters."""
    digest = hashlib.sha256(f"{entry.name}\0{host}\0{identity.key}".encode()).hexdigest()
    slug = re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")
    room = SECRET_NAME_MAX - len(prefix) - _HASH_LEN - 2
    slug = slug[:room].rstrip("-") or "registry"
    return f"{prefix}-{slug}-{digest[:_HASH_LEN]}"


def match_image(config: Config, image: str, service_account: str = "default") -> ImageMatch:
    """Parse an image and find the entry, identity and secret name it would get."""
    try:
        ref = parse_image(image)
    except InvalidReference as e:
        return ImageMatch(image=image, ref=None, error=str(e))
    entry = config.entry_for(ref.domain)
    if entry is None:
        return ImageMatch(image=image, ref=ref, error="no registry entry matches")
    need = PullNeed.make(
        entry,
        ref.domain,
        prefix=config.secret_prefix,
        service_account=service_account,
        images=(image,),
    )
    return ImageMatch(image=image, ref=ref, need=need)


class _MatchCache:
    """Answers for one config, bounded (oldest forgotten first): ``match_image`` per
    (image, service account), and ``pull_needs`` per (images, service account), since the
    pods of one workload repeat the same image list."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], ImageMatch] = {}
        self.needs: dict[tuple[tuple[str, ...], str], tuple[PullNeed, ...]] = {}

    def get(self, config: Config, image: str, service_account: str) -> ImageMatch:
        key = (image, service_account)
        found = self.answers.get(key)
        if found is None:
            found = remember(
                self.answers, key, match_image(config, image, service_account), MATCH_CACHE_SIZE
            )
        return found

    def pull_needs(
        self, config: Config, images: tuple[str, ...], service_account: str
    ) -> tuple[PullNeed, ...]:
        key = (images, service_account)
        found = self.needs.get(key)
        if found is None:
            matches = [self.get(config, image, service_account) for image in images]
            needs = _merge(matches)
            if not valid_service_account_name(service_account):
                # No ServiceAccount can have this name (the API server refuses such a pod
                # after admission): a forged review naming "kube-system:x" or "../x" gets
                # no per-pod identity, and no such name ever reaches an API path.
                needs = tuple(n for n in needs if not n.identity.service_account)
            found = remember(self.needs, key, needs, MATCH_CACHE_SIZE)
        return found


def _cache_for(config: Config) -> _MatchCache:
    cache = config.memo.get("needs")
    if not isinstance(cache, _MatchCache):
        cache = config.memo["needs"] = _MatchCache()
    return cache


def match_images(
    config: Config, images: Iterable[str], service_account: str = "default"
) -> list[ImageMatch]:
    """Parse each image and find the entry, identity and secret name it would get."""
    cache = _cache_for(config)
    return [cache.get(config, image, service_account) for image in images]


def pull_needs(config: Config, pod: Mapping[str, Any]) -> list[PullNeed]:
    """The distinct secrets a pod needs, in first-seen image order."""
    return list(pod_needs(config, pod))


def pod_needs(config: Config, pod: Mapping[str, Any]) -> tuple[PullNeed, ...]:
    """``pull_needs`` as the admission path keeps it: the remembered answer itself (pods
    of one workload repeat the same images and service account)."""
    images = tuple(pod_images(pod))
    return _cache_for(config).pull_needs(config, images, pod_service_account(pod))


#: A ServiceAccount's name is a DNS subdomain (RFC 1123; Kubernetes' ValidateServiceAccountName).
_SERVICE_ACCOUNT_NAME = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def valid_service_account_name(name: str) -> bool:
    return len(name) <= 253 and _SERVICE_ACCOUNT_NAME.fullmatch(name) is not None


def _merge(matches: Iterable[ImageMatch]) -> tuple[PullNeed, ...]:
    by_name: dict[str, PullNeed] = {}
    for m in matches:
        if m.need is None:
            continue
        seen = by_name.get(m.need.secret_name)
        if seen is None:
            by_name[m.need.secret_name] = m.need
        elif m.image not in seen.images:
            by_name[m.need.secret_name] = replace(seen, images=(*seen.images, m.image))
    return tuple(by_name.values())
