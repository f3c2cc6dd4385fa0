"""Registry credentials: identity exchange for ACR and ECR, static credentials for
any registry, behind one expiry-aware, single-flight cache (``CredentialCache``)."""

from __future__ import annotations

from webhook.credentials.base import (
    ACR_USERNAME,
    Credential,
    Provider,
    RegistryAuthError,
    SecretReader,
    ServiceAccountTokens,
)
from webhook.credentials.cache import CredentialCache
from webhook.credentials.retry import RetryPolicy
from webhook.kube.objects import SecretData

__all__ = [
    "ACR_USERNAME",
    "Credential",
    "CredentialCache",
    "Provider",
    "RegistryAuthError",
    "RetryPolicy",
    "SecretData",
    "SecretReader",
    "ServiceAccountTokens",
]
