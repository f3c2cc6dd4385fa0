"""Azure for the ACR tests: the Entra ID / IMDS / ACR emulator with a registry behind it, the
environment azure-identity reads, an ACR config and a credential cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from devenv.peers.acr import AcrRegistry
from devenv.peers.azure import AzureEmulator
from devenv.peers.directory import Principal
from tests.integration.conftest import CLUSTER_ISSUER, MemoryKube, pull_need
from webhook.admission.needs import PullNeed
from webhook.config.load import parse_config
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.credentials import CredentialCache, RetryPolicy

#: Retries in milliseconds: the tests check how often, not how patiently.
FAST = RetryPolicy(first_delay=0.01, max_delay=0.05)

SECRET_NAMESPACE = "pull-secret-webhook"

APP_SECRET = "app-secret-value"  # the registered app's client secret in the emulator

#: Variables that would make azure-identity look elsewhere than the test says.
AZURE_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


@dataclass
class Azure:
    emulator: AzureEmulator
    tenant: str
    registry: AcrRegistry
    kube: MemoryKube

    @property
    def host(self) -> str:
        return self.registry.login_server

    def config(self, auth: dict[str, Any], *, scope: str = "", ca: bool = True) -> Config:
        entry: dict[str, Any] = {"name": "contoso", "kind": "acr", "hosts": [self.host]}
        entry["auth"] = {"authorityHost": self.emulator.authority_host, **auth}
        if scope:
            entry["scope"] = scope
        document: dict[str, Any] = {"registries": [entry]}
        if ca:
            document["caFile"] = str(self.emulator.ca_path)
        return parse_config(document)

    def need(self, config: Config, service_account: str = "default") -> PullNeed:
        return pull_need(config, self.host, service_account)

    def cache(self, config: Config, **kwargs: Any) -> CredentialCache:
        return CredentialCache(ConfigStore(config), self.kube, self.kube, retry=FAST, **kwargs)

    def app_with_pull(self, secret: str = APP_SECRET, **kwargs: Any) -> Principal:
        app = self.emulator.register_app(self.tenant, secret=secret, **kwargs)
        self.registry.assign_role(app.object_id)
        return app

    def sp_auth(self, app: Principal) -> dict[str, Any]:
        self.kube.put_secret(SECRET_NAMESPACE, "sp", {"clientSecret": APP_SECRET.encode()})
        return {
            "mode": "servicePrincipal",
            "tenantId": self.tenant,
            "clientId": app.client_id,
            "clientSecretRef": {"name": "sp"},
        }

    def count(self, endpoint: str) -> int:
        return self.emulator.traffic.count(endpoint)


@pytest.fixture(autouse=True)
def azure_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest_asyncio.fixture
async def azure(
    azure_emulator: AzureEmulator, kube: MemoryKube, monkeypatch: pytest.MonkeyPatch
) -> Azure:
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", azure_emulator.imds_host)
    # Federated assertions must carry a signature the cluster's keys verify.
    azure_emulator.register_issuer_keys(CLUSTER_ISSUER, [kube.key.public_key()])
    registry = await azure_emulator.add_registry("contoso")
    return Azure(azure_emulator, azure_emulator.add_tenant(), registry, kube)
