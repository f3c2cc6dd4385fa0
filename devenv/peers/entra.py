"""The Entra ID v2 token endpoint, client-credentials grant only.

``POST /{tenant}/oauth2/v2.0/token`` with a client secret, a certificate-signed
client assertion (azure-identity's CertificateCredential: PS256 with
``x5t#S256``, or RS256 with ``x5t``), or a federated assertion (workload
identity). Errors carry the AADSTS code first in ``error_description`` and the
body fields Entra sends, with 401 for ``invalid_client`` and 400 otherwise.
"""

from __future__ import annotations

import datetime
import hmac
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from devenv.peers import jws
from devenv.peers.directory import CLOCK_SKEW, Directory, Principal
from devenv.peers.traffic import ENTRA_KEYS, ENTRA_TOKEN

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_DEFAULT_SUFFIX = "/.default"
_FIC_HINT = (
    "Check your federated identity credential Subject, Audience and Issuer against the "
    "presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
)


class AadError(Exception):
    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(f"AADSTS{code}: {message}")
        self.code = code
        self.error = error
        self.message = message

    @property
    def status(self) -> int:
        # RFC 6749 §5.2: failed client authentication may answer 401; Entra does, and
        # answers 400 for every other token endpoint error.
        return 401 if self.error == "invalid_client" else 400


def aad_error_body(error: AadError, now: float, correlation_id: str | None) -> dict[str, Any]:
    trace_id = str(uuid.uuid4())
    correlation_id = correlation_id or str(uuid.uuid4())
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return {
        "error": error.error,
        "error_description": (
            f"AADSTS{error.code}: {error.message} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}"
        ),
        "error_codes": [error.code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={error.code}",
    }


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise AadError(
            900144,
            "invalid_request",
            f"The request body must contain the following parameter: '{name}'.",
        )
    return value


def _iso(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "(none)"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


class EntraTokenEndpoint:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.handle, name=ENTRA_TOKEN)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self.keys, name=ENTRA_KEYS)

    async def keys(self, request: web.Request) -> web.Response:
        """The signing keys, as Entra publishes them for token validators."""
        return web.json_response(self.directory.jwks())

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        try:
            body = self.token(request.match_info["tenant"], form)
        except AadError as error:
            correlation = request.headers.get("client-request-id")
            return web.json_response(
                aad_error_body(error, self.directory.clock(), correlation), status=error.status
            )
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def token(self, tenant_id: str, form: Mapping[str, str]) -> dict[str, Any]:
        tenant = self.directory.tenants.get(tenant_id)
        if tenant is None:
            raise AadError(
                90002,
                "invalid_request",
                f"Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )
        grant_type = _required(form, "grant_type")
        if grant_type != "client_credentials":
            raise AadError(
                70003,
                "unsupported_grant_type",
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        client_id = _required(form, "client_id")
        scope = _required(form, "scope")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith(_DEFAULT_SUFFIX):
            raise AadError(
                1002012,
                "invalid_scope",
                f"The provided value for scope {scope} is not valid. Client credential flows must "
                "have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = scopes[0][: -len(_DEFAULT_SUFFIX)]
        principal = tenant.get(client_id)
        if principal is None:
            raise AadError(
                700016,
                "unauthorized_client",
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant_id}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may "
                "have sent your authentication request to the wrong tenant.",
            )
        if "client_secret" in form:
            self._check_secret(principal, form["client_secret"])
            appidacr = "1"
        elif "client_assertion" in form:
            if form.get("client_assertion_type") != JWT_BEARER:
                raise AadError(
                    700023,
                    "invalid_request",
                    f"client_assertion_type must be '{JWT_BEARER}'.",
                )
            self._check_assertion(principal, form["client_assertion"])
            appidacr = "2"
        else:
            raise AadError(
                7000218,
                "invalid_client",
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        token, _, _ = self.directory.issue_access_token(
            principal, resource, lifetime=self.directory.token_lifetime, appidacr=appidacr
        )
        lifetime = self.directory.token_lifetime
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": token,
        }

    def _check_secret(self, principal: Principal, secret: str) -> None:
        if not any(hmac.compare_digest(secret.encode(), s.encode()) for s in principal.secrets):
            raise AadError(
                7000215,
                "invalid_client",
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{principal.client_id}'.",
            )

    def _check_assertion(self, principal: Principal, assertion: str) -> None:
        try:
            decoded = jws.decode_unverified(assertion)
        except jws.JwtError as exc:
            raise AadError(
                50027, "invalid_request", f"JWT token is invalid or malformed. {exc}"
            ) from exc
        claims = decoded.claims
        now = self.directory.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if (
            not isinstance(exp, int | float)
            or exp < now - CLOCK_SKEW
            or (isinstance(nbf, int | float) and nbf > now + CLOCK_SKEW)
        ):
            raise AadError(
                700024,
                "invalid_client",
                f"Client assertion is not within its valid time range. Current time: {_iso(now)}, "
                f"assertion valid from {_iso(nbf)}, expiry time of assertion {_iso(exp)}.",
            )
        # A self-signed assertion (iss = sub = client id) is a certificate credential;
        # any other issuer is a federated identity presented for exchange.
        if claims.get("iss") == principal.client_id and claims.get("sub") == principal.client_id:
            self._check_certificate_assertion(principal, decoded)
        else:
            self._check_federated_assertion(principal, decoded)

    def _check_certificate_assertion(self, principal: Principal, decoded: jws.DecodedJwt) -> None:
        thumb_s256 = str(decoded.header.get("x5t#S256", "")).rstrip("=")
        thumb_sha1 = str(decoded.header.get("x5t", "")).rstrip("=")
        matching = [
            cert
            for cert in principal.certificates
            if (thumb_s256 and jws.x5t_s256(cert) == thumb_s256)
            or (thumb_sha1 and jws.x5t(cert) == thumb_sha1)
        ]
        if not matching:
            raise AadError(
                700027,
                "invalid_client",
                "The certificate with identifier used to sign the client assertion is not "
                f"registered on application. [Reason - The key was not found., Thumbprint of key "
                f"used by client: '{thumb_s256 or thumb_sha1}']",
            )
        public_key = matching[0].public_key()
        if not isinstance(public_key, jws.PublicKey) or not jws.verify_signature(
            decoded, public_key
        ):
            raise AadError(
                700027, "invalid_client", "Client assertion failed signature validation."
            )

    def _check_federated_assertion(self, principal: Principal, decoded: jws.DecodedJwt) -> None:
        claims = decoded.claims
        issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
        aud = claims.get("aud")
        audiences = [str(a) for a in aud] if isinstance(aud, list) else [str(aud)]
        if not principal.federated:
            raise AadError(
                70021,
                "invalid_request",
                "No matching federated identity record found for presented assertion. Assertion "
                f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: "
                f"'{','.join(audiences)}'.",
            )
        by_issuer = [f for f in principal.federated if f.issuer == issuer]
        if not by_issuer:
            raise AadError(
                700211,
                "invalid_client",
                f"No matching federated identity record found for presented assertion issuer "
                f"'{issuer}'. {_FIC_HINT}",
            )
        # Subjects compare case-sensitively, as Entra has done since 2024.
        by_subject = [f for f in by_issuer if f.subject == subject]
        if not by_subject:
            raise AadError(
                700213,
                "invalid_client",
                f"No matching federated identity record found for presented assertion subject "
                f"'{subject}'. {_FIC_HINT}",
            )
        if not any(a in f.audiences for f in by_subject for a in audiences):
            raise AadError(
                700212,
                "invalid_client",
                f"No matching federated identity record found for presented assertion audience "
                f"'{','.join(audiences)}'. {_FIC_HINT}",
            )
        keys = self.directory.issuer_keys.get(issuer)
        if keys is not None:
            kid = decoded.header.get("kid")
            candidates = [key for key_id, key in keys if kid is None or key_id in (None, kid)]
            if not any(jws.verify_signature(decoded, key) for key in candidates):
                raise AadError(
                    700027, "invalid_client", "Client assertion failed signature validation."
                )
