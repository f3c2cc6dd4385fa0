"""Google Artifact Registry and Container Registry: a Google identity → an OAuth 2.0
access token → Docker user ``oauth2accesstoken`` with the token as password.

The token comes from google-auth's own credential classes, by the entry's mode:
the metadata server (GKE Workload Identity, or the node's service account);
workload identity federation (an ``external_account`` identity pool credential: STS,
then IAM Credentials ``generateAccessToken`` when a service account is impersonated)
from the webhook's projected token or, per pod, a TokenRequest token of the pod's own
ServiceAccount; or a service account key from a Secret. google-auth is synchronous:
each refresh runs in a worker thread with every HTTP request bounded by the attempt's
deadline. The lifetime is the token's own expiry, never assumed. One token serves
every Google registry host its identity may read, so it is cached per (entry,
identity), like an ECR token.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import ssl
from collections.abc import Hashable, Mapping
from typing import Any

import google.auth.transport
import google.auth.transport.requests
import requests
import requests.adapters
from google.auth import compute_engine, exceptions, identity_pool
from google.oauth2 import service_account

from webhook.admission.needs import PullNeed
from webhook.config.gar import (
    Federation,
    GarEntry,
    MetadataServer,
    PodServiceAccount,
    ServiceAccountKey,
)
from webhook.credentials.base import (
    REQUEST_TIMEOUT,
    Attempt,
    Credential,
    HttpProvider,
    ProviderContext,
    jwt_claims,
    principal_for,
    ssl_context,
)
from webhook.credentials.kubeio import (
    read_secret,
    service_account_annotations,
    service_account_token,
)

#: Artifact Registry's documented Docker user name for an OAuth 2.0 access token.
GAR_USERNAME = "oauth2accesstoken"
#: The scope Artifact Registry's docs use for access tokens (gcloud's own scope).
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: GKE's annotation naming the Google service account a Kubernetes ServiceAccount acts as.
GSA_ANNOTATION = "iam.gke.io/gcp-service-account"
#: The pod's token is used once, right away; 600 s is TokenRequest's minimum.
SA_TOKEN_SECONDS = 600
#: Tokens whose Google identity is remembered for hints: a few per entry and identity
#: (per-pod identities make more); expired ones are dropped first.
MEMBERS_KEPT = 1024
#: A registry's answers to the pull check are small JSON documents; keep no more.
MAX_BODY = 64 * 1024
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
READER_ROLE = "roles/artifactregistry.reader"
_ERROR_CODE_RE = re.compile(r"Error code (\w+)(?:: (.*))?", re.S)
#: Google error statuses and OAuth errors that a later attempt may not meet again.
_TRANSIENT = frozenset(
    {"temporarily_unavailable", "server_error", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"}
)


class _TrustingAdapter(requests.adapters.HTTPAdapter):
    """Verifies TLS with the system CAs plus ``caFile`` (requests alone takes one or
    the other)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


class _Bounded(google.auth.transport.Request):  # type: ignore[misc] # google-auth is read as Any
    """google-auth's requests transport with every request's timeout capped (it would
    wait 120 s by default)."""

    def __init__(self, inner: Any, limit: float) -> None:
        self._inner = inner
        self._limit = limit

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        limit = self._limit if timeout is None else min(timeout, self._limit)
        return self._inner(url, method=method, body=body, headers=headers, timeout=limit, **kwargs)


class _Supplier(identity_pool.SubjectTokenSupplier):  # type: ignore[misc] # read as Any
    """Hands google-auth the Kubernetes token fetched just before (TokenRequest is async)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_subject_token(self, context: Any, request: Any) -> str:
        return self._token


class GarProvider(HttpProvider):
    """Makes Artifact Registry credentials for ``gar`` entries."""

    def __init__(
        self, context: ProviderContext, *, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        super().__init__(context, request_timeout=request_timeout)
        self._session = requests.Session()
        self._members: dict[str, tuple[str, float]] = {}
        # HTTPS_PROXY / NO_PROXY are honoured, as for the other kinds.
        self._session.mount("https://", _TrustingAdapter(ssl_context(context.ca_file)))

    def cache_key(self, need: PullNeed[GarEntry], namespace: str) -> Hashable:
        return ("gar", need.entry.name, principal_for(need, namespace))

    async def fetch(self, need: PullNeed[GarEntry], namespace: str, attempt: Attempt) -> Credential:
        entry, auth = need.entry, need.entry.auth
        caller = ""  # the federated principal, for hints
        impersonate = ""
        if isinstance(auth, MetadataServer):
            attempt.step = "gcp-metadata"
            credentials = compute_engine.Credentials(
                service_account_email=auth.service_account or "default", scopes=list(SCOPES)
            )
        elif isinstance(auth, ServiceAccountKey):
            credentials = await self._key_credentials(entry, auth, attempt)
        elif isinstance(auth, Federation):
            impersonate = auth.service_account
            attempt.step = "read-token-file"
            if not await asyncio.to_thread(os.access, auth.token_file, os.R_OK):
                raise attempt.error(
                    "unreadable",
                    f"{auth.token_file} cannot be read",
                    hint="mount a projected ServiceAccount token with the provider's allowed "
                    "audience at tokenFile (docs/gcp-federation.md)",
                )
            caller = _principal(auth.audience, _file_subject(auth.token_file))
            info = _pool_info(entry, auth.audience, impersonate)
            info["credential_source"] = {"file": auth.token_file}
            credentials = _identity_pool(info, attempt)
        else:
            credentials, impersonate = await self._pod_credentials(need, auth, namespace, attempt)
            subject = f"system:serviceaccount:{namespace}:{need.identity.service_account}"
            caller = _principal(auth.audience, subject)
        request = _Bounded(
            google.auth.transport.requests.Request(self._session),
            self._request_timeout(attempt),
        )
        try:
            await asyncio.to_thread(credentials.refresh, request)
        except Exception as e:  # mapped right here; google-auth's messages carry no token
            raise map_google_error(attempt, e, impersonate=impersonate, caller=caller) from e
        token, expiry = credentials.token, credentials.expiry
        if not isinstance(token, str) or not isinstance(expiry, datetime.datetime):
            raise attempt.error("bad-response", "no access token or expiry in the answer")
        # google-auth keeps the expiry as a naive UTC datetime.
        expires_at = expiry.replace(tzinfo=datetime.UTC).timestamp()
        self._remember(token, _member(credentials, impersonate, caller), expires_at)
        return Credential(
            username=GAR_USERNAME,
            password=token,
            hosts=(need.host,),
            expires_at=expires_at,
            issued_at=self._clock(),
        )

    def _remember(self, token: str, member: str, expires_at: float) -> None:
        """Who a token stands for, as IAM names it (for ``check_pull``'s hint)."""
        now = self._clock()
        if len(self._members) >= MEMBERS_KEPT:
            for old in [t for t, (_, until) in self._members.items() if until <= now]:
                del self._members[old]
        if member and len(self._members) < MEMBERS_KEPT:
            self._members[token] = (member, expires_at)

    async def _key_credentials(
        self, entry: GarEntry, auth: ServiceAccountKey, attempt: Attempt
    ) -> Any:
        ref = auth.key
        wanted = f"key {ref.key or 'key.json'}"
        secret = await read_secret(self._secrets, ref, attempt, f"a service account JSON {wanted}")
        raw = secret.data.get(ref.key or "key.json")
        where = f"Secret {ref.namespace}/{ref.name}"
        try:
            info = json.loads(raw or b"")
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            # Never quote the document: it is a credential.
            raise attempt.error(
                "bad-key",
                f"{where} has no service account JSON key under {wanted}",
                hint="create it from the file `gcloud iam service-accounts keys create` wrote",
            )
        # The key file's own token_uri is not followed: the JWT it signs goes only to the
        # entry's oauth2TokenUrl (Google's, unless the operator says otherwise).
        info = dict(info, token_uri=entry.oauth2_token_url)
        attempt.step = "gcp-oauth2-token"
        try:
            return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
        except (ValueError, KeyError) as e:
            raise attempt.error(
                "bad-key", f"{where}: the key cannot be used ({type(e).__name__})"
            ) from e

    async def _pod_credentials(
        self,
        need: PullNeed[GarEntry],
        auth: PodServiceAccount,
        namespace: str,
        attempt: Attempt,
    ) -> tuple[Any, str]:
        account = need.identity.service_account
        annotations = await service_account_annotations(self._tokens, namespace, account, attempt)
        impersonate = annotations.get(GSA_ANNOTATION, "")
        token = await service_account_token(
            self._tokens, namespace, account, auth.pod_token_audience, SA_TOKEN_SECONDS, attempt
        )
        info = _pool_info(need.entry, auth.audience, impersonate)
        info["subject_token_supplier"] = _Supplier(token)
        credentials = _identity_pool(info, attempt)
        attempt.step = "gcp-sts"
        return credentials, impersonate

    async def check_pull(
        self, credential: Credential, host: str, repository: str, attempt: Attempt, who: str
    ) -> None:
        """Whether the registry lets ``credential`` read ``repository`` (``PROJECT/REPO/
        IMAGE``), the way a Docker client asks: the challenge of ``/v2/``, a registry token
        from its realm with user ``oauth2accesstoken``, then the repository's tag list.
        For ``doctor``: admissions never pay for it."""
        attempt.step = "gar-pull"
        limit = self._request_timeout(attempt)
        answer = await asyncio.to_thread(
            _docker_read, self._session, credential, host, repository, limit
        )
        status, body = answer
        if status == 200:
            return
        who = self._members.get(credential.password, (who, 0.0))[0]
        code, message = _registry_error(body)
        hint = ""
        if status == 403:
            project, _, rest = repository.partition("/")
            hint = (
                f"grant {who} {READER_ROLE} on repository {rest.split('/', 1)[0]} of project "
                f"{project} (or on the project)"
            )
        elif status == 401:
            hint = "the registry does not accept the token: is this a Google registry host?"
        raise attempt.error(
            code or str(status), message, hint=hint, transient=status >= 500 or status == 429
        )

    async def aclose(self) -> None:
        _close(self._session)


def _close(session: requests.Session) -> None:
    """Closes the session's pooled connections now: urllib3 2 leaves them to its pools'
    finalizers, which run only when a pool is collected (an exception's traceback can
    keep one alive for long)."""
    for adapter in session.adapters.values():
        pools: Any = getattr(getattr(adapter, "poolmanager", None), "pools", None)
        if pools is None:
            continue
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()
    session.close()


def _docker_read(
    session: requests.Session, credential: Credential, host: str, repository: str, timeout: float
) -> tuple[int, bytes]:
    """(status, body) of ``GET /v2/REPOSITORY/tags/list`` after Docker token auth."""
    base = f"https://{host}/v2/"
    try:
        challenge = session.get(base, timeout=timeout)
        params = _bearer_params(challenge.headers.get("Www-Authenticate", ""))
        realm = params.pop("realm", "")
        if not realm:
            return challenge.status_code, challenge.content[:MAX_BODY]
        params["scope"] = f"repository:{repository}:pull"
        answer = session.get(
            realm,
            params=params,
            auth=(credential.username, credential.password),
            timeout=timeout,
        )
        if answer.status_code != 200:
            return answer.status_code, answer.content[:MAX_BODY]
        token = answer.json().get("token") or answer.json().get("access_token") or ""
        read = session.get(
            f"{base}{repository}/tags/list",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
        return read.status_code, read.content[:MAX_BODY]
    except requests.RequestException as e:
        return 0, type(e).__name__.encode()
    except ValueError:
        return 0, b"the registry's token answer is not JSON"


def _bearer_params(challenge: str) -> dict[str, str]:
    """``realm`` and ``service`` of a ``Bearer realm="…",service="…"`` challenge."""
    scheme, _, rest = challenge.partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', rest) if k in ("realm", "service")}


def _registry_error(body: bytes) -> tuple[str, str]:
    """(code, message) of a distribution error body."""
    try:
        errors = json.loads(body).get("errors")
        first = errors[0]
        return str(first.get("code", "")), str(first.get("message", ""))
    except (ValueError, AttributeError, IndexError, TypeError, KeyError):
        return "", body.decode("utf-8", "replace")


def _member(credentials: Any, impersonate: str, caller: str) -> str:
    """The IAM member a fresh token stands for."""
    if impersonate:
        return f"serviceAccount:{impersonate}"
    if caller:
        return caller
    email = getattr(credentials, "service_account_email", "")
    return f"serviceAccount:{email}" if isinstance(email, str) and "@" in email else ""


def _pool_info(entry: GarEntry, audience: str, impersonate: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "audience": audience,
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": entry.sts_url,
    }
    if impersonate:
        base = entry.iam_credentials_url.rstrip("/")
        info["service_account_impersonation_url"] = (
            f"{base}/v1/projects/-/serviceAccounts/{impersonate}:generateAccessToken"
        )
    return info


def _identity_pool(info: Mapping[str, Any], attempt: Attempt) -> Any:
    attempt.step = "gcp-sts"
    try:
        return identity_pool.Credentials(**info).with_scopes(list(SCOPES))
    except (ValueError, exceptions.GoogleAuthError) as e:
        raise attempt.error("bad-config", str(e)) from e


def _file_subject(path: str) -> str:
    """The ``sub`` of the webhook's projected token (for hints only)."""
    try:
        with open(path, encoding="utf-8") as f:
            subject = jwt_claims(f.read().strip()).get("sub")
    except OSError:
        return ""
    return subject if isinstance(subject, str) else ""


def _principal(audience: str, subject: str) -> str:
    """The IAM member of a federated subject: the pool of ``audience`` (a provider)."""
    pool = audience.removeprefix("//iam.googleapis.com/").split("/providers/", 1)[0]
    if not subject or not pool:
        return ""
    return f"principal://iam.googleapis.com/{pool}/subject/{subject}"


def _google_status(body: str) -> tuple[str, str]:
    """(status, message) of a Google API error body (``{"error": {...}}``)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "", ""
    if isinstance(error, dict):
        return str(error.get("status") or error.get("code") or ""), str(error.get("message", ""))
    return (str(error), "") if error else ("", "")


def _sts_hint(code: str, message: str) -> str:
    lowered = message.lower()
    if code == "invalid_target":
        return (
            "the workload identity pool or provider named by audience does not exist or is "
            "disabled: audience is //iam.googleapis.com/projects/NUMBER/locations/global/"
            "workloadIdentityPools/POOL/providers/PROVIDER"
        )
    if "audience" in lowered:
        return (
            "the provider does not accept the token's audience: add it to the provider's "
            "allowed audiences (or set tokenAudience)"
        )
    if "issuer" in lowered:
        return "the provider's issuer URI must be the cluster's service account issuer"
    if "signature" in lowered or "jwk" in lowered:
        return (
            "the provider cannot verify the cluster's tokens: upload the cluster's JWKS "
            "(--jwk-json-path) or make its issuer's discovery document public"
        )
    if code == "invalid_grant":
        return "the provider's attribute mapping or condition refuses this token"
    return ""


def map_google_error(
    attempt: Attempt, exc: Exception, *, impersonate: str = "", caller: str = ""
) -> Exception:
    """What a failed google-auth refresh means for the exchange."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc, exceptions.OAuthError):  # STS answered with an OAuth error
        attempt.step = "gcp-sts"
        found = _ERROR_CODE_RE.search(text)
        code = found.group(1) if found else "error"
        message = (found.group(2) or "") if found else text
        return attempt.error(
            code, message, hint=_sts_hint(code, message), transient=code in _TRANSIENT
        )
    if isinstance(exc, exceptions.RefreshError) and "impersonated" in text:
        attempt.step = "gcp-iam-credentials"
        body = str(exc.args[1]) if len(exc.args) > 1 else ""
        status, message = _google_status(body)
        hint = ""
        if status in ("PERMISSION_DENIED", "403", "NOT_FOUND", "404"):
            who = caller or "the federated principal"
            hint = (
                f"grant {who} roles/iam.workloadIdentityUser (or "
                f"roles/iam.serviceAccountTokenCreator) on service account {impersonate}, and "
                f"check that the account exists; it needs {READER_ROLE} on the repository"
            )
        return attempt.error(
            status or "error", message or text, hint=hint, transient=status in _TRANSIENT
        )
    if attempt.step == "gcp-metadata":
        status_found = re.search(r"Status: (\d{3})|Response status: (\d{3})", text)
        status = next((g for g in (status_found.groups() if status_found else ()) if g), "")
        if status == "404":
            return attempt.error(
                "404",
                "the metadata server has no such service account",
                hint="on GKE, run the node pool with the GKE metadata server (Workload "
                "Identity) and annotate the webhook's ServiceAccount "
                f"{GSA_ANNOTATION}=EMAIL, or grant {READER_ROLE} to its principal; "
                "elsewhere use mode federation",
            )
        if status:
            return attempt.error(status, "metadata server error", transient=status.startswith("5"))
        return attempt.error(
            "unreachable",
            "no answer from the metadata server",
            hint="no Google metadata server here: run on GKE or Compute Engine, or use "
            "mode federation",
            transient=True,
        )
    if isinstance(exc, exceptions.RefreshError):  # the OAuth 2.0 endpoint (key mode)
        code, _, message = text.partition(": ")
        hint = ""
        if code == "invalid_grant":
            hint = (
                "the key was deleted or disabled, or its service account was: create a new "
                "key (or better, use federation)"
            )
        transient = bool(getattr(exc, "retryable", False)) or code in _TRANSIENT
        return attempt.error(code or "error", message or text, hint=hint, transient=transient)
    if isinstance(exc, exceptions.TransportError):
        tls = "CERTIFICATE" in text.upper()
        hint = "set caFile to the CA bundle that signs the endpoint's certificate" if tls else ""
        return attempt.error("tls" if tls else "connection", text, hint=hint, transient=not tls)
    if isinstance(exc, OSError | ValueError | exceptions.GoogleAuthError):
        # e.g. an unreadable federated token file.
        return attempt.error(type(exc).__name__, text)
    return exc


#: The ``gar`` kind's provider (``webhook.config.kinds``).
make = GarProvider.make
