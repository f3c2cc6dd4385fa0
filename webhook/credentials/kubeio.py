"""The Kubernetes reads the providers make, with their failures mapped to
RegistryAuthError (step ``read-secret``, ``service-account`` or
``service-account-token``)."""

from __future__ import annotations

from collections.abc import Mapping

from webhook.config.entry import SecretRef
from webhook.credentials.base import Attempt, SecretReader, ServiceAccountTokens
from webhook.kube.errors import ApiError, ForbiddenError
from webhook.kube.objects import SecretData
from webhook.telemetry import redact

_OUTSIDE = "run inside the cluster, or give doctor a kubeconfig"


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
        code, transient = e.code, e.transient
        hint = f"grant the webhook get on Secret {where}" if isinstance(e, ForbiddenError) else ""
        raise attempt.error(code, f"reading Secret {where}", hint=hint, transient=transient) from e
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
        code, transient = e.code, e.transient
        hint = "grant the webhook get on serviceaccounts" if isinstance(e, ForbiddenError) else ""
        raise attempt.error(
            code, f"reading ServiceAccount {where}", hint=hint, transient=transient
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
        code, transient = e.code, e.transient
        forbidden = isinstance(e, ForbiddenError)
        hint = "grant the webhook create on serviceaccounts/token" if forbidden else ""
        raise attempt.error(
            code, f"TokenRequest for {where}", hint=hint, transient=transient
        ) from e
