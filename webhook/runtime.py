"""Wires the server to its secret source for ``python -m webhook serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack

from webhook.admission import SecretSource
from webhook.config import Config
from webhook.configwatch import ConfigStore, ConfigWatcher
from webhook.credentials.cache import CredentialCache
from webhook.kube import Kube, connect
from webhook.logs import log_context
from webhook.metrics import Metrics
from webhook.pullsecrets import PullSecretManager
from webhook.refresher import Refresher
from webhook.server import (
    SHUTDOWN_TIMEOUT,
    NamesOnlySource,
    ServeOptions,
    ServerState,
    serve_forever,
    start_server,
)
from webhook.workers import SINGLE, Secondaries, Worker

log = logging.getLogger(__name__)


async def run_server(
    config: Config,
    args: argparse.Namespace,
    worker: Worker = SINGLE,
    secondaries: Secondaries | None = None,
) -> int:
    """Serve until stopped. With several workers, this process is one of them: only the
    primary serves health and metrics, takes part in leader election and supervises."""
    secondaries = secondaries or Secondaries()
    metrics = Metrics()
    state = ServerState()
    options = ServeOptions(
        cert_file=args.cert_file,
        key_file=args.key_file,
        host=args.bind,
        port=args.port,
        health_host=args.health_bind,
        health_port=args.health_port,
        health=worker.primary,
        reuse_port=worker.shares_port,
    )
    store = ConfigStore(config)
    watcher = ConfigWatcher(args.config_path, store, on_reload=lambda ok: _count(metrics, ok))

    lost: list[int] = []

    def worker_exited(pid: int, code: int) -> None:
        if state.shutting_down:
            return
        lost.append(pid)
        log.error("worker (pid %d) exited with code %d: stopping this replica", pid, code)
        os.kill(os.getpid(), signal.SIGTERM)  # the same orderly shutdown as the kubelet's

    async with AsyncExitStack() as stack:
        if worker.shares_port:
            stack.enter_context(log_context(worker=str(worker.index)))
        source: SecretSource
        if args.names_only:
            log.warning("--names-only: secret names are patched but no secret is created")
            source = NamesOnlySource()
        else:
            source = await start_manager(
                store,
                stack,
                metrics=metrics,
                state=state,
                kubeconfig=args.kubeconfig,
                pod_name=args.pod_name,
                leader_election=worker.primary,
            )
        running = await start_server(store, source, options, metrics=metrics, state=state)
        running.tasks.append(asyncio.create_task(watcher.watch()))
        watch = asyncio.create_task(secondaries.watch(worker_exited))
        await serve_forever(
            running, shutdown_delay=args.shutdown_delay, on_signal=secondaries.signal
        )
        watch.cancel()
        await secondaries.wait(SHUTDOWN_TIMEOUT)
    return 1 if lost else 0


def _count(metrics: Metrics, ok: bool) -> None:
    metrics.config_reloads.labels("ok" if ok else "error").inc()
    metrics.config_last_reload_ok.set(1 if ok else 0)


async def start_manager(
    store: Config | ConfigStore,
    stack: AsyncExitStack,
    *,
    metrics: Metrics,
    state: ServerState,
    kubeconfig: str | None,
    pod_name: str,
    leader_election: bool = True,
) -> PullSecretManager:
    """Connect to the cluster; start the secret manager and, when ``leader_election``, the
    refresher (under a Lease). Secondary workers serve from their own manager and watch
    and leave the background work to their replica's primary. The refresher follows
    ``store`` when it is the store config reloads go to."""
    config = store.current if isinstance(store, ConfigStore) else store
    kube = Kube(
        await connect(kubeconfig), on_request=lambda call: metrics.api_requests.labels(call).inc()
    )
    stack.push_async_callback(kube.close)
    cache = CredentialCache(
        config,
        secrets=kube,
        tokens=kube,
        on_exchange=lambda entry, ok: metrics.exchanges.labels(
            entry, "ok" if ok else "error"
        ).inc(),
    )
    stack.push_async_callback(cache.aclose)
    manager = PullSecretManager(config, kube, cache, metrics, health=kube.health)
    await manager.start()
    stack.push_async_callback(manager.close)
    state.ready_checks.append(manager.not_ready_reason)
    if not leader_election:
        return manager
    refresher = Refresher(
        store, manager, holder=pod_name or f"{socket.gethostname()}-{os.getpid()}"
    )
    refresher.start()
    stack.push_async_callback(refresher.close)
    return manager
