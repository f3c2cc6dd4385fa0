"""How Entra ID, IMDS, ACR and Kubernetes failures are retried or reported, with
azure-identity's real credentials against the emulator's fault injection."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from devenv.peers.traffic import ACR_EXCHANGE, ACR_TOKEN, ENTRA_TOKEN, IMDS_TOKEN
from tests.integration.conftest import CLUSTER_ISSUER
from tests.support.azure import APP_SECRET, Azure, azure, azure_env
from webhook.config.acr import AcrEntry
from webhook.credentials import RegistryAuthError
from webhook.credentials.acr import ROLE_HINT, AcrProvider
from webhook.credentials.base import ProviderContext
from webhook.credentials.entra import IMDS_NOT_FOUND_HINT

__all__ = ["azure", "azure_env"]

#: Short enough that an injected stall counts as a timeout, long enough for TLS on
#: a loaded 2-core machine.
STALL_TIMEOUT = 0.5


def service_principal(azure: Azure, scope: str = "") -> dict[str, Any]:
    return {"auth": azure.sp_auth(azure.app_with_pull()), "scope": scope}


def managed_identity(azure: Azure, scope: str = "") -> dict[str, Any]:
    identity = azure.emulator.add_managed_identity(azure.tenant)
    azure.registry.assign_role(identity.object_id)
    return {"auth": {"mode": "managedIdentity", "clientId": identity.client_id}, "scope": scope}


Setup = Callable[[Azure], dict[str, Any]]


@pytest.mark.parametrize(
    ("setup", "endpoint", "status", "step", "code"),
    [
        pytest.param(service_principal, ENTRA_TOKEN, 503, "entra-token", "503", id="entra-503"),
        pytest.param(service_principal, ENTRA_TOKEN, 429, "entra-token", "429", id="entra-429"),
        pytest.param(service_principal, ENTRA_TOKEN, 500, "entra-token", "500", id="entra-500"),
        pytest.param(managed_identity, IMDS_TOKEN, 503, "imds", "503", id="imds-503"),
        pytest.param(managed_identity, IMDS_TOKEN, 429, "imds", "429", id="imds-429"),
        pytest.param(
            managed_identity, IMDS_TOKEN, None, "imds", "unreachable", id="imds-no-answer"
        ),
        pytest.param(
            service_principal, ACR_EXCHANGE, 503, "acr-exchange", "503", id="exchange-503"
        ),
        pytest.param(
            service_principal, ACR_EXCHANGE, 429, "acr-exchange", "429", id="exchange-429"
        ),
        pytest.param(
            service_principal, ACR_EXCHANGE, None, "acr-exchange", "timeout", id="exchange-stall"
        ),
        pytest.param(
            lambda a: service_principal(a, "repository:demo/hello:pull"),
            ACR_TOKEN,
            502,
            "acr-scoped-token",
            "502",
            id="scoped-token-502",
        ),
    ],
)
async def test_a_transient_failure_is_retried_and_then_succeeds(
    azure: Azure,
    caplog: pytest.LogCaptureFixture,
    setup: Setup,
    endpoint: str,
    status: int | None,
    step: str,
    code: str,
) -> None:
    caplog.set_level(logging.INFO, logger="webhook.credentials")
    entry = setup(azure)
    config = azure.config(entry["auth"], scope=entry["scope"])
    # status None: the endpoint stalls past the request timeout instead of failing.
    delay = 0.0 if status else 2 * STALL_TIMEOUT
    azure.emulator.traffic.inject_fault(endpoint, status=status, delay=delay, retry_after=0.01)
    provider = AcrProvider(
        ProviderContext(config.ca_file, azure.kube, azure.kube), request_timeout=STALL_TIMEOUT
    )
    async with azure.cache(config, providers={AcrEntry: provider}) as cache:
        credential = await cache.get(azure.need(config), "team-a")
    assert credential.password
    # The emulator records a stalled request when its stall ends.
    await wait_for_count(azure, endpoint, 2, within=4 * STALL_TIMEOUT)
    assert azure.count(endpoint) == 2  # one failure, one success: no retries inside the SDK
    assert f"after {step}: {code}" in caplog.text


async def wait_for_count(azure: Azure, endpoint: str, count: int, within: float) -> None:
    step = 0.02
    for _ in range(int(within / step)):
        if azure.count(endpoint) >= count:
            return
        await asyncio.sleep(step)


async def test_kubernetes_api_failures_are_retried_when_transient(azure: Azure) -> None:
    entry = service_principal(azure)
    config = azure.config(entry["auth"])
    azure.kube.fail("read_secret", 503, 429)
    async with azure.cache(config) as cache:
        await cache.get(azure.need(config), "team-a")
    assert azure.kube.failures["read_secret"] == []
    assert azure.count(ACR_EXCHANGE) == 1


def wrong_secret(azure: Azure) -> dict[str, Any]:
    auth = azure.sp_auth(azure.app_with_pull(secret="the-real-secret"))
    return {"auth": auth}


def unknown_client(azure: Azure) -> dict[str, Any]:
    auth = azure.sp_auth(azure.app_with_pull())
    return {"auth": {**auth, "clientId": str(uuid.uuid4())}}


def unknown_tenant(azure: Azure) -> dict[str, Any]:
    auth = azure.sp_auth(azure.app_with_pull())
    return {"auth": {**auth, "tenantId": str(uuid.uuid4())}}


def missing_secret(azure: Azure) -> dict[str, Any]:
    auth = azure.sp_auth(azure.app_with_pull())
    return {"auth": {**auth, "clientSecretRef": {"name": "no-such-secret"}}}


def forbidden_secret(azure: Azure) -> dict[str, Any]:
    azure.kube.fail("read_secret", 403)
    return service_principal(azure)


def unassigned_identity(azure: Azure) -> dict[str, Any]:
    identity = azure.emulator.add_managed_identity(azure.tenant, attach=False)
    return {"auth": {"mode": "managedIdentity", "clientId": identity.client_id}}


def no_pull_role(azure: Azure) -> dict[str, Any]:
    app = azure.emulator.register_app(azure.tenant, secret=APP_SECRET)
    return {"auth": azure.sp_auth(app)}


def pod_identity(federated_subject: str | None, annotate: bool = True) -> Setup:
    def setup(azure: Azure) -> dict[str, Any]:
        app = azure.app_with_pull()
        if federated_subject is not None:
            azure.emulator.add_federated_credential(
                azure.tenant, app.client_id, issuer=CLUSTER_ISSUER, subject=federated_subject
            )
        annotations = {"azure.workload.identity/tenant-id": azure.tenant}
        if annotate:
            annotations["azure.workload.identity/client-id"] = app.client_id
        azure.kube.put_service_account("team-a", "default", **annotations)
        return {"auth": {"mode": "podServiceAccount"}}

    return setup


@pytest.mark.parametrize(
    ("setup", "endpoint", "step", "code", "hint"),
    [
        pytest.param(
            wrong_secret, ENTRA_TOKEN, "entra-token", "AADSTS7000215", "client secret", id="secret"
        ),
        pytest.param(
            unknown_client, ENTRA_TOKEN, "entra-token", "AADSTS700016", "not found", id="client-id"
        ),
        pytest.param(
            unknown_tenant, ENTRA_TOKEN, "entra-token", "AADSTS90002", "tenant", id="tenant-id"
        ),
        pytest.param(
            unassigned_identity, IMDS_TOKEN, "imds", "400", IMDS_NOT_FOUND_HINT, id="imds"
        ),
        pytest.param(no_pull_role, ACR_EXCHANGE, "acr-exchange", "401", ROLE_HINT, id="no-role"),
        pytest.param(
            pod_identity(None),
            ENTRA_TOKEN,
            "entra-token",
            "AADSTS70021",
            "federated credential",
            id="no-federated-credential",
        ),
        pytest.param(
            pod_identity("system:serviceaccount:team-b:default"),
            ENTRA_TOKEN,
            "entra-token",
            "AADSTS700213",
            "subject",
            id="other-subject",
        ),
        pytest.param(
            pod_identity("system:serviceaccount:team-a:default", annotate=False),
            ENTRA_TOKEN,
            "service-account",
            "no-identity-annotation",
            "azure.workload.identity/client-id",
            id="no-client-id-annotation",
        ),
        pytest.param(
            missing_secret, ENTRA_TOKEN, "read-secret", "NotFound", "clientSecret", id="no-secret"
        ),
        pytest.param(
            forbidden_secret, ENTRA_TOKEN, "read-secret", "403", "grant", id="secret-forbidden"
        ),
    ],
)
async def test_a_permanent_failure_is_not_retried_and_says_what_to_fix(
    azure: Azure, setup: Setup, endpoint: str, step: str, code: str, hint: str
) -> None:
    entry = setup(azure)
    config = azure.config(entry["auth"])
    async with azure.cache(config) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(azure.need(config), "team-a")
        # Asked again at once, the cache answers from its memory of the failure.
        with pytest.raises(RegistryAuthError):
            await cache.get(azure.need(config), "team-a")
    error = caught.value
    assert (error.entry, error.step, error.code, error.transient) == ("contoso", step, code, False)
    assert hint in error.hint
    reached = 1 if step not in ("service-account", "read-secret") else 0
    assert azure.count(endpoint) == reached
    line = str(error)
    assert "\n" not in line and "eyJ" not in line
    assert all(part in line for part in ("contoso", error.identity, step, code, error.hint))


async def test_a_get_past_its_deadline_times_out_while_the_exchange_goes_on(
    azure: Azure,
) -> None:
    entry = service_principal(azure)
    config = azure.config(entry["auth"])
    azure.emulator.traffic.inject_fault(ACR_EXCHANGE, status=None, delay=1.0)
    async with azure.cache(config) as cache:
        with pytest.raises(RegistryAuthError) as caught:
            await cache.get(azure.need(config), "team-a", deadline=time.monotonic() + 0.2)
        assert (caught.value.code, caught.value.transient) == ("timeout", True)
        credential = await asyncio.wait_for(cache.get(azure.need(config), "team-a"), 5)
    assert credential.password
    assert azure.count(ACR_EXCHANGE) == 1
