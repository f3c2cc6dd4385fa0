"""Azure Container Registry: Entra ID token → ``/oauth2/exchange`` → ACR token.

``POST https://<host>/oauth2/exchange`` turns the Entra token into an ACR
refresh token (about 3 h); with ``scope`` set on the entry, ``POST
/oauth2/token`` narrows it to a repository-scoped access token (about 75 min).
Either is the Docker password for username ``00000000-…``; its lifetime is read
from the token's ``exp``, never assumed.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport, AsyncHttpTransport

from webhook.admission.needs import PullNeed
from webhook.config.acr import AcrEntry
from webhook.credentials.base import (
    ACR_USERNAME,
    REQUEST_TIMEOUT,
    Attempt,
    Credential,
    HttpProvider,
    ProviderContext,
    jwt_claims,
    principal_for,
    ssl_context,
)
from webhook.credentials.entra import EntraToken, EntraTokens

#: ACR's answers are a small JSON object; anything bigger is not ACR.
MAX_BODY = 64 * 1024
#: Which role grants pulls depends on the registry's permissions mode (its
#: roleAssignmentMode): ABAC-enabled registries do not honour AcrPull
#: (docs/azure-acr-access.md).
ROLE_HINT = (
    "the identity has no pull role on this registry: AcrPull, or on an ABAC-enabled "
    "registry (roleAssignmentMode AbacRepositoryPermissions) Container Registry Repository "
    "Reader, which AcrPull does not replace there (or the registry does not accept Entra "
    "tokens for this audience)"
)


class AcrProvider(HttpProvider):
    """Makes ACR credentials for ``acr`` entries."""

    def __init__(
        self, context: ProviderContext, *, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        super().__init__(context, request_timeout=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._entra = EntraTokens(context.secrets, context.tokens, self._transport)

    async def entra_token(
        self, need: PullNeed[AcrEntry], namespace: str, attempt: Attempt
    ) -> EntraToken:
        """The exchange's first step alone: the Entra ID token of the need's identity."""
        return await self._entra.token(
            need.entry, namespace, need.identity.service_account, attempt
        )

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_context(self._ca_file)),
                # Entra, IMDS and ACR are reached directly; HTTPS_PROXY is honoured.
                trust_env=True,
            )
        return self._session

    def _transport(self) -> AsyncHttpTransport[Any, Any]:
        # The SDK's requests share our session: same trust, same connection pool.
        transport: AsyncHttpTransport[Any, Any] = AioHttpTransport(
            session=self._http(),
            session_owner=False,
            connection_timeout=self._timeout,
            read_timeout=self._timeout,
        )
        return transport

    def cache_key(self, need: PullNeed[AcrEntry], namespace: str) -> Hashable:
        return ("acr", need.entry.name, principal_for(need, namespace), need.host, need.entry.scope)

    async def fetch(self, need: PullNeed[AcrEntry], namespace: str, attempt: Attempt) -> Credential:
        entry, host = need.entry, need.host
        entra = await self.entra_token(need, namespace, attempt)
        attempt.step = "acr-exchange"
        form = [("grant_type", "access_token"), ("service", host), ("access_token", entra.token)]
        if entra.tenant:
            form.append(("tenant", entra.tenant))
        token = await self._post(f"https://{host}/oauth2/exchange", form, "refresh_token", attempt)
        if entry.scope:
            attempt.step = "acr-scoped-token"
            form = [("grant_type", "refresh_token"), ("service", host)]
            form += [("scope", scope) for scope in entry.scope.split()]
            form.append(("refresh_token", token))
            token = await self._post(f"https://{host}/oauth2/token", form, "access_token", attempt)
        exp = jwt_claims(token).get("exp")
        if not isinstance(exp, int | float):
            raise attempt.error("no-expiry", "the ACR token has no exp claim")
        return Credential(
            username=ACR_USERNAME,
            password=token,
            hosts=(host,),
            expires_at=float(exp),
            issued_at=self._clock(),
        )

    async def _post(
        self, url: str, form: list[tuple[str, str]], field: str, attempt: Attempt
    ) -> str:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout(attempt))
        try:
            async with self._http().post(url, data=form, timeout=timeout) as response:
                body = await response.content.read(MAX_BODY)
                status, headers = response.status, response.headers
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as e:
            raise attempt.error(
                "tls",
                str(e),
                hint="set caFile to the CA bundle that signs the registry's certificate",
            ) from e
        except aiohttp.ClientError as e:
            raise attempt.error("connection", str(e), transient=True) from e
        except TimeoutError as e:
            raise attempt.error(
                "timeout", f"no answer in {timeout.total:.1f}s", transient=True
            ) from e
        document = _json(body)
        if status == 200:
            value = document.get(field)
            if isinstance(value, str) and value:
                return value
            raise attempt.error("bad-response", f"200 without {field}")
        # Not JSON (a proxy's HTML page): the error keeps a scrubbed, cut-down excerpt.
        message = _acr_message(document) or body.decode("utf-8", "replace")
        transient = status == 429 or status >= 500
        hint = ""
        if status in (401, 403):
            hint = ROLE_HINT
        elif status == 404:
            hint = "the host does not serve /oauth2/exchange: is it an ACR login server?"
        retry_after = _retry_after(headers.get("Retry-After"))
        raise attempt.error(
            str(status), message, hint=hint, transient=transient, retry_after=retry_after
        )

    async def aclose(self) -> None:
        await self._entra.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json(body: bytes) -> Mapping[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _acr_message(document: Mapping[str, Any]) -> str:
    """The first message of ACR's ``{"errors": [{"code", "message"}]}`` body."""
    errors = document.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return f"{errors[0].get('code', '')} {errors[0].get('message', '')}".strip()
    return str(document.get("error_description") or document.get("error") or "")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


#: The ``acr`` kind's provider (``webhook.config.kinds``).
make = AcrProvider.make
