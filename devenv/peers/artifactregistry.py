"""One emulated Artifact Registry Docker host (``LOCATION-docker.pkg.dev``): its Docker
token service and ``/v2/`` in front of a real registry.

Docker clients authenticate to Artifact Registry with the user name
``oauth2accesstoken`` and a Google OAuth 2.0 access token as the password (Artifact
Registry's "Configure authentication to Artifact Registry for Docker", access token
method). Here the token service (``GET /v2/token`` with HTTP Basic, the realm of the
registry's challenge) accepts only access tokens the emulator issued and that have not
expired, grants the actions the repository's IAM policy gives the token's identity
(``artifactregistry.repositories.downloadArtifacts`` comes with
``roles/artifactregistry.reader`` and above), and signs the ES256 registry token that
docker-registry, reverse-proxied under ``/v2/``, checks offline. A read of a repository
the identity may not read is answered 403 DENIED naming the permission, as Artifact
Registry answers it. Image paths are ``PROJECT/REPOSITORY/IMAGE``.
"""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from devenv.peers import jws
from devenv.peers.acr import Scope, TokenSigner
from devenv.peers.front import proxy, registry_error
from devenv.peers.gcp_iam import PULL_ROLES, PUSH_ROLES, GoogleIam
from devenv.peers.traffic import GAR_TOKEN, GAR_V2, parse_basic_auth

GAR_ISSUER = "Artifact Registry (emulated)"
TOKEN_USERNAME = "oauth2accesstoken"
#: Scopes an access token needs to read from Artifact Registry.
READ_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/cloud-platform.read-only",
    }
)
WRITE_SCOPES = frozenset({"https://www.googleapis.com/auth/cloud-platform"})
#: The registry tokens this service signs last as long as Artifact Registry's (an hour),
#: never longer than the access token they were made from.
REGISTRY_TOKEN_LIFETIME = 3600
#: ``/v2/NAME/manifests/REF``, ``/v2/NAME/blobs/DIGEST`` and ``/v2/NAME/tags/list``: reads.
_REPOSITORY_PATH = re.compile(r"^(?P<name>.+)/(?:manifests/[^/]+|blobs/[^/]+|tags/list)$")


class ArtifactRegistryHost:
    def __init__(self, location: str, iam: GoogleIam, signer: TokenSigner) -> None:
        self.location = location
        self.iam = iam
        self.signer = signer
        self.host = ""  # 127.0.0.1:PORT once listening
        self.upstream: str | None = None
        self.proxy_session: aiohttp.ClientSession | None = None

    @property
    def realm(self) -> str:
        return f"https://{self.host}/v2/token"

    def repository_resource(self, project: str, repository: str) -> str:
        return f"projects/{project}/locations/{self.location}/repositories/{repository}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/token", self.token, name=GAR_TOKEN)
        app.router.add_post("/v2/token", self.no_oauth_post, name=GAR_TOKEN + ".post")
        app.router.add_route("*", "/v2/{tail:.*}", self.proxy, name=GAR_V2)

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied is not None:
            return denied
        return await proxy(request, self.proxy_session, self.upstream)

    def _denied(self, request: web.Request) -> web.Response | None:
        """Artifact Registry's answer to a read of a repository the token's identity may
        not read: 403 DENIED naming the permission (what the kubelet's event shows)."""
        found = _REPOSITORY_PATH.match(request.match_info["tail"])
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if found is None or scheme.lower() != "bearer":
            return None  # the registry's own challenge (401) answers
        try:
            decoded = jws.decode_unverified(token)
        except jws.JwtError:
            return None
        if not jws.verify_signature(decoded, self.signer.key.public_key()):
            return None
        name = found.group("name")
        for grant in decoded.claims.get("access") or []:
            if grant.get("name") == name and "pull" in (grant.get("actions") or []):
                return None
        project, repository = [*name.split("/"), ""][:2]
        return registry_error(
            403,
            "DENIED",
            'Permission "artifactregistry.repositories.downloadArtifacts" denied on resource '
            f'"{self.repository_resource(project, repository)}" (or it may not exist)',
        )

    def _unauthorized(self, message: str) -> web.Response:
        challenge = f'Bearer realm="{self.realm}",service="{self.host}"'
        return registry_error(401, "UNAUTHORIZED", message, {"Www-Authenticate": challenge})

    def _allowed(self, scope: Scope, member: str, token_scopes: frozenset[str]) -> frozenset[str]:
        parts = scope.name.split("/")
        if len(parts) < 3:  # PROJECT/REPOSITORY/IMAGE at least
            return frozenset()
        resource = f"repository:{parts[0]}/{parts[1]}"
        actions: set[str] = set()
        if token_scopes & READ_SCOPES and self.iam.has_role(resource, PULL_ROLES, member):
            actions.add("pull")
        if token_scopes & WRITE_SCOPES and self.iam.has_role(resource, PUSH_ROLES, member):
            actions.add("push")
        return frozenset(actions)

    async def no_oauth_post(self, request: web.Request) -> web.Response:
        """Google's registries answer the OAuth 2.0 form POST to the realm with 404 (what
        containerd's resolver notes of GCR, and why it then falls back to GET with HTTP
        Basic, as docker does)."""
        return registry_error(404, "NOT_FOUND", "the token service answers GET only")

    async def token(self, request: web.Request) -> web.Response:
        if request.query.get("service") != self.host:
            return registry_error(400, "UNSUPPORTED", "invalid service")
        basic = parse_basic_auth(request.headers.get("Authorization", ""))
        if basic is None:
            return self._unauthorized("authentication required")
        username, password = basic
        if username != TOKEN_USERNAME:
            return self._unauthorized(f"unsupported user name {username!r}")
        issued = self.iam.resolve(password)
        if issued is None:
            return self._unauthorized(
                "the access token is not valid: it was not issued by Google or has expired"
            )
        token_scopes = frozenset(issued.scopes)
        access: list[dict[str, Any]] = []
        for scope in Scope.parse_all(request.query.getall("scope", [])):
            if scope.type != "repository":
                continue
            allowed = self._allowed(scope, issued.member, token_scopes)
            access.append(
                {
                    "type": "repository",
                    "name": scope.name,
                    "actions": sorted(scope.actions & allowed),
                }
            )
        now = int(self.iam.clock())
        expires = min(now + REGISTRY_TOKEN_LIFETIME, int(issued.expires_at))
        claims = {
            "iss": GAR_ISSUER,
            "sub": issued.member,
            "aud": self.host,
            "exp": expires,
            "nbf": now,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        token = self.signer.sign(claims)
        stamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
        return web.json_response(
            {
                "token": token,
                "access_token": token,
                "expires_in": expires - now,
                "issued_at": stamp.isoformat().replace("+00:00", "Z"),
            }
        )
