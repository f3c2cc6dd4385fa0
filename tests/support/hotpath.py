"""A secret manager set up for the hot path: records pre-filled, no way to reach a network."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, NoReturn

from webhook.config import Config
from webhook.needs import PullNeed
from webhook.pullsecrets import PullSecretManager, new_record
from webhook.records import ManagedSecret


class NoNetwork:
    """Stands where the Kubernetes client and the credential cache go: any use fails."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"the hot path called {name}()")


def opted_in(*names: str) -> list[dict[str, Any]]:
    """Namespace objects as the watch delivers them, labelled for injection."""
    return [
        {"metadata": {"name": n, "labels": {"pull-secret-webhook/inject": "enabled"}}}
        for n in names
    ]


def offline_manager(config: Config, namespaces: Sequence[str] = ("team-a",)) -> PullSecretManager:
    kube: Any = NoNetwork()
    cache: Any = NoNetwork()
    manager = PullSecretManager(config, kube, cache)
    manager.namespaces.replace_all(opted_in(*namespaces))
    return manager


def known_secret(
    need: PullNeed,
    *,
    namespace: str = "team-a",
    expires_in: float = 3600,
    refresh_in: float = 1800,
    state: Literal["Ready", "Foreign"] = "Ready",
) -> ManagedSecret:
    """The record of a secret made ``expires_in``/``refresh_in`` seconds from expiry."""
    now = time.time()
    record = replace(new_record(namespace, need, now), resource_version="7")
    if state == "Foreign":
        return record.foreign()
    return record.ready("6a1e0d4c-0000-4000-8000-000000000001", now + expires_in, now + refresh_in)


def remember(manager: PullSecretManager, record: ManagedSecret) -> None:
    """What the record and marker watches would hold for a Secret the webhook made."""
    manager.records.put(record)
    if record.secret_uid:
        manager.markers.add(record.namespace, record.name, record.secret_uid)
