"""A secret manager set up for the hot path: index pre-filled, no way to reach a network."""

from __future__ import annotations

import time
from typing import Any, NoReturn

from webhook.config import Config
from webhook.kube import to_rfc3339
from webhook.needs import PullNeed
from webhook.pullsecrets import (
    ANN_EXPIRES,
    ANN_REFRESH,
    MANAGED_BY,
    MANAGER,
    PullSecretManager,
    SecretRecord,
)


class NoNetwork:
    """Stands where the Kubernetes client and the credential cache go: any use fails."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"the hot path called {name}()")


def offline_manager(config: Config) -> PullSecretManager:
    kube: Any = NoNetwork()
    cache: Any = NoNetwork()
    return PullSecretManager(config, kube, cache)


def known_secret(
    need: PullNeed,
    *,
    namespace: str = "team-a",
    expires_in: float = 3600,
    refresh_in: float = 1800,
    managed: bool = True,
) -> SecretRecord:
    """The index record of a secret made ``expires_in``/``refresh_in`` seconds from expiry."""
    now = time.time()
    return SecretRecord.from_secret(
        {
            "metadata": {
                "namespace": namespace,
                "name": need.secret_name,
                "resourceVersion": "7",
                "labels": {MANAGED_BY: MANAGER} if managed else {},
                "annotations": {
                    ANN_EXPIRES: to_rfc3339(now + expires_in),
                    ANN_REFRESH: to_rfc3339(now + refresh_in),
                },
            }
        }
    )
