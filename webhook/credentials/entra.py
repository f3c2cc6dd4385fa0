"""Entra ID access tokens for ACR entries, from azure-identity's async credentials.

Which credential serves an entry follows its auth mode's type. The SDK credentials
send their requests through a transport over the provider's own aiohttp
session, so they trust the same CAs as the ACR exchange (system CAs plus
``config.ca_file``), and make one attempt each: retries are ours, bounded by the
exchange deadline (the SDK alone retries IMDS for ~24 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.identity import CredentialUnavailableError
from azure.identity.aio import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from webhook.config.acr import (
    DEFAULT_AUTHORITY_HOST,
    AcrAuth,
    AcrEntry,
    FromFile,
    FromSecret,
    ManagedIdentity,
    PodServiceAccount,
    ServicePrincipal,
    WorkloadIdentity,
)
from webhook.credentials.base import Attempt, SecretReader, ServiceAccountTokens, jwt_claims
from webhook.credentials.kubeio import (
    read_secret,
    service_account_annotations,
    service_account_token,
)

WORKLOAD_AUDIENCE = "api://AzureADTokenExchange"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
#: The pod's token is used once, right away; 600 s is TokenRequest's minimum.
SA_TOKEN_SECONDS = 600

_AADSTS_RE = re.compile(r"AADSTS(\d+)")
# The SDK quotes IMDS's JSON body as a Python dict: "{'error_description': '...'}".
_DESCRIPTION_RE = re.compile(r"error_description['\"]?:\s*['\"]([^'\"]+)")
#: What the AADSTS codes people actually hit mean for this webhook's setup.
AADSTS_HINTS: dict[str, str] = {
    "700016": "the application (client id) was not found in this tenant: check clientId "
    "and tenantId (and the authority host for sovereign clouds)",
    "90002": "the tenant was not found: check tenantId and the authority host",
    "7000215": "wrong client secret: use the secret's value, not its id, and check expiry",
    "7000222": "the client secret has expired: create a new one",
    "700027": "the certificate is not registered on the app (or its signature is wrong)",
    "70021": "no federated credential matches the service account's issuer/subject: add one "
    "for system:serviceaccount:NAMESPACE:NAME with the cluster's issuer",
    "700211": "no federated credential has the cluster's service account issuer",
    "700212": "no federated credential accepts audience api://AzureADTokenExchange",
    "700213": "no federated credential matches the service account's subject "
    "(system:serviceaccount:NAMESPACE:NAME)",
    "700024": "the client assertion is outside its validity: check the node's clock",
}
IMDS_NOT_FOUND_HINT = (
    "the managed identity is not assigned to this node/VMSS (or the client id is wrong)"
)


@dataclass(frozen=True)
class EntraToken:
    token: str = field(repr=False)
    tenant: str
    """The token's tenant (``tid``), sent along to ACR's exchange."""
    expires_on: float


class EntraTokens:
    """Gets Entra ID tokens for ACR entries; keeps SDK credentials per entry."""

    def __init__(
        self,
        secrets: SecretReader | None,
        tokens: ServiceAccountTokens | None,
        transport: Callable[[], AsyncHttpTransport[Any, Any]],
    ) -> None:
        self._secrets = secrets
        self._tokens = tokens
        self._transport = transport
        # entry name → (what the credential was built from, the credential); rebuilt
        # when a service principal's secret or certificate changes.
        self._credentials: dict[str, tuple[Hashable, AsyncTokenCredential]] = {}

    def _common(self, auth: AcrAuth) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"transport": self._transport(), "retry_total": 0}
        if auth.authority_host:
            kwargs["authority"] = auth.authority_host
        return kwargs

    async def token(
        self, entry: AcrEntry, namespace: str, service_account: str, attempt: Attempt
    ) -> EntraToken:
        auth = entry.auth
        if isinstance(auth, PodServiceAccount):
            return await self._pod_token(auth, namespace, service_account, attempt)
        source, build = await self._source(auth, attempt)
        cached = self._credentials.get(entry.name)
        if cached is None or cached[0] != source:
            if cached is not None:
                await cached[1].close()
            self._credentials[entry.name] = cached = (source, build())
        attempt.step = "imds" if isinstance(auth, ManagedIdentity) else "entra-token"
        return await _get_token(cached[1], _scope(auth), auth.tenant_id, attempt)

    async def _source(
        self, auth: WorkloadIdentity | ManagedIdentity | ServicePrincipal, attempt: Attempt
    ) -> tuple[Hashable, Callable[[], AsyncTokenCredential]]:
        """A fingerprint of what the credential depends on, and how to build it."""
        if isinstance(auth, ManagedIdentity):
            identity: dict[str, Any] = {}
            if auth.client_id:
                identity["client_id"] = auth.client_id
            elif auth.resource_id:
                # The async IMDS client puts identity_config keys into the query as
                # written, and IMDS names the resource id selector msi_res_id.
                identity["identity_config"] = {"msi_res_id": auth.resource_id}
            return "mi", lambda: ManagedIdentityCredential(
                # An explicit managedIdentity entry means IMDS, even when the webhook
                # itself also has workload identity variables in its environment.
                _exclude_workload_identity_credential=True,
                **identity,
                **self._common(auth),
            )
        if isinstance(auth, WorkloadIdentity):
            tenant = auth.tenant_id or os.environ.get("AZURE_TENANT_ID", "")
            client = auth.client_id or os.environ.get("AZURE_CLIENT_ID", "")
            token_file = auth.token_file or os.environ.get("AZURE_FEDERATED_TOKEN_FILE", "")
            if not (tenant and client and token_file):
                attempt.step = "entra-token"
                raise attempt.error(
                    "not-configured",
                    "workload identity needs a tenant id, client id and token file",
                    hint="label the webhook's pods azure.workload.identity/use=true and "
                    "annotate its service account with the client id (or set clientId, "
                    "tenantId and tokenFile on the entry)",
                )
            return "wi", lambda: WorkloadIdentityCredential(
                tenant_id=tenant,
                client_id=client,
                token_file_path=token_file,
                **self._common(auth),
            )
        secret, is_certificate = await self._service_principal_secret(auth, attempt)
        fingerprint = hashlib.sha256(secret).hexdigest()
        if is_certificate:
            return fingerprint, lambda: CertificateCredential(
                auth.tenant_id, auth.client_id, certificate_data=secret, **self._common(auth)
            )
        return fingerprint, lambda: ClientSecretCredential(
            auth.tenant_id, auth.client_id, secret.decode().strip(), **self._common(auth)
        )

    async def _service_principal_secret(
        self, auth: ServicePrincipal, attempt: Attempt
    ) -> tuple[bytes, bool]:
        """(client secret or PEM certificate+key, is it a certificate)."""
        source: FromSecret | FromFile = auth.secret
        if isinstance(source, FromFile):
            attempt.step = "read-file"
            try:
                content = await asyncio.to_thread(_read_file, source.path)
            except OSError as e:
                raise attempt.error(
                    "unreadable", f"{source.path}: {e.strerror}", hint="mount the file"
                ) from e
            return content, source.certificate
        ref, is_certificate = source.ref, source.certificate
        default_key = "tls.pem" if is_certificate else "clientSecret"
        wanted = f"key {ref.key or default_key}"
        secret = await read_secret(self._secrets, ref, attempt, wanted)
        data = secret.data.get(ref.key or default_key)
        if data is None and is_certificate and not ref.key and "tls.key" in secret.data:
            # A kubernetes.io/tls Secret: certificate and key in separate entries.
            data = secret.data["tls.key"] + b"\n" + secret.data.get("tls.crt", b"")
        if not data:
            raise attempt.error(
                "missing-key",
                f"Secret {ref.namespace}/{ref.name} has no {wanted}",
                hint=f"put the {'PEM certificate and key' if is_certificate else 'secret'} "
                f"under {wanted}",
            )
        return bytes(data), is_certificate

    async def _pod_token(
        self, auth: PodServiceAccount, namespace: str, service_account: str, attempt: Attempt
    ) -> EntraToken:
        annotations = await service_account_annotations(
            self._tokens, namespace, service_account, attempt
        )
        client = annotations.get(CLIENT_ID_ANNOTATION, "")
        tenant = (
            annotations.get(TENANT_ID_ANNOTATION)
            or auth.tenant_id
            or os.environ.get("AZURE_TENANT_ID", "")
        )
        if not client or not tenant:
            missing = CLIENT_ID_ANNOTATION if not client else TENANT_ID_ANNOTATION
            raise attempt.error(
                "no-identity-annotation",
                f"ServiceAccount {namespace}/{service_account} has no {missing} annotation",
                hint=f"kubectl annotate sa -n {namespace} {service_account} {missing}=GUID",
            )
        assertion = await service_account_token(
            self._tokens, namespace, service_account, WORKLOAD_AUDIENCE, SA_TOKEN_SECONDS, attempt
        )
        attempt.step = "entra-token"
        # ClientAssertionCredential wants a plain callable: the token is fetched above
        # (TokenRequest is async) and this credential lives for this one request.
        async with ClientAssertionCredential(
            tenant, client, lambda: assertion, **self._common(auth)
        ) as credential:
            return await _get_token(credential, _scope(auth), tenant, attempt)

    async def aclose(self) -> None:
        credentials = [c for _, c in self._credentials.values()]
        self._credentials.clear()
        for credential in credentials:
            await credential.close()


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _scope(auth: AcrAuth) -> str:
    """The entry's scope; without an authorityHost of its own, the cloud is the one
    AZURE_AUTHORITY_HOST names (as for the credential itself)."""
    return auth.scope(os.environ.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST)


async def _get_token(
    credential: AsyncTokenCredential, scope: str, tenant: str, attempt: Attempt
) -> EntraToken:
    try:
        access = await credential.get_token(scope)
    except Exception as e:  # mapped right here; SDK messages carry no token
        raise map_azure_error(attempt, e) from e
    tid = jwt_claims(access.token).get("tid")
    return EntraToken(
        access.token, tenant or (tid if isinstance(tid, str) else ""), access.expires_on
    )


def map_azure_error(attempt: Attempt, exc: Exception) -> Exception:
    """What a failed azure-identity ``get_token`` means for the exchange."""
    message = getattr(exc, "message", None) or str(exc)
    cause = exc.__cause__
    if isinstance(exc, CredentialUnavailableError):
        if isinstance(cause, HttpResponseError) and cause.status_code == 400:
            described = _DESCRIPTION_RE.search(message)
            text = described.group(1) if described else message
            return attempt.error("400", text, hint=IMDS_NOT_FOUND_HINT)
        if "no response from the IMDS endpoint" in message:
            return attempt.error(
                "unreachable", "no response from the IMDS endpoint", transient=True
            )
        return attempt.error("unavailable", message, hint=IMDS_NOT_FOUND_HINT)
    if isinstance(exc, ClientAuthenticationError):
        status: int = (exc.response.status_code or 0) if exc.response is not None else 0
        found = _AADSTS_RE.search(message)
        if found:
            description = message[found.start() :].split(" Trace ID:")[0]
            return attempt.error(
                f"AADSTS{found.group(1)}",
                description.rstrip("'\""),
                hint=AADSTS_HINTS.get(found.group(1), ""),
                transient=status >= 500 or status == 429,
            )
        transient = status >= 500 or status == 429 or "temporarily_unavailable" in message
        hint = "check authorityHost" if status == 404 else ""
        return attempt.error(str(status or "error"), message, hint=hint, transient=transient)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        # Connection refused, reset, TLS failure or timeout on the way to Entra/IMDS.
        tls = "CERTIFICATE" in str(exc).upper()
        hint = "set caFile to the CA bundle that signs the endpoint's certificate" if tls else ""
        return attempt.error("tls" if tls else "connection", message, hint=hint, transient=not tls)
    if isinstance(exc, OSError | ValueError):
        # e.g. an unreadable federated token file, a malformed certificate.
        return attempt.error(type(exc).__name__, str(exc))
    return exc
