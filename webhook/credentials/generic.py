"""Static registry credentials from a Kubernetes Secret.

The Secret holds ``username`` and ``password`` keys, or a ``.dockerconfigjson``
(the key named by ``secretRef.key``, default ``.dockerconfigjson``) whose
``auths`` has the registry host or exactly one entry. Static credentials do not
expire, so two intervals stand in for an expiry:

- every ``RECHECK_SECONDS`` (30 s) the cache reads the Secret again; an unchanged
  resourceVersion keeps the same Credential, a changed one (a rotated password)
  yields a new Credential that the next admission writes;
- ``NOMINAL_LIFETIME`` (1 h) is the expiry given to the Credential, so the
  refresher rewrites the pull secrets of an unchanged Secret at most about once
  per ``refresh.fraction`` of an hour.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.admission.needs import PullNeed
from webhook.config.generic import GenericEntry
from webhook.credentials.base import Attempt, Credential, Provider, ProviderContext, SecretReader
from webhook.credentials.kubeio import read_secret
from webhook.kube.objects import DOCKERCONFIGJSON, SecretData

#: How often a cached generic credential is checked against its Secret: a rotated
#: password reaches new admissions within 30 s for the price of one GET per 30 s.
RECHECK_SECONDS = 30.0
#: The expiry given to static credentials (see the module docstring).
NOMINAL_LIFETIME = 3600.0


@dataclass(frozen=True)
class _Seen:
    resource_version: str
    credential: Credential


def make(context: ProviderContext) -> Provider[GenericEntry]:
    """The ``generic`` kind's provider (``webhook.config.kinds``)."""
    return GenericProvider(context.secrets, clock=context.clock)


class GenericProvider:
    """Reads username/password for ``generic`` entries."""

    recheck_seconds: float | None = RECHECK_SECONDS

    def __init__(
        self, secrets: SecretReader | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._secrets = secrets
        self._clock = clock
        self._seen: dict[Hashable, _Seen] = {}

    def cache_key(self, need: PullNeed[GenericEntry], namespace: str) -> Hashable:
        return ("generic", need.entry.name, need.host)

    async def fetch(
        self, need: PullNeed[GenericEntry], namespace: str, attempt: Attempt
    ) -> Credential:
        auth = need.entry.auth
        ref = auth.secret
        where = f"{ref.namespace}/{ref.name}"
        secret = await read_secret(
            self._secrets, ref, attempt, "keys username and password (or a .dockerconfigjson)"
        )
        key = self.cache_key(need, namespace)
        now = self._clock()
        seen = self._seen.get(key)
        if (
            seen is not None
            and secret.resource_version
            and seen.resource_version == secret.resource_version
            and now < seen.credential.issued_at + NOMINAL_LIFETIME / 2
        ):
            return seen.credential
        username, password = _parse(secret, ref.key, need.host, attempt, where)
        credential = Credential(
            username=username,
            password=password,
            hosts=(need.host,),
            issued_at=now,
            expires_at=now + NOMINAL_LIFETIME,
        )
        self._seen[key] = _Seen(secret.resource_version, credential)
        return credential

    async def aclose(self) -> None:
        self._seen.clear()


def _parse(
    secret: SecretData, key: str, host: str, attempt: Attempt, where: str
) -> tuple[str, str]:
    data = secret.data
    if not key and "username" in data and "password" in data:
        return _text(data["username"], attempt, where), _text(data["password"], attempt, where)
    config_key = key or DOCKERCONFIGJSON
    raw = data.get(config_key)
    if raw is None:
        raise attempt.error(
            "missing-keys",
            f"Secret {where} has neither username/password nor {config_key}",
            hint="put the credentials under keys username and password",
        )
    found = _from_docker_config(raw, host)
    if found is None:
        # Never quote the document: it is a credential.
        raise attempt.error(
            "no-auth-for-host",
            f"{config_key} in Secret {where} has no usable auths entry for {host}",
            hint=f"add an auths entry for {host} with username/password or auth",
        )
    return found


def _text(value: bytes, attempt: Attempt, where: str) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise attempt.error("not-utf8", f"a key of Secret {where} is not UTF-8") from None


def _from_docker_config(raw: bytes, host: str) -> tuple[str, str] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict) or not auths:
        return None
    entry = _lookup(auths, host)
    if entry is None:
        return None
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return username, password
    encoded = entry.get("auth")
    if isinstance(encoded, str):
        try:
            user, sep, secret = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if sep and user:
            return user, secret
    return None


def _lookup(auths: Mapping[str, Any], host: str) -> Mapping[str, Any] | None:
    """The auths entry for ``host``: exact, or written as a URL (``https://host/v1/``, as
    old ``docker login`` did), or the only entry when there is just one."""
    for name, value in auths.items():
        bare = name.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        if bare.lower() == host and isinstance(value, Mapping):
            return value
    if len(auths) == 1:
        only = next(iter(auths.values()))
        return only if isinstance(only, Mapping) else None
    return None
