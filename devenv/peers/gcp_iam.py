"""The emulated Google Cloud IAM: service accounts and their keys, workload identity
pools, IAM bindings, and every access token the emulator has issued.

Google's OAuth 2.0 access tokens are opaque strings that only Google can resolve;
here each one maps to an ``IssuedToken`` (who it stands for, its scopes, its expiry),
so the registry front accepts exactly the tokens this emulator issued and nothing
else. Identities are IAM member strings as Google writes them in policies:
``serviceAccount:EMAIL`` for a service account, and for a federated workload
``principal://iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/subject/SUBJECT``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devenv.peers import jws
from devenv.peers.tls import key_pem, new_rsa_key

#: Google access tokens (metadata server, STS, IAM Credentials, OAuth 2.0) are issued for
#: an hour by default (``expires_in`` 3599 from the metadata server and the OAuth 2.0
#: endpoint, 3600 from STS; generateAccessToken's default lifetime is 3600 s).
DEFAULT_TOKEN_LIFETIME = 3599
#: generateAccessToken accepts lifetimes up to 3600 s (12 h only with an org policy
#: exception, which the emulator does not model).
MAX_IMPERSONATION_LIFETIME = 3600
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Roles whose permissions include ``iam.serviceAccounts.getAccessToken`` (Google's
#: predefined roles reference): who may impersonate a service account.
TOKEN_CREATOR_ROLES = frozenset(
    {"roles/iam.serviceAccountTokenCreator", "roles/iam.workloadIdentityUser"}
)
#: Roles whose permissions include ``artifactregistry.repositories.downloadArtifacts``.
PULL_ROLES = frozenset(
    {
        "roles/artifactregistry.reader",
        "roles/artifactregistry.writer",
        "roles/artifactregistry.repoAdmin",
        "roles/artifactregistry.admin",
    }
)
#: Roles that may also upload (``artifactregistry.repositories.uploadArtifacts``).
PUSH_ROLES = PULL_ROLES - {"roles/artifactregistry.reader"}


@dataclass
class ServiceAccount:
    email: str
    unique_id: str
    keys: dict[str, jws.PublicKey] = field(default_factory=dict)
    """User-managed keys by key id (``private_key_id`` of the key file)."""

    @property
    def member(self) -> str:
        return f"serviceAccount:{self.email}"


@dataclass
class Provider:
    """An OIDC provider of a workload identity pool."""

    project_number: str
    pool: str
    provider: str
    issuer: str
    allowed_audiences: tuple[str, ...]
    keys: list[tuple[str | None, jws.PublicKey]]
    """The issuer's signing keys (its JWKS, as uploaded with ``--jwk-json-path``)."""

    @property
    def name(self) -> str:
        """The provider's resource name, as STS's ``audience`` parameter carries it."""
        return (
            f"//iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool}/providers/{self.provider}"
        )

    def principal(self, subject: str) -> str:
        return (
            f"principal://iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool}/subject/{subject}"
        )


@dataclass(frozen=True)
class IssuedToken:
    member: str
    """Who the token stands for (an IAM member string)."""
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    via: str
    """Which endpoint issued it: metadata, sts, iamcredentials, oauth2."""


class GoogleIam:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.providers: dict[str, Provider] = {}
        # resource ("serviceAccount:EMAIL" or "repository:PROJECT/REPO") → role → members
        self.bindings: dict[str, dict[str, set[str]]] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME

    # --- identities -----------------------------------------------------------------

    def add_service_account(self, email: str) -> ServiceAccount:
        account = ServiceAccount(email, str(uuid.uuid4().int)[:21])
        self.service_accounts[email] = account
        return account

    def create_key(self, email: str, token_uri: str) -> dict[str, Any]:
        """A user-managed key, as the JSON key file ``gcloud iam service-accounts keys
        create`` writes (``token_uri`` is where its JWTs are exchanged)."""
        account = self.service_accounts[email]
        key = new_rsa_key()
        key_id = secrets.token_hex(20)
        account.keys[key_id] = key.public_key()
        project = email.split("@", 1)[1].split(".", 1)[0]
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": key_id,
            "private_key": key_pem(key).decode(),
            "client_email": email,
            "client_id": account.unique_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }

    def add_provider(
        self,
        project_number: str,
        pool: str,
        provider: str,
        *,
        issuer: str,
        jwks: Mapping[str, Any] | Iterable[jws.PublicKey],
        allowed_audiences: Iterable[str] = (),
    ) -> Provider:
        """An OIDC workload identity pool provider. Without ``allowed_audiences`` it
        accepts only its own https name, as Google's default does."""
        unnamed: list[tuple[str | None, jws.PublicKey]] = []
        if not isinstance(jwks, Mapping):
            unnamed = [(None, key) for key in jwks]
        keys = jws.jwks_keys(jwks) if isinstance(jwks, Mapping) else unnamed
        made = Provider(project_number, pool, provider, issuer, tuple(allowed_audiences), keys)
        if not made.allowed_audiences:
            made.allowed_audiences = ("https:" + made.name,)
        self.providers[made.name] = made
        return made

    # --- policies -------------------------------------------------------------------

    def grant(self, resource: str, role: str, member: str) -> None:
        """Binds ``role`` to ``member`` on ``resource``: ``serviceAccount:EMAIL`` or
        ``repository:PROJECT/REPOSITORY``."""
        self.bindings.setdefault(resource, {}).setdefault(role, set()).add(member)

    def revoke(self, resource: str, role: str, member: str) -> None:
        self.bindings.get(resource, {}).get(role, set()).discard(member)

    def has_role(self, resource: str, roles: Iterable[str], member: str) -> bool:
        granted = self.bindings.get(resource, {})
        return any(member in granted.get(role, set()) for role in roles)

    # --- tokens ---------------------------------------------------------------------

    def issue(
        self, member: str, scopes: Iterable[str], via: str, lifetime: int | None = None
    ) -> tuple[str, IssuedToken]:
        now = self.clock()
        issued = IssuedToken(
            member=member,
            scopes=tuple(scopes),
            issued_at=now,
            expires_at=now + (lifetime or self.token_lifetime),
            via=via,
        )
        # Google's access tokens start with "ya29." and are otherwise opaque.
        token = "ya29.emulated-" + secrets.token_urlsafe(48)
        self.tokens[token] = issued
        return token, issued

    def resolve(self, token: str) -> IssuedToken | None:
        """The token's record when this emulator issued it and it has not expired."""
        issued = self.tokens.get(token)
        if issued is None or issued.expires_at <= self.clock():
            return None
        return issued

    def issued(self, via: str | None = None) -> list[IssuedToken]:
        return [t for t in self.tokens.values() if via is None or t.via == via]
