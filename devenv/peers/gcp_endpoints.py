"""Google's token endpoints as google-auth meets them, over the emulated IAM.

- The metadata server (plain HTTP, every request with ``Metadata-Flavor: Google``, and
  the answer carrying it back): ``/computeMetadata/v1/instance/service-accounts/{acct}/``
  (``?recursive=true``: email, aliases, scopes) and ``.../{acct}/token?scopes=…``, as
  Compute Engine and GKE's Workload Identity metadata server serve them.
- Security Token Service ``POST /v1/token``: the OAuth 2.0 token exchange (RFC 8693
  fields as Google documents them: ``grant_type``, ``audience`` = the pool provider's
  resource name, ``scope``, ``requested_token_type``, ``subject_token``,
  ``subject_token_type``) of an OIDC token from a workload identity pool provider for a
  federated access token; errors are RFC 6749 ``{"error", "error_description"}``.
- IAM Credentials ``POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken``
  (bearer token; JSON ``scope``, ``lifetime``) → ``{"accessToken", "expireTime"}``;
  errors are Google API errors ``{"error": {"code", "message", "status"}}``.
- OAuth 2.0 ``POST /token`` with the JWT bearer grant (RFC 7523) a service account key
  signs.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from aiohttp import web

from devenv.peers import jws
from devenv.peers.gcp_iam import (
    CLOUD_PLATFORM_SCOPE,
    MAX_IMPERSONATION_LIFETIME,
    TOKEN_CREATOR_ROLES,
    GoogleIam,
)
from devenv.peers.traffic import (
    GCP_IAM_CREDENTIALS,
    GCP_METADATA,
    GCP_OAUTH2_TOKEN,
    GCP_STS_TOKEN,
)

METADATA_ROOT = "/computeMetadata/v1/"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: Subject token types STS accepts for an OIDC provider.
OIDC_TOKEN_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
#: Google accepts service account JWT assertions up to an hour long (RFC 7523 §3 leaves
#: the bound to the server; Google's OAuth 2.0 server-to-server guide states one hour).
MAX_ASSERTION_SECONDS = 3600
#: Tolerated clock difference when checking a presented token's times.
CLOCK_SKEW = 300
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
_FLAVOR = {"Metadata-Flavor": "Google"}


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def google_api_error(code: int, status: str, message: str, **metadata: str) -> web.Response:
    """A Google API error body (AIP-193)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if metadata:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "IAM_PERMISSION_DENIED",
                "domain": "iam.googleapis.com",
                "metadata": metadata,
            }
        ]
    return web.json_response({"error": error}, status=code)


def rfc3339(seconds: float) -> str:
    """generateAccessToken's ``expireTime``: whole seconds, ``Z``."""
    stamp = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


class MetadataServer:
    """The identity one emulated node (or GKE pod) holds: a service account email, or a
    federated principal with the pool's email stand-in (``PROJECT.svc.id.goog``)."""

    def __init__(self, iam: GoogleIam) -> None:
        self.iam = iam
        self.member = ""
        self.email = ""

    def attach_service_account(self, email: str) -> None:
        self.member, self.email = f"serviceAccount:{email}", email

    def attach_principal(self, member: str, email: str) -> None:
        self.member, self.email = member, email

    def detach(self) -> None:
        self.member = self.email = ""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.ping, name=GCP_METADATA + ".ping")
        app.router.add_get(
            METADATA_ROOT + "instance/service-accounts/{account}/{leaf:.*}",
            self.account,
            name=GCP_METADATA,
        )

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="", headers=_FLAVOR)

    def _known(self, account: str) -> bool:
        return bool(self.member) and account in ("default", self.email)

    async def account(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata-Flavor") != "Google":
            # What the metadata server answers a request without the header (GCE docs).
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        account, leaf = request.match_info["account"], request.match_info["leaf"]
        if not self._known(account):
            return web.Response(status=404, text="Not Found", headers=_FLAVOR)
        if leaf == "" and request.query.get("recursive") == "true":
            info = {"aliases": ["default"], "email": self.email, "scopes": [CLOUD_PLATFORM_SCOPE]}
            return web.json_response(info, headers=_FLAVOR)
        if leaf == "email":
            return web.Response(text=self.email, headers=_FLAVOR)
        if leaf == "token":
            scopes = [s for s in request.query.get("scopes", CLOUD_PLATFORM_SCOPE).split(",") if s]
            token, issued = self.iam.issue(self.member, scopes, "metadata")
            body = {
                "access_token": token,
                "expires_in": int(issued.expires_at - issued.issued_at),
                "token_type": "Bearer",
            }
            return web.json_response(body, headers=_FLAVOR)
        return web.Response(status=404, text="Not Found", headers=_FLAVOR)


class SecurityTokenService:
    def __init__(self, iam: GoogleIam) -> None:
        self.iam = iam
        self.token_lifetime = 3600  # STS answers expires_in 3600

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/token", self.token, name=GCP_STS_TOKEN)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            return _oauth_error("unsupported_grant_type", "The grant type is not supported.")
        if form.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            return _oauth_error("invalid_request", "Invalid requested_token_type.")
        if form.get("subject_token_type") not in OIDC_TOKEN_TYPES:
            return _oauth_error("invalid_request", "Invalid subject_token_type.")
        audience = str(form.get("audience", ""))
        provider = self.iam.providers.get(audience)
        if provider is None:
            return _oauth_error(
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. This '
                "might either be because the pool or provider is disabled or deleted or "
                "because it doesn't exist.",
            )
        try:
            decoded = jws.decode_unverified(str(form.get("subject_token", "")))
        except jws.JwtError:
            return _oauth_error("invalid_grant", "Unable to parse the ID Token.")
        claims = decoded.claims
        kid = decoded.header.get("kid")
        keys = [key for key_id, key in provider.keys if kid is None or key_id in (None, kid)]
        if not any(jws.verify_signature(decoded, key) for key in keys):
            return _oauth_error("invalid_grant", "Invalid JWT signature.")
        if claims.get("iss") != provider.issuer:
            return _oauth_error(
                "invalid_grant",
                f"The issuer in ID Token {claims.get('iss')} does not match the expected ones: "
                f"{provider.issuer}.",
            )
        now = self.iam.clock()
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= now - CLOCK_SKEW:
            return _oauth_error("invalid_grant", "The ID Token has expired.")
        audiences = claims.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
        if not set(audiences) & set(provider.allowed_audiences):
            return _oauth_error(
                "invalid_grant",
                "The audience in ID Token "
                f"[{','.join(audiences)}] does not match the expected audience.",
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            return _oauth_error("invalid_grant", "The ID Token has no subject.")
        scopes = str(form.get("scope", CLOUD_PLATFORM_SCOPE)).split()
        token, _ = self.iam.issue(
            provider.principal(subject), scopes, "sts", lifetime=self.token_lifetime
        )
        return web.json_response(
            {
                "access_token": token,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
            }
        )


class IamCredentials:
    def __init__(self, iam: GoogleIam) -> None:
        self.iam = iam

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(
            "/v1/projects/{project}/serviceAccounts/{email}:generateAccessToken",
            self.generate_access_token,
            name=GCP_IAM_CREDENTIALS,
        )

    async def generate_access_token(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        caller = self.iam.resolve(token) if scheme.lower() == "bearer" else None
        if caller is None:
            return google_api_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return google_api_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        scopes = body.get("scope") if isinstance(body, dict) else None
        if not isinstance(scopes, list) or not scopes:
            return google_api_error(400, "INVALID_ARGUMENT", "Scope required.")
        lifetime = MAX_IMPERSONATION_LIFETIME
        requested = str(body.get("lifetime", "")).removesuffix("s")
        if requested:
            try:
                lifetime = int(float(requested))
            except ValueError:
                return google_api_error(400, "INVALID_ARGUMENT", "Invalid lifetime.")
            if lifetime > MAX_IMPERSONATION_LIFETIME:
                return google_api_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Lifetime must be less than or equal to 3600 seconds.",
                )
        email = request.match_info["email"]
        resource = f"serviceAccount:{email}"
        if email not in self.iam.service_accounts or not self.iam.has_role(
            resource, TOKEN_CREATOR_ROLES, caller.member
        ):
            return google_api_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may "
                "not exist).",
                permission="iam.serviceAccounts.getAccessToken",
            )
        access, issued = self.iam.issue(resource, scopes, "iamcredentials", lifetime=lifetime)
        return web.json_response({"accessToken": access, "expireTime": rfc3339(issued.expires_at)})


class OAuth2TokenEndpoint:
    """``oauth2.googleapis.com/token`` for service account keys (JWT bearer grant)."""

    def __init__(self, iam: GoogleIam) -> None:
        self.iam = iam
        self.url = ""  # the audience assertions must carry: set once the listener is up

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self.token, name=GCP_OAUTH2_TOKEN)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return _oauth_error("unsupported_grant_type", "Invalid grant_type.")
        try:
            decoded = jws.decode_unverified(str(form.get("assertion", "")))
        except jws.JwtError:
            return _oauth_error("invalid_grant", "Invalid JWT: malformed.")
        claims = decoded.claims
        account = self.iam.service_accounts.get(str(claims.get("iss", "")))
        key = account.keys.get(str(decoded.header.get("kid", ""))) if account else None
        if account is None or key is None:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        if not jws.verify_signature(decoded, key):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = self.iam.clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp - iat > MAX_ASSERTION_SECONDS
            or exp <= now - CLOCK_SKEW
            or iat > now + CLOCK_SKEW
        ):
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        # Google's documented audience for these assertions is its own token URI,
        # whichever host the assertion is posted to (google-auth always writes it).
        if claims.get("aud") not in (GOOGLE_TOKEN_URI, self.url):
            return _oauth_error("invalid_grant", "Invalid JWT: audience is not the token URI.")
        scopes = str(claims.get("scope", "")).split()
        if not scopes:
            return _oauth_error("invalid_scope", "Empty or missing scope not allowed.")
        token, issued = self.iam.issue(account.member, scopes, "oauth2")
        return web.json_response(
            {
                "access_token": token,
                "expires_in": int(issued.expires_at - issued.issued_at),
                "token_type": "Bearer",
            }
        )
