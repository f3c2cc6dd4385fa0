"""Worker roles on a real API server: only a replica's primary worker claims the Lease."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from dataclasses import replace

from devenv.controlplane import ControlPlane
from devenv.support.configs import sample_config
from webhook.cli.serve import start_manager
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.kube import client as kubeclient
from webhook.kube.calls import Kube, connect
from webhook.server.app import ServerState
from webhook.telemetry.metrics import Metrics
from webhook.upkeep.election import RENEW_SECONDS


def lease_config(namespace: str) -> Config:
    config = sample_config()
    lease = f"lease-{uuid.uuid4().hex[:6]}"
    return replace(config, namespace=namespace, refresh=replace(config.refresh, lease_name=lease))


async def lease_holder(kube: Kube, config: Config, wait: float) -> str | None:
    """The Lease's holder once it exists, or None if it does not appear within ``wait``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        lease = await kube.get_lease(config.namespace, config.refresh.lease_name)
        if lease is not None:
            return str(lease["spec"]["holderIdentity"])
        if loop.time() > deadline:
            return None
        await asyncio.sleep(0.2)


async def test_a_secondary_worker_never_claims_the_lease_and_the_primary_does(
    controlplane: ControlPlane, namespace: str
) -> None:
    config = lease_config(namespace)
    kube = Kube(await connect(str(controlplane.kubeconfig)))
    try:
        async with AsyncExitStack() as stack:
            await start_manager(
                ConfigStore(config),
                stack,
                metrics=Metrics(),
                state=ServerState(),
                connection=await kubeclient.load(controlplane.kubeconfig),
                pod_name="replica-a",
                leader_election=False,
            )
            # Two renewal periods: a worker that took part would have created the Lease.
            assert await lease_holder(kube, config, wait=2 * RENEW_SECONDS) is None
        async with AsyncExitStack() as stack:
            await start_manager(
                ConfigStore(config),
                stack,
                metrics=Metrics(),
                state=ServerState(),
                connection=await kubeclient.load(controlplane.kubeconfig),
                pod_name="replica-a",
            )
            assert await lease_holder(kube, config, wait=2 * RENEW_SECONDS) == "replica-a"
    finally:
        await kube.close()
