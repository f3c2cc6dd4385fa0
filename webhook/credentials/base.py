"""What every credential provider shares: the Credential, the error type, and the
small interfaces the providers need from Kubernetes.

Providers turn an identity into registry credentials in one attempt
(``Provider.fetch``); retries, caching and single-flight live in ``cache.py``.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from webhook.admission.needs import PullNeed
from webhook.config.entry import Entry
from webhook.kube.objects import SecretData
from webhook.telemetry import redact

#: A credential is handed out (and a pull secret counts as fresh) only while it has a
#: minute left: a pull that starts with it must still authenticate its last layer
#: request.
EXPIRY_MARGIN = 60.0

#: The Docker username ACR expects with a token obtained from ``/oauth2/exchange``
#: (documented in the ACR authentication guide: the null GUID).
ACR_USERNAME = "00000000-0000-0000-0000-000000000000"

#: Remote error text is cut to this many characters before it reaches a message:
#: enough for an AADSTS description or an AWS message, never a whole HTML page.
MESSAGE_LIMIT = 240
#: An error code (an HTTP status, AADSTS70011, AccessDeniedException) is short.
CODE_LIMIT = 64


@dataclass(frozen=True)
class Credential:
    """A registry username/password pair and when it stops working."""

    username: str
    password: str = field(repr=False)
    hosts: tuple[str, ...]
    """The registry host(s) the credential was asked for."""
    expires_at: float
    """Unix seconds after which the registry refuses it."""
    issued_at: float
    """Unix seconds when it was obtained (by the local clock)."""

    def __post_init__(self) -> None:
        # Whatever a remote endpoint echoes later, this password (and the base64 of
        # user:password a dockerconfigjson or an ECR token carries) never reaches a line.
        redact.remember(self.password, username=self.username)

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    def refresh_at(self, fraction: float) -> float:
        """When ``fraction`` of the lifetime has passed and a new one should be made."""
        return self.issued_at + fraction * max(self.lifetime, 0.0)


def scrub(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """One line of remote text with every secret the webhook holds and anything
    token-shaped removed (``webhook.telemetry.redact``), then cut to ``limit`` (cut after, so a
    secret is never cut into a prefix no rule recognises)."""
    text = redact.scrub(text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RegistryAuthError(Exception):
    """An identity could not be exchanged for registry credentials.

    ``step`` names the protocol step that failed (``entra-token``, ``imds``,
    ``acr-exchange``, ``acr-scoped-token``, ``ecr-get-authorization-token``,
    ``sts-assume-role``, ``sts-assume-role-with-web-identity``, ``read-secret``,
    ``service-account``, ``service-account-token``); ``code`` is what the remote
    side said (HTTP status, AADSTS code, AWS error code) or ``timeout`` /
    ``connection``. ``transient`` errors are worth retrying; the others need a
    change of configuration or permissions, which ``hint`` suggests.
    """

    def __init__(
        self,
        *,
        entry: str,
        identity: str,
        step: str,
        code: str,
        message: str = "",
        hint: str = "",
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.entry = entry
        self.identity = identity
        self.step = step
        # The code is remote text too (an AWS error code, a status): scrubbed and cut.
        self.code = scrub(code, CODE_LIMIT)
        self.message = scrub(message)
        self.hint = hint
        self.transient = transient
        self.retry_after = retry_after
        super().__init__(self.__str__())

    def __str__(self) -> str:
        kind = "transient" if self.transient else "permanent"
        text = f"registry entry {self.entry} as {self.identity}: {self.step} failed ({kind}): "
        text += self.code
        if self.message:
            text += f" {self.message}"
        if self.hint:
            text += f" — hint: {self.hint}"
        return text

    def copy(self) -> RegistryAuthError:
        """A fresh instance to raise again (one instance raised from many tasks would
        share and grow one traceback)."""
        return RegistryAuthError(
            entry=self.entry,
            identity=self.identity,
            step=self.step,
            code=self.code,
            message=self.message,
            hint=self.hint,
            transient=self.transient,
            retry_after=self.retry_after,
        )


@dataclass
class Attempt:
    """One try at an exchange: who it is for, its deadline, and the step in progress."""

    entry: str
    identity: str
    deadline: float
    """Absolute ``time.monotonic()`` by which the attempt must be over."""
    step: str = "start"

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def error(
        self,
        code: str,
        message: str = "",
        *,
        hint: str = "",
        transient: bool = False,
        retry_after: float | None = None,
    ) -> RegistryAuthError:
        return RegistryAuthError(
            entry=self.entry,
            identity=self.identity,
            step=self.step,
            code=code,
            message=message,
            hint=hint,
            transient=transient,
            retry_after=retry_after,
        )


class SecretReader(Protocol):
    """Reads Secrets the webhook is told about (credentials, never pull secrets).

    Return None when the Secret does not exist. API failures raise a
    ``webhook.kube.errors.ApiError`` (its class says which: ``ForbiddenError``, ...).
    """

    async def read_secret(self, namespace: str, name: str) -> SecretData | None: ...


class ServiceAccountTokens(Protocol):
    """TokenRequest and ServiceAccount reads, for per-pod identities.

    Errors follow the SecretReader convention (a ``webhook.kube.errors.ApiError``).
    """

    async def token(
        self, namespace: str, service_account: str, audience: str, expiration_seconds: int
    ) -> str: ...

    async def service_account_annotations(
        self, namespace: str, name: str
    ) -> Mapping[str, str] | None:
        """The ServiceAccount's annotations, or None when it does not exist."""
        ...


@dataclass(frozen=True)
class ProviderContext:
    """What a provider is made from (each provider module's ``make(context)``). A reload
    that changes ``ca_file`` makes every provider again."""

    ca_file: str = ""
    """Extra CA bundle to trust for outbound TLS (the config's ``caFile``), or empty."""
    secrets: SecretReader | None = None
    """Where Secrets are read (None: nowhere, outside a cluster)."""
    tokens: ServiceAccountTokens | None = None
    """Where ServiceAccounts and their tokens are read (None: nowhere)."""
    clock: Callable[[], float] = time.time


#: The kind of entry a provider serves; the cache hands it only needs of that kind.
EntryT_contra = TypeVar("EntryT_contra", bound=Entry, contravariant=True)


class Provider(Protocol[EntryT_contra]):
    """Makes credentials of one registry kind, one attempt at a time."""

    recheck_seconds: float | None
    """Re-run ``fetch`` at least this often even when the credential is fresh
    (for sources that can change without notice); None: only near expiry."""

    def cache_key(self, need: PullNeed[EntryT_contra], namespace: str) -> Hashable:
        """What makes two needs share one credential."""
        ...

    async def fetch(
        self, need: PullNeed[EntryT_contra], namespace: str, attempt: Attempt
    ) -> Credential:
        """One exchange; raises RegistryAuthError (built with ``attempt.error``)."""
        ...

    async def aclose(self) -> None: ...


#: One token request rarely takes more than a second; 10 s leaves room for a slow
#: region and still allows a retry inside the exchange budget.
REQUEST_TIMEOUT = 10.0
#: A request's timeout never goes below 0.1 s: 0 would mean "no timeout" to aiohttp,
#: and the attempt's own deadline ends the request anyway.
MIN_REQUEST_TIMEOUT = 0.1


class HttpProvider:
    """What the providers that make their own HTTPS requests (acr, gar) share: made
    from the context alone (``make``, the kind's entry point), a timeout per request
    cut to what the attempt has left, the context's clock and stores."""

    recheck_seconds: float | None = None

    def __init__(
        self, context: ProviderContext, *, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self._ca_file = context.ca_file
        self._secrets = context.secrets
        self._tokens = context.tokens
        self._clock = context.clock
        self._timeout = request_timeout

    @classmethod
    def make(cls, context: ProviderContext) -> Self:
        """The kind's provider (``webhook.config.kinds``): its module's ``make``."""
        return cls(context)

    def _request_timeout(self, attempt: Attempt) -> float:
        """One request's timeout: the provider's, or what ``attempt`` has left if less."""
        return min(self._timeout, max(attempt.remaining(), MIN_REQUEST_TIMEOUT))


def ssl_context(ca_file: str) -> ssl.SSLContext:
    """System CAs plus ``ca_file`` (an extra bundle, e.g. a TLS-inspecting proxy's CA)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified: only to read ``exp``/``iat`` of a token we
    were just handed over TLS by its issuer. Empty when it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def principal_for(need: PullNeed, namespace: str) -> str:
    """Who the credential is minted as: the entry identity, or ``ns/sa`` per pod."""
    if need.identity.service_account:
        return f"{namespace}/{need.identity.service_account}"
    return need.identity.key
