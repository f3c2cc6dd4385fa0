"""The Kubernetes reads the providers make, with their failures mapped to
RegistryAuthError (step ``read-secret``, ``service-account`` or
``service-account-token``)."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.config.entry import SecretRef
from webhook.credentials.base import (
    Attempt,
    RegistryAuthError,
    SecretReader,
    ServiceAccountTokens,
)
from webhook.kube.errors import ApiError, ForbiddenError
from webhook.kube.objects import SecretData
from webhook.telemetry import redact

_OUTSIDE = "run inside the cluster, or give doctor a kubeconfig"


def _failed(attempt: Attempt, error: ApiError, doing: str, grant: str) -> RegistryAuthError:
    """The failure of an API call ``doing`` something; a 403 hints at the ``grant`` missing."""
    hint = f"grant the webhook {grant}" if isinstance(error, ForbiddenError) else ""
    return attempt.error(error.code, doing, hint=hint, transient=error.transient)


async def read_secret(
    secrets: SecretReader | None, ref: SecretRef, attempt: Attempt, wanted: str
) -> SecretData:
    """The Secret ``ref`` names; ``wanted`` says which keys it should have (for hints)."""
    attempt.step = "read-secret"
    where = f"{ref.namespace}/{ref.name}"
    if secrets is None:
        raise attempt.error("no-kubernetes", f"cannot read Secret {where}", hint=_OUTSIDE)
    try:
        secret = await secrets.read_secret(ref.namespace, ref.name)
    except ApiError as e:
        raise _failed(attempt, e, f"reading Secret {where}", f"get on Secret {where}") from e
    if secret is None:
        raise attempt.error(
            "NotFound",
            f"Secret {where} does not exist",
            hint=f"create Secret {where} with {wanted}",
        )
    for value in secret.data.values():  # passwords, keys, client secrets: never in a line
        redact.remember(value.decode("utf-8", "replace").strip())
    return secret


async def service_account_annotations(
    tokens: ServiceAccountTokens | None, namespace: str, name: str, attempt: Attempt
) -> Mapping[str, str]:
    attempt.step = "service-account"
    where = f"{namespace}/{name}"
    if tokens is None:
        raise attempt.error("no-kubernetes", f"cannot read ServiceAccount {where}", hint=_OUTSIDE)
    try:
        annotations = await tokens.service_account_annotations(namespace, name)
    except ApiError as e:
        raise _failed(
            attempt, e, f"reading ServiceAccount {where}", "get on serviceaccounts"
        ) from e
    if annotations is None:
        raise attempt.error("NotFound", f"ServiceAccount {where} does not exist")
    return annotations


async def service_account_token(
    tokens: ServiceAccountTokens | None,
    namespace: str,
    name: str,
    audience: str,
    seconds: int,
    attempt: Attempt,
) -> str:
    """A TokenRequest token of the pod's service account for ``audience``."""
    attempt.step = "service-account-token"
    where = f"{namespace}/{name}"
    if tokens is None:
        raise attempt.error("no-kubernetes", f"no TokenRequest for {where}", hint=_OUTSIDE)
    try:
        return await tokens.token(namespace, name, audience, seconds)
    except ApiError as e:
        grant = "create on serviceaccounts/token"
        raise _failed(attempt, e, f"TokenRequest for {where}", grant) from e
