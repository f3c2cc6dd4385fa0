"""The Azure Instance Metadata Service's managed identity token endpoint.

``GET /metadata/identity/oauth2/token?api-version=…&resource=…`` with the
``Metadata: true`` header, over plain HTTP, as IMDS (and AAD Pod Identity's
NMI, which azure-identity reaches through AZURE_POD_IDENTITY_AUTHORITY_HOST)
serve it. The identities attached to the emulated host answer; selectors are
``client_id``, ``object_id``, ``msi_res_id`` and ``mi_res_id``. Every number in
the reply is a string, as IMDS sends them.
"""

from __future__ import annotations

from aiohttp import web

from devenv.peers.directory import Directory, Principal
from devenv.peers.traffic import IMDS_TOKEN

TOKEN_PATH = "/metadata/identity/oauth2/token"
_SELECTORS = ("client_id", "object_id", "msi_res_id", "mi_res_id")


def _bad_request(description: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": description}, status=400
    )


class ImdsHost:
    """The managed identities of one emulated VM (or node, or pod under Pod Identity)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.system_identity: Principal | None = None
        self.user_identities: list[Principal] = []

    def attach(self, principal: Principal, *, system_assigned: bool = False) -> None:
        if system_assigned:
            self.system_identity = principal
        else:
            self.user_identities.append(principal)

    def detach(self, principal: Principal) -> None:
        if self.system_identity is principal:
            self.system_identity = None
        if principal in self.user_identities:
            self.user_identities.remove(principal)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(TOKEN_PATH, self.handle, name=IMDS_TOKEN)

    def _all(self) -> list[Principal]:
        system = [self.system_identity] if self.system_identity else []
        return system + self.user_identities

    def _select(self, selector: str, value: str) -> Principal | None:
        for principal in self._all():
            if selector == "client_id" and principal.client_id == value:
                return principal
            if selector == "object_id" and principal.object_id == value:
                return principal
            # ARM resource ids compare case-insensitively.
            if (
                selector in ("msi_res_id", "mi_res_id")
                and principal.resource_id is not None
                and principal.resource_id.lower() == value.lower()
            ):
                return principal
        return None

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Metadata", "").lower() != "true":
            return _bad_request("Required metadata header not specified")
        query = request.query
        if "api-version" not in query:
            return _bad_request("Required query variable 'api-version' is missing")
        resource = query.get("resource", "")
        if not resource:
            return _bad_request("Required query variable 'resource' is missing")
        given = [name for name in _SELECTORS if query.get(name)]
        if len(given) > 1:
            return _bad_request("Only one of client_id, object_id, msi_res_id may be specified")
        if given:
            principal = self._select(given[0], query[given[0]])
        elif self.system_identity is not None:
            principal = self.system_identity
        elif len(self.user_identities) > 1:
            return _bad_request(
                "Multiple user assigned identities exist, please specify the clientId / "
                "resourceId of the identity in the token request"
            )
        else:
            principal = self.user_identities[0] if self.user_identities else None
        if principal is None:
            return _bad_request("Identity not found")
        lifetime = self.directory.imds_token_lifetime
        token, issued_at, expires_on = self.directory.issue_access_token(
            principal, resource, lifetime=lifetime, appidacr="2"
        )
        return web.json_response(
            {
                "access_token": token,
                "client_id": principal.client_id,
                "expires_in": str(lifetime),
                "expires_on": str(expires_on),
                "ext_expires_in": str(lifetime),
                "not_before": str(issued_at),
                "resource": resource,
                "token_type": "Bearer",
            }
        )
