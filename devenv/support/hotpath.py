"""A secret manager set up for the hot path: records pre-filled, no way to reach a network."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal, NoReturn

from webhook.admission.needs import PullNeed
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.pullsecrets.manager import PullSecretManager
from webhook.pullsecrets.records import ManagedSecret
from webhook.pullsecrets.writer import new_record

#: Every touch of a NoNetwork stand-in and every outbound connection attempt in this
#: process, by what was called: the benchmark reports it and asserts it stays empty.
CALLS: Counter[str] = Counter()


class NoNetwork:
    """Stands where the Kubernetes client and the credential cache go: any use fails."""

    def __getattr__(self, name: str) -> NoReturn:
        CALLS[f"{type(self).__name__}.{name}"] += 1
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
    manager = PullSecretManager(ConfigStore(config), kube, cache)
    manager.namespaces.replace_all(opted_in(*namespaces))
    return manager


@contextmanager
def no_outbound_connections() -> Iterator[Counter[str]]:
    """Count (and refuse) every outbound connection and name lookup made in this process.

    Covers blocking and asyncio sockets (the selector loop connects through
    ``socket.socket.connect``) and asyncio's own resolver and connection helpers.
    """
    refused: Any = {}

    def refuse(what: str) -> NoReturn:
        CALLS[what] += 1
        raise ConnectionRefusedError(f"the hot path tried {what}")

    def connect(self: socket.socket, *args: Any) -> NoReturn:
        refuse("socket.connect")

    def connect_ex(self: socket.socket, *args: Any) -> NoReturn:
        refuse("socket.connect_ex")

    async def create_connection(self: asyncio.AbstractEventLoop, *a: Any, **k: Any) -> NoReturn:
        refuse("loop.create_connection")

    async def getaddrinfo(self: asyncio.AbstractEventLoop, *a: Any, **k: Any) -> NoReturn:
        refuse("loop.getaddrinfo")

    patches: list[tuple[Any, str, Any]] = [
        (socket.socket, "connect", connect),
        (socket.socket, "connect_ex", connect_ex),
        (asyncio.BaseEventLoop, "create_connection", create_connection),
        (asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo),
    ]
    for owner, name, replacement in patches:
        refused[(owner, name)] = getattr(owner, name)
        setattr(owner, name, replacement)
    try:
        yield CALLS
    finally:
        for (owner, name), original in refused.items():
            setattr(owner, name, original)


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
    return record.ready(
        "6a1e0d4c-0000-4000-8000-000000000001", now + expires_in, now + refresh_in, now
    )


def remember(manager: PullSecretManager, record: ManagedSecret) -> None:
    """What the record and marker watches would hold for a Secret the webhook made."""
    manager.records.put(record)
    if record.secret_uid:
        manager.markers.add(record.namespace, record.name, record.secret_uid)
