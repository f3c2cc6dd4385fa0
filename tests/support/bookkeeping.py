"""The pull-secret bookkeeping's tests' own pieces: a counting credential minter, the ACR
need of one sample pod, and the record the in-memory API server holds for it."""

from __future__ import annotations

import time
from typing import Any

from devenv.support.memkube import MemKube
from devenv.support.reviews import make_pod
from webhook.admission.needs import PullNeed, pull_needs
from webhook.config.schema import Config
from webhook.credentials.base import Credential
from webhook.pullsecrets.records import record_name

ACR = "contoso.azurecr.io/app:1"

HOME = "pull-secret-webhook"


class Minter:
    """The credential cache's place: a fresh credential per call, counted."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.lifetime = lifetime
        self.calls = 0

    async def get(self, need: PullNeed, namespace: str) -> Credential:
        self.calls += 1
        now = time.time()
        return Credential(
            "00000000-0000-0000-0000-000000000000",
            f"token-{self.calls}",
            (need.host,),
            expires_at=now + self.lifetime,
            issued_at=now,
        )


def need_of(config: Config) -> PullNeed:
    [need] = pull_needs(config, make_pod(ACR))
    return need


def record_of(kube: MemKube, namespace: str, need: PullNeed) -> dict[str, Any]:
    return kube.records[(HOME, record_name(namespace, need.secret_name))]
