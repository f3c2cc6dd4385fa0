"""One emulated Azure Container Registry login server: its token service and ``/v2/``.

The token service follows ACR's published AAD OAuth flow:
``POST /oauth2/exchange`` turns an Entra access token into an ACR refresh
token; ``POST /oauth2/token`` (refresh_token or password grant) and
``GET /oauth2/token`` with HTTP Basic (what docker and skopeo do with a
username and password) turn that into a repository-scoped access token. Access
tokens are the ES256 JWTs docker-registry's token auth checks offline, so a
real registry behind ``/v2/`` (reverse-proxied, one host like a real login
server) enforces them.
"""

from __future__ import annotations

import datetime
import hmac
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from devenv.peers import jws
from devenv.peers.directory import (
    CONTAINER_REGISTRY_RESOURCE,
    MANAGEMENT_RESOURCE,
    Directory,
    TokenRejected,
)
from devenv.peers.front import proxy, registry_error
from devenv.peers.traffic import ACR_EXCHANGE, ACR_TOKEN, ACR_V2, parse_basic_auth

ACR_ISSUER = "Azure Container Registry"
TOKEN_USERNAME = "00000000-0000-0000-0000-000000000000"
REFRESH_TOKEN_LIFETIME = 3 * 3600  # ACR refresh tokens last about 3 hours
ACCESS_TOKEN_LIFETIME = 75 * 60  # and its access tokens about 75 minutes
ROLE_ACTIONS: Mapping[str, frozenset[str]] = {
    "AcrPull": frozenset({"pull"}),
    "AcrPush": frozenset({"pull", "push"}),
    "AcrDelete": frozenset({"delete"}),
    "Contributor": frozenset({"pull", "push", "delete"}),
    "Owner": frozenset({"pull", "push", "delete"}),
}
_ALL_ACTIONS = frozenset({"pull", "push", "delete"})


class Unauthorized(Exception):
    pass


class TokenSigner:
    """The ES256 key ACR tokens are signed with; its certificate is docker-registry's
    ``rootcertbundle`` and its libtrust key id goes in every token's ``kid``."""

    def __init__(self, key: jws.PrivateKey, certificate_pem: bytes) -> None:
        self.key = key
        self.certificate_pem = certificate_pem
        self.kid = jws.libtrust_kid(key.public_key())

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jws.sign({"typ": "JWT", "alg": "ES256", "kid": self.kid}, claims, self.key)

    def verify(self, token: str, audience: str, now: float) -> dict[str, Any]:
        try:
            decoded = jws.decode_unverified(token)
        except jws.JwtError as exc:
            raise Unauthorized("malformed token") from exc
        if not jws.verify_signature(decoded, self.key.public_key()):
            raise Unauthorized("token signature is not valid")
        claims = decoded.claims
        if claims.get("iss") != ACR_ISSUER or claims.get("aud") != audience:
            raise Unauthorized("token was not issued for this registry")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise Unauthorized("token has expired")
        return claims


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    @classmethod
    def parse_all(cls, values: Collection[str]) -> list[Scope]:
        scopes = []
        for value in values:
            for item in value.split():
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                if kind and name:
                    scopes.append(cls(kind, name, frozenset(a for a in actions.split(",") if a)))
        return scopes


@dataclass
class BasicUser:
    password: str
    repositories: Mapping[str, frozenset[str]] | None  # None: every action on every repository


Grants = Callable[[str], frozenset[str]]


class AcrRegistry:
    def __init__(
        self, name: str, login_server: str, directory: Directory, signer: TokenSigner
    ) -> None:
        self.name = name
        self.login_server = login_server
        self.realm = f"https://{login_server}/oauth2/token"
        self.upstream: str | None = None
        self.directory = directory
        self.signer = signer
        self.role_assignments: dict[str, set[str]] = {}
        self.basic_users: dict[str, BasicUser] = {}
        self.refresh_token_lifetime = REFRESH_TOKEN_LIFETIME
        self.access_token_lifetime = ACCESS_TOKEN_LIFETIME
        self.proxy_session: aiohttp.ClientSession | None = None

    # --- configuration ------------------------------------------------------------

    def assign_role(self, principal_id: str, role: str = "AcrPull") -> None:
        """Grants ``role`` to a principal, named by object id (or client id) as in Azure RBAC."""
        if role not in ROLE_ACTIONS:
            raise ValueError(f"unknown role {role!r}; known: {sorted(ROLE_ACTIONS)}")
        self.role_assignments.setdefault(principal_id, set()).add(role)

    def remove_role(self, principal_id: str, role: str | None = None) -> None:
        roles = self.role_assignments.get(principal_id, set())
        roles.difference_update(roles if role is None else {role})

    def add_basic_user(
        self,
        username: str,
        password: str,
        repositories: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """A static credential (admin user, or a repository-scoped token when
        ``repositories`` maps names to actions)."""
        scoped = (
            None if repositories is None else {k: frozenset(v) for k, v in repositories.items()}
        )
        self.basic_users[username] = BasicUser(password, scoped)

    def role_actions(self, *principal_ids: str) -> frozenset[str]:
        roles = set().union(*(self.role_assignments.get(p, set()) for p in principal_ids))
        return frozenset().union(*(ROLE_ACTIONS[r] for r in roles))

    # --- tokens -------------------------------------------------------------------

    def _base_claims(self, subject: str, lifetime: int) -> dict[str, Any]:
        now = int(self.directory.clock())
        return {
            "jti": str(uuid.uuid4()),
            "sub": subject,
            "nbf": now,
            "exp": now + lifetime,
            "iat": now,
            "iss": ACR_ISSUER,
            "aud": self.login_server,
        }

    def mint_refresh_token(self, subject: str, *, tenant: str = "", appid: str = "") -> str:
        claims = self._base_claims(subject, self.refresh_token_lifetime) | {
            "version": "1.0",
            "grant_type": "refresh_token",
            "tenant": tenant,
            "appid": appid,
            "permissions": {"actions": ["read"], "notActions": []},
            "roles": [],
        }
        return self.signer.sign(claims)

    def mint_access_token(self, subject: str, scopes: list[Scope], grants: Grants) -> str:
        access = [
            {"type": s.type, "name": s.name, "actions": sorted(s.actions & grants(s.name))}
            for s in scopes
            if s.type == "repository"
        ]
        claims = self._base_claims(subject, self.access_token_lifetime) | {
            "version": "3.0",
            "grant_type": "refresh_token",
            "access": access,
            "roles": [],
        }
        return self.signer.sign(claims)

    def _grants_for_token(self, token: str) -> tuple[str, Grants]:
        claims = self.signer.verify(token, self.login_server, self.directory.clock())
        subject = str(claims.get("sub", ""))
        if "access" in claims:  # an access token used as a credential keeps only what it grants
            granted = {
                entry["name"]: frozenset(entry["actions"])
                for entry in claims["access"]
                if entry.get("type") == "repository"
            }
            return subject, lambda name: granted.get(name, frozenset())
        if claims.get("grant_type") != "refresh_token":
            raise Unauthorized("not an ACR refresh token")
        actions = self.role_actions(subject, str(claims.get("appid", "")))
        return subject, lambda _name: actions

    def _grants_for_password(self, username: str, password: str) -> tuple[str, Grants]:
        if username == TOKEN_USERNAME:
            return self._grants_for_token(password)
        user = self.basic_users.get(username)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            raise Unauthorized("invalid username or password")
        repositories = user.repositories
        if repositories is None:
            return username, lambda _name: _ALL_ACTIONS
        return username, lambda name: repositories.get(name, frozenset())

    # --- HTTP ---------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/oauth2/exchange", self.exchange, name=ACR_EXCHANGE)
        app.router.add_route("*", "/oauth2/token", self.token, name=ACR_TOKEN)
        app.router.add_route("*", "/v2/{tail:.*}", self.proxy, name=ACR_V2)

    def _unauthorized(self, message: str) -> web.Response:
        challenge = f'Bearer realm="{self.realm}",service="{self.login_server}"'
        return registry_error(401, "UNAUTHORIZED", message, {"Www-Authenticate": challenge})

    async def exchange(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "access_token":
            return registry_error(400, "UNSUPPORTED", "grant_type must be access_token")
        if form.get("service") != self.login_server:
            return registry_error(400, "UNSUPPORTED", f"invalid service {form.get('service')!r}")
        aad_token = str(form.get("access_token", ""))
        if not aad_token:
            return registry_error(400, "UNSUPPORTED", "access_token is required")
        try:
            claims = self.directory.validate_access_token(
                aad_token, (CONTAINER_REGISTRY_RESOURCE, MANAGEMENT_RESOURCE)
            )
        except TokenRejected as exc:
            return self._unauthorized(f"invalid AAD access token: {exc}")
        tenant, oid, appid = str(claims["tid"]), str(claims.get("oid")), str(claims.get("appid"))
        if form.get("tenant") and form["tenant"] != tenant:
            return self._unauthorized("the access token was issued by another tenant")
        if "pull" not in self.role_actions(oid, appid):
            return self._unauthorized(
                f"the identity {oid} has no pull permission on registry {self.name}"
            )
        return web.json_response(
            {"refresh_token": self.mint_refresh_token(oid, tenant=tenant, appid=appid)}
        )

    async def token(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            form = await request.post()
            service, scope_values = form.get("service"), [str(v) for v in form.getall("scope", [])]
            grant_type = form.get("grant_type")
        elif request.method == "GET":
            service, scope_values = request.query.get("service"), request.query.getall("scope", [])
            grant_type = None
        else:
            return registry_error(405, "UNSUPPORTED", "method not allowed")
        if service != self.login_server:
            return registry_error(400, "UNSUPPORTED", f"invalid service {service!r}")
        scopes = Scope.parse_all(scope_values)
        try:
            if grant_type == "refresh_token":
                subject, grants = self._grants_for_token(str(form.get("refresh_token", "")))
            elif grant_type == "password":
                username, password = str(form.get("username", "")), str(form.get("password", ""))
                subject, grants = self._grants_for_password(username, password)
            elif grant_type is not None:
                return registry_error(400, "UNSUPPORTED", f"unsupported grant_type {grant_type!r}")
            else:
                basic = parse_basic_auth(request.headers.get("Authorization", ""))
                if basic is None:
                    raise Unauthorized(
                        "authentication required, visit https://aka.ms/acr/authorization for more "
                        "information."
                    )
                subject, grants = self._grants_for_password(*basic)
        except Unauthorized as exc:
            return self._unauthorized(str(exc))
        token = self.mint_access_token(subject, scopes, grants)
        if grant_type is not None:
            return web.json_response({"access_token": token})
        issued = datetime.datetime.fromtimestamp(self.directory.clock(), datetime.UTC)
        return web.json_response(
            {
                "access_token": token,
                "token": token,
                "expires_in": self.access_token_lifetime,
                "issued_at": issued.isoformat().replace("+00:00", "Z"),
            }
        )

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        return await proxy(request, self.proxy_session, self.upstream)
