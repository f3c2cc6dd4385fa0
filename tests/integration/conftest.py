"""Integration fixtures: the protocol peers from devenv/peers, an in-memory
implementation of the credentials' Kubernetes interfaces, and a counting,
fault-injecting reverse proxy in front of moto."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from devenv.peers import jws
from devenv.peers.aws import MotoProxy
from devenv.peers.fixtures import azure_emulator, moto_process, moto_server, test_ca
from devenv.peers.tls import new_rsa_key
from webhook.admission.needs import PullNeed
from webhook.config.schema import Config
from webhook.kube.objects import KubeAPIError, SecretData

__all__ = ["azure_emulator", "moto_process", "moto_server", "test_ca"]

#: The issuer a cluster's service account tokens carry (what federated
#: credentials and IAM OIDC providers are configured with).
CLUSTER_ISSUER = "https://oidc.cluster.example"


class Clock:
    """A settable wall clock for the credential cache."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def pull_need(config: Config, host: str, service_account: str = "default") -> PullNeed:
    """What the admission path would ask the cache for, for an image on ``host``."""
    entry = config.entry_for(host)
    assert entry is not None, f"no entry for {host}"
    return PullNeed.make(entry, host, prefix=config.secret_prefix, service_account=service_account)


@dataclass
class MemoryKube:
    """Secrets, ServiceAccounts and TokenRequest in memory, implementing
    SecretReader and ServiceAccountTokens. Tokens are RS256 JWTs shaped like the
    API server's (iss, sub ``system:serviceaccount:NS:NAME``, aud, exp)."""

    key: rsa.RSAPrivateKey = field(default_factory=new_rsa_key)
    secrets: dict[tuple[str, str], SecretData] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    token_requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    failures: dict[str, list[int]] = field(default_factory=dict)
    """Operation (``read_secret``, ``token``, ``service_account``) → statuses to fail with."""

    def put_secret(self, namespace: str, name: str, data: Mapping[str, bytes]) -> None:
        old = self.secrets.get((namespace, name))
        version = str(int(old.resource_version) + 1) if old else "1"
        self.secrets[(namespace, name)] = SecretData(dict(data), version)

    def put_service_account(self, namespace: str, name: str, **annotations: str) -> None:
        self.service_accounts[(namespace, name)] = dict(annotations)

    def fail(self, operation: str, *statuses: int) -> None:
        self.failures.setdefault(operation, []).extend(statuses)

    def _maybe_fail(self, operation: str) -> None:
        pending = self.failures.get(operation)
        if pending:
            raise KubeAPIError(pending.pop(0), "injected fault")

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        self._maybe_fail("read_secret")
        return self.secrets.get((namespace, name))

    async def service_account_annotations(
        self, namespace: str, name: str
    ) -> Mapping[str, str] | None:
        self._maybe_fail("service_account")
        return self.service_accounts.get((namespace, name))

    async def token(
        self, namespace: str, service_account: str, audience: str, expiration_seconds: int
    ) -> str:
        self._maybe_fail("token")
        if (namespace, service_account) not in self.service_accounts:
            raise KubeAPIError(404, "NotFound")
        self.token_requests.append((namespace, service_account, audience, expiration_seconds))
        now = int(time.time())
        claims = {
            "iss": CLUSTER_ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now + expiration_seconds,
        }
        return jws.sign({"alg": "RS256", "kid": "cluster", "typ": "JWT"}, claims, self.key)


@pytest.fixture
def kube() -> MemoryKube:
    return MemoryKube()


@pytest_asyncio.fixture
async def aws(moto_server: str) -> AsyncIterator[MotoProxy]:
    proxy = MotoProxy(moto_server)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
