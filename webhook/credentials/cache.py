"""The expiry-aware credential cache: one exchange per key at a time, refresh ahead
of expiry, retries inside a deadline, and a short memory of failures.

Keys come from the providers: ACR per (entry, identity, host, scope), ECR per
(entry, principal, region) because one ECR token serves every ECR registry the
principal may read, generic per (entry, host). Per-pod identities add the pod's
namespace, so one namespace never receives another's credential.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from webhook.admission.needs import PullNeed
from webhook.config.acr import AcrEntry
from webhook.config.entry import Entry
from webhook.config.kinds import kind_of
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials.base import (
    EXPIRY_MARGIN,
    Credential,
    Provider,
    ProviderContext,
    RegistryAuthError,
    SecretReader,
    ServiceAccountTokens,
    principal_for,
)
from webhook.credentials.retry import RetryPolicy, with_retries

if TYPE_CHECKING:
    from webhook.credentials.acr import AcrProvider

log = logging.getLogger(__name__)

#: After a transient failure (outage, throttling) callers get the same error for
#: 5 s instead of a new exchange: a Deployment scaling to hundreds of pods during an
#: outage then costs the cloud one attempt per 5 s per key, not one per pod.
NEGATIVE_TTL_TRANSIENT = 5.0
#: A permanent failure (missing role, wrong secret) needs a human fix; 15 s keeps
#: the cloud quiet meanwhile yet picks the fix up quickly.
NEGATIVE_TTL_PERMANENT = 15.0
#: An exchange keeps retrying in the background for up to 30 s even when the
#: admission that started it gave up earlier (its budget is ~6 s): the secret is
#: then made for the kubelet's next pull retry. 30 s is the API server's maximum
#: webhook timeout, so a new admission never waits on an older, longer attempt.
EXCHANGE_BUDGET = 30.0
#: Per-pod identities make a key per (namespace, service account). Every 256
#: exchanges, keys whose credential has expired and whose failure is forgotten are
#: dropped, so the cache follows the live workloads instead of all past ones.
PRUNE_EVERY = 256
#: How often ``keep_ahead`` looks for work: the hosts of ``prefetch`` entries of a
#: configuration it has not seen yet, and credentials in use whose refresh point came.
#: A refresh point is a fraction of a lifetime of an hour or more, so 5 s late is nothing.
AHEAD_SECONDS = 5.0


E = TypeVar("E", bound=Entry)


def import_providers(config: Config) -> None:
    """Import the provider modules of the kinds ``config`` names, now.

    They pull in azure-identity and boto3 (~0.2 s of CPU each here, more on a busy node).
    Imported by the first admission that needs them, they would stop the event loop at
    the worst moment, a burst of new pods: every admission in flight and the readiness
    probe with it. ``serve`` calls this before it forks its workers, so they share the
    modules; their memory is what the first such pod would cost anyway. A kind a config
    reload adds later is imported when first needed.
    """
    for module in sorted({kind_of(type(entry)).provider for entry in config.registries}):
        importlib.import_module(module)


@dataclass
class _Slot:
    credential: Credential | None = None
    recheck_at: float = float("inf")
    """When the provider wants its source looked at again (``recheck_seconds``)."""
    error: RegistryAuthError | None = None
    error_until: float = 0.0
    task: asyncio.Task[Credential | RegistryAuthError] | None = None
    retrying: RegistryAuthError | None = None
    """The in-flight exchange's last transient failure (for timeout messages)."""
    need: PullNeed | None = None
    """The latest need of the webhook's own identity this key served: what a refresh
    ahead exchanges for (never set for per-pod identities)."""
    used: bool = False
    """Asked for since the last exchange ahead began: a credential no admission and no
    renewal asks for is not exchanged ahead again."""


class CredentialCache:
    """Credentials for pull needs, exchanged at most once per key at a time."""

    def __init__(
        self,
        store: ConfigStore,
        secrets: SecretReader | None = None,
        tokens: ServiceAccountTokens | None = None,
        *,
        clock: Callable[[], float] = time.time,
        fraction: float | None = None,
        retry: RetryPolicy | None = None,
        exchange_budget: float = EXCHANGE_BUDGET,
        providers: Mapping[type[Entry], Provider[Any]] | None = None,
        on_exchange: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``store`` is where reloads go: ``refresh.fraction`` and the settings a provider
        is built from (``caFile``) are read from it at use. ``fraction`` fixes the former
        instead (tests)."""
        self._store = store
        self._secrets = secrets
        self._tokens = tokens
        self._clock = clock
        self._fixed_fraction = fraction
        self._retry = retry or RetryPolicy()
        self._budget = exchange_budget
        # By entry type: each need goes to the provider typed for its entry's class
        # (``provider``); ``providers`` replaces some of them (tests).
        self._providers: dict[type[Entry], Provider[Any]] = dict(providers or {})
        self._injected = frozenset(self._providers)
        self._built_from: dict[type[Entry], ProviderContext] = {}
        """What each provider was made from: a reload that changes it (``caFile``) makes a
        new provider, and the old one is closed once its exchanges are over."""
        self._retiring: set[asyncio.Task[None]] = set()
        self._slots: dict[Hashable, _Slot] = {}
        self._closed = False
        self._on_exchange = on_exchange
        """Told (entry name, succeeded) after each exchange, for metrics."""
        self._ahead: asyncio.Task[None] | None = None
        self.exchanges = 0
        """Exchanges started (successful or not), for metrics and tests."""

    # -- providers ---------------------------------------------------------------

    @property
    def fraction(self) -> float:
        """The share of a credential's lifetime after which it is renewed, now."""
        if self._fixed_fraction is not None:
            return self._fixed_fraction
        return self._store.current.refresh.fraction

    def _refresh_at(self, slot: _Slot) -> float:
        if slot.credential is None:
            return 0.0
        return min(slot.credential.refresh_at(self.fraction), slot.recheck_at)

    def provider(self, entry_type: type[E]) -> Provider[E]:
        """The provider of an entry type's kind, made on first use from the kind's row
        (``webhook.config.kinds``), and made again when what it was made from changed."""
        context = ProviderContext(
            self._store.current.ca_file, self._secrets, self._tokens, self._clock
        )
        found = self._providers.get(entry_type)
        if found is not None:
            if entry_type in self._injected or self._built_from[entry_type] == context:
                return found
            self._retire(found)
        module = importlib.import_module(kind_of(entry_type).provider)
        make: Callable[[ProviderContext], Provider[E]] = module.make
        made = make(context)
        self._providers[entry_type] = made
        self._built_from[entry_type] = context
        return made

    def _retire(self, provider: Provider[Any]) -> None:
        """Close a provider a reload replaced, after the exchanges it may still be serving
        (each ends within the exchange budget)."""

        async def close_later() -> None:
            try:
                await asyncio.sleep(self._budget)
            finally:
                await provider.aclose()

        task = asyncio.get_running_loop().create_task(close_later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def acr_provider(self) -> AcrProvider:
        """The ACR provider itself, for the steps only it has (``doctor``'s Entra ID check)."""
        from webhook.credentials.acr import AcrProvider

        provider = self.provider(AcrEntry)
        if not isinstance(provider, AcrProvider):
            raise TypeError(f"the acr provider is a {type(provider).__name__}")
        return provider

    def _key(self, need: PullNeed, namespace: str) -> Hashable:
        return self.provider(type(need.entry)).cache_key(need, namespace)

    # -- reading -----------------------------------------------------------------

    def _usable(self, credential: Credential | None) -> Credential | None:
        if credential is not None and credential.expires_at - EXPIRY_MARGIN > self._clock():
            return credential
        return None

    async def get(
        self, need: PullNeed, namespace: str, *, deadline: float | None = None
    ) -> Credential:
        """A credential for ``need`` in ``namespace``, exchanging only when the cached
        one is past its refresh point. ``deadline`` is an absolute ``time.monotonic()``;
        past it RegistryAuthError(code="timeout", transient=True) is raised, unless a
        still-valid older credential can be returned instead."""
        if self._closed:
            raise RuntimeError("CredentialCache is closed")
        key = self._key(need, namespace)
        slot = self._slots.setdefault(key, _Slot())
        if not need.identity.service_account:
            slot.need, slot.used = need, True
        now = self._clock()
        if slot.credential is not None and now < self._refresh_at(slot):
            return _for_host(slot.credential, need)
        fallback = self._usable(slot.credential)
        if slot.task is None:
            if slot.error is not None and now < slot.error_until:
                if fallback is not None:
                    return _for_host(fallback, need)
                raise slot.error.copy()
            slot.task = asyncio.create_task(self._exchange(slot, need, namespace))
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            result = await asyncio.wait_for(asyncio.shield(slot.task), timeout)
        except TimeoutError:
            if fallback is not None:
                return _for_host(fallback, need)
            raise _timeout(need, namespace, slot.retrying) from None
        if isinstance(result, RegistryAuthError):
            if result.transient and fallback is not None:
                return _for_host(fallback, need)
            raise result.copy()
        return _for_host(result, need)

    # -- ahead of need -------------------------------------------------------------

    def start(self) -> None:
        """Keep credentials ahead of need from now on (``keep_ahead``), until ``aclose``."""
        if self._ahead is None:
            self._ahead = asyncio.get_running_loop().create_task(self.keep_ahead())

    async def keep_ahead(self, period: float = AHEAD_SECONDS) -> None:
        """Exchange credentials before an admission has to wait for them.

        - **Prefetch:** each host of each entry with ``prefetch`` (the default for
          entries minted as the webhook's own identity), once per configuration: at
          start, and for what a reload adds or changes. The first pods of a new
          namespace then wait for their Secret's create, not for the identity round
          trips (Entra ID then ACR, STS then ECR: 0.1-1 s each in the clouds).
        - **Refresh ahead:** a credential of the webhook's own identity that was asked
          for since its last exchange is exchanged again when its refresh point comes,
          in the background; until then admissions are served from it. One that nobody
          asked for lapses (the next need exchanges it, as without this).

        A failure is remembered as any other (the next admission gets it until its short
        memory passes, then tries itself); it is not retried ahead until asked for again,
        so an identity endpoint that is down sees no more calls from here than from
        admissions. Per-pod identities are only ever exchanged for their pods."""
        seen: Config | None = None
        while not self._closed:
            config = self._store.current
            if config is not seen:
                seen = config
                for need in prefetched(config):
                    self._ahead_of(need)
            self._refresh_due(config, 2 * period)
            await asyncio.sleep(period)

    def _ahead_of(self, need: PullNeed, lead: float = 0.0) -> None:
        """Start ``need``'s exchange in the background unless its credential stays fresh
        for ``lead`` seconds more, an exchange is already under way, or a failure is
        still remembered."""
        slot = self._slots.setdefault(self._key(need, ""), _Slot())
        slot.need = need
        now = self._clock()
        if slot.task is not None or (
            slot.credential is not None and now < self._refresh_at(slot) - lead
        ):
            return
        if slot.error is not None and now < slot.error_until:
            return
        slot.used = False  # from here on, asked for again or left to lapse
        slot.task = asyncio.create_task(self._exchange(slot, need, ""))

    def _refresh_due(self, config: Config, lead: float) -> None:
        """Exchange again, ``lead`` seconds before its refresh point (so that admissions
        are served from the old one meanwhile), each credential asked for since its last
        exchange ahead; a quarter of the way to the point at most, for short lifetimes."""
        now = self._clock()
        entries = config.registries
        for slot in list(self._slots.values()):
            need, credential = slot.need, slot.credential
            if need is None or not slot.used or credential is None:
                continue
            if need.entry not in entries:  # one a reload removed or changed
                continue
            point = self._refresh_at(slot)
            early = min(lead, max(point - credential.issued_at, 0.0) / 4)
            if now >= point - early:
                self._ahead_of(need, lead=early)

    # -- exchanging --------------------------------------------------------------

    async def _exchange(
        self, slot: _Slot, need: PullNeed, namespace: str
    ) -> Credential | RegistryAuthError:
        """The single in-flight exchange of a key; its outcome is stored in ``slot``."""
        provider = self.provider(type(need.entry))
        identity = principal_for(need, namespace)
        self.exchanges += 1
        try:
            credential = await with_retries(
                lambda attempt: provider.fetch(need, namespace, attempt),
                entry=need.entry.name,
                identity=identity,
                deadline=time.monotonic() + self._budget,
                policy=self._retry,
                on_retry=lambda error: setattr(slot, "retrying", error),
            )
            if credential.expires_at <= self._clock():
                raise RegistryAuthError(
                    entry=need.entry.name,
                    identity=identity,
                    step="expiry",
                    code="expired-on-arrival",
                    message="the new credential's expiry is already past by the local clock",
                    hint="check the node's clock (NTP); tokens are dated by the issuer's",
                )
        except RegistryAuthError as e:
            ttl = NEGATIVE_TTL_TRANSIENT if e.transient else NEGATIVE_TTL_PERMANENT
            slot.error, slot.error_until = e, self._clock() + ttl
            if not e.transient:
                # Revoked or misconfigured: stop handing out what we had.
                slot.credential = None
            log.warning("%s", e)
            if self._on_exchange is not None:
                self._on_exchange(need.entry.name, False)
            return e
        finally:
            slot.task, slot.retrying = None, None
            # Safe here: nothing awaits between a get() taking a slot and starting its task.
            if self.exchanges % PRUNE_EVERY == 0:
                self.prune()
        slot.credential, slot.error = credential, None
        slot.recheck_at = float("inf")
        if self._on_exchange is not None:
            self._on_exchange(need.entry.name, True)
        if provider.recheck_seconds is not None:
            slot.recheck_at = self._clock() + provider.recheck_seconds
        log.info(
            "credential for entry %s as %s (%s) valid for %.0fs",
            need.entry.name,
            identity,
            need.host,
            credential.expires_at - self._clock(),
        )
        return credential

    def prune(self) -> int:
        """Drop keys with nothing usable or remembered; returns how many."""
        now = self._clock()
        stale = [
            key
            for key, slot in self._slots.items()
            if slot.task is None
            and self._usable(slot.credential) is None
            and now >= slot.error_until
        ]
        for key in stale:
            del self._slots[key]
        return len(stale)

    async def __aenter__(self) -> CredentialCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop in-flight exchanges and close every provider's sessions."""
        self._closed = True
        if self._ahead is not None:
            self._ahead.cancel()
            await asyncio.gather(self._ahead, return_exceptions=True)
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        retiring = list(self._retiring)
        for closing in retiring:
            closing.cancel()  # closes its provider now
        await asyncio.gather(*retiring, return_exceptions=True)
        for provider in self._providers.values():
            await provider.aclose()


def prefetched(config: Config) -> list[PullNeed]:
    """The needs ``keep_ahead`` exchanges before any pod asks: each listed host of each
    entry with ``prefetch`` (per-pod identities never have it; an ``anyRegistry`` family's
    hosts are not known before a pod names one)."""
    return [
        PullNeed.make(entry, host, prefix=config.secret_prefix)
        for entry in config.registries
        if entry.prefetch and not entry.per_pod_identity
        for host in sorted(entry.rule.hosts)
    ]


def _timeout(need: PullNeed, namespace: str, last: RegistryAuthError | None) -> RegistryAuthError:
    """The caller's deadline passed; say what the exchange is struggling with, if known."""
    message = "no credential before the deadline; still trying"
    if last is not None:
        message += f" (last attempt: {' '.join(filter(None, (last.code, last.message)))})"
    return RegistryAuthError(
        entry=need.entry.name,
        identity=principal_for(need, namespace),
        step=last.step if last else "exchange",
        code="timeout",
        message=message,
        hint=last.hint if last else "",
        transient=True,
    )


def _for_host(credential: Credential, need: PullNeed) -> Credential:
    """The credential labelled with the host it was asked for (an ECR token is shared
    by every host of its principal and region)."""
    if credential.hosts == (need.host,):
        return credential
    return dataclasses.replace(credential, hosts=(need.host,))
