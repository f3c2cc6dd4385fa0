"""The emulated Entra ID directory: tenants, principals and their credentials,
and the access tokens it signs.

A principal is either an app registration (service principal) or a managed
identity; both have a client (application) id and an object id, and both may
carry federated identity credentials (workload identity). Access tokens are
v1-shaped RS256 JWTs, like the ones Entra issues for Azure resources such as
ACR (``iss`` = https://sts.windows.net/{tenant}/).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509

from devenv.peers import jws
from devenv.peers.tls import new_rsa_key, self_signed_certificate

CONTAINER_REGISTRY_RESOURCE = "https://containerregistry.azure.net"
MANAGEMENT_RESOURCE = "https://management.azure.com"
WORKLOAD_IDENTITY_AUDIENCE = "api://AzureADTokenExchange"
# Entra issues app tokens valid for 60-90 minutes; 3599 s is the common value
# and the low end, which keeps expiry tests short.
DEFAULT_TOKEN_LIFETIME = 3599
# Managed identity tokens from IMDS live about 24 hours.
DEFAULT_IMDS_TOKEN_LIFETIME = 86399
# Tolerated clock difference when checking assertion times, as token
# validators commonly allow.
CLOCK_SKEW = 300


@dataclass(frozen=True)
class FederatedCredential:
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (WORKLOAD_IDENTITY_AUDIENCE,)
    name: str = "federated"


@dataclass
class Principal:
    tenant_id: str
    client_id: str
    object_id: str
    kind: Literal["app", "managed_identity"]
    display_name: str
    secrets: list[str] = field(default_factory=list)
    certificates: list[x509.Certificate] = field(default_factory=list)
    federated: list[FederatedCredential] = field(default_factory=list)
    resource_id: str | None = None


class TokenRejected(Exception):
    """An access token the emulator did not issue, or one that is no longer valid."""


def _new_id() -> str:
    return str(uuid.uuid4())


class Directory:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.tenants: dict[str, dict[str, Principal]] = {}
        self.issuer_keys: dict[str, list[tuple[str | None, jws.PublicKey]]] = {}
        self.token_lifetime = DEFAULT_TOKEN_LIFETIME
        self.imds_token_lifetime = DEFAULT_IMDS_TOKEN_LIFETIME
        self.signing_key = new_rsa_key()
        self.signing_certificate = self_signed_certificate(self.signing_key, "entra-emulator")
        # Entra names its signing keys by the certificate thumbprint, in both kid and x5t.
        self.signing_kid = jws.x5t(self.signing_certificate)

    # --- registration -------------------------------------------------------------

    def add_tenant(self, tenant_id: str | None = None) -> str:
        tenant_id = tenant_id or _new_id()
        self.tenants.setdefault(tenant_id, {})
        return tenant_id

    def _add_principal(self, principal: Principal) -> Principal:
        self.add_tenant(principal.tenant_id)
        self.tenants[principal.tenant_id][principal.client_id] = principal
        return principal

    def register_app(
        self,
        tenant_id: str,
        client_id: str | None = None,
        *,
        secret: str | None = None,
        certificate: x509.Certificate | None = None,
        object_id: str | None = None,
        display_name: str = "app",
    ) -> Principal:
        """An app registration with its service principal (``object_id`` is the SP's)."""
        principal = Principal(
            tenant_id=tenant_id,
            client_id=client_id or _new_id(),
            object_id=object_id or _new_id(),
            kind="app",
            display_name=display_name,
        )
        if secret is not None:
            principal.secrets.append(secret)
        if certificate is not None:
            principal.certificates.append(certificate)
        return self._add_principal(principal)

    def add_managed_identity(
        self,
        tenant_id: str,
        *,
        client_id: str | None = None,
        object_id: str | None = None,
        resource_id: str | None = None,
        display_name: str = "identity",
    ) -> Principal:
        principal = Principal(
            tenant_id=tenant_id,
            client_id=client_id or _new_id(),
            object_id=object_id or _new_id(),
            kind="managed_identity",
            display_name=display_name,
            resource_id=resource_id,
        )
        return self._add_principal(principal)

    def principal(self, tenant_id: str, client_id: str) -> Principal:
        try:
            return self.tenants[tenant_id][client_id]
        except KeyError:
            raise KeyError(f"no principal {client_id} in tenant {tenant_id}") from None

    def add_federated_credential(
        self,
        tenant_id: str,
        client_id: str,
        *,
        issuer: str,
        subject: str,
        audiences: Iterable[str] = (WORKLOAD_IDENTITY_AUDIENCE,),
        name: str = "federated",
    ) -> FederatedCredential:
        credential = FederatedCredential(issuer, subject, tuple(audiences), name)
        self.principal(tenant_id, client_id).federated.append(credential)
        return credential

    def register_issuer_keys(
        self, issuer: str, keys: Mapping[str, Any] | Iterable[jws.PublicKey]
    ) -> None:
        """Keys (a JWKS document or public keys) that federated assertions from
        ``issuer`` must be signed with. Without them only the claims are checked."""
        if isinstance(keys, Mapping):
            self.issuer_keys[issuer] = jws.jwks_keys(keys)
        else:
            self.issuer_keys[issuer] = [(None, key) for key in keys]

    # --- tokens -------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = jws.public_key_to_jwk(self.signing_key.public_key(), self.signing_kid)
        jwk["x5t"] = self.signing_kid
        return {"keys": [jwk]}

    def issue_access_token(
        self,
        principal: Principal,
        resource: str,
        *,
        lifetime: int,
        appidacr: str,
    ) -> tuple[str, int, int]:
        """Returns (token, issued-at, expires-on)."""
        now = int(self.clock())
        issuer = f"https://sts.windows.net/{principal.tenant_id}/"
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": _new_id(),
            "appid": principal.client_id,
            # 1 = authenticated with a secret, 2 = with a certificate or assertion.
            "appidacr": appidacr,
            "idp": issuer,
            "idtyp": "app",
            "oid": principal.object_id,
            "sub": principal.object_id,
            "tid": principal.tenant_id,
            "uti": _new_id(),
            "ver": "1.0",
        }
        if principal.resource_id:
            claims["xms_mirid"] = principal.resource_id
        header = {"typ": "JWT", "alg": "RS256", "x5t": self.signing_kid, "kid": self.signing_kid}
        return jws.sign(header, claims, self.signing_key), now, now + lifetime

    def validate_access_token(self, token: str, audiences: Iterable[str]) -> dict[str, Any]:
        """Claims of a token this directory issued, still valid, for one of ``audiences``
        (compared without a trailing slash: IMDS callers often send ``resource/``)."""
        try:
            decoded = jws.decode_unverified(token)
        except jws.JwtError as exc:
            raise TokenRejected(f"malformed token: {exc}") from exc
        if not jws.verify_signature(decoded, self.signing_key.public_key()):
            raise TokenRejected("token signature is not valid")
        claims = decoded.claims
        now = self.clock()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise TokenRejected("token has expired")
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > now + CLOCK_SKEW:
            raise TokenRejected("token is not valid yet")
        wanted = {a.rstrip("/") for a in audiences}
        if str(claims.get("aud", "")).rstrip("/") not in wanted:
            raise TokenRejected(f"token audience {claims.get('aud')!r} is not accepted")
        tenant = claims.get("tid")
        if not isinstance(tenant, str) or claims.get("iss") != f"https://sts.windows.net/{tenant}/":
            raise TokenRejected("token issuer is not valid")
        return claims
