"""``serve``: the webhook itself. Parses its options, wires the HTTPS server to its secret
source (the pull-secret manager, or names only), and runs the background upkeep."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TextIO

from webhook.admission.decision import SecretSource
from webhook.cli.common import (
    DEFAULT_CERT_DIR,
    Commands,
    add_config_option,
    config_path,
    load,
)
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.config.watch import ConfigWatcher
from webhook.credentials.cache import CredentialCache, import_providers
from webhook.kube import client as kubeclient
from webhook.kube.calls import Kube
from webhook.kube.client import ApiClient, Connection, KubeconfigError
from webhook.pullsecrets.manager import PullSecretManager
from webhook.server.app import (
    SHUTDOWN_TIMEOUT,
    NamesOnlySource,
    ServeOptions,
    ServerState,
    serve_forever,
    start_server,
)
from webhook.server.workers import (
    SINGLE,
    Secondaries,
    Worker,
    WorkerTotals,
    fork_workers,
    push_totals,
)
from webhook.telemetry.logs import log_context, setup_logging
from webhook.telemetry.metrics import Metrics
from webhook.upkeep.healing import Healer
from webhook.upkeep.policycheck import GAUGE, PolicyCheck
from webhook.upkeep.refresher import Refresher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """What ``serve``'s command line says, as the rest of the code sees it."""

    config_path: str
    cert_file: str
    key_file: str
    bind: str = "0.0.0.0"  # noqa: S104 (a pod's own network namespace)
    port: int = 8443
    health_bind: str = "0.0.0.0"  # noqa: S104
    health_port: int = 8080
    kubeconfig: str | None = None
    names_only: bool = False
    pod_name: str = ""
    workers: int = 1
    shutdown_delay: float = 5.0
    log_level: str = "info"
    log_format: str = "text"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeSettings:
        return cls(
            config_path=config_path(args.config),
            cert_file=args.cert_file,
            key_file=args.key_file,
            bind=args.bind,
            port=args.port,
            health_bind=args.health_bind,
            health_port=args.health_port,
            kubeconfig=args.kubeconfig,
            names_only=args.names_only,
            pod_name=args.pod_name,
            workers=int(args.workers),
            shutdown_delay=args.shutdown_delay,
            log_level=args.log_level,
            log_format=args.log_format,
        )


def add_command(sub: Commands) -> None:
    defaults = ServeSettings("", f"{DEFAULT_CERT_DIR}/tls.crt", f"{DEFAULT_CERT_DIR}/tls.key")
    p = sub.add_parser("serve", help="serve admission reviews over HTTPS")
    add_config_option(p)
    p.add_argument("--cert-file", default=defaults.cert_file)
    p.add_argument("--key-file", default=defaults.key_file)
    p.add_argument("--bind", default=defaults.bind, help="address of the HTTPS listener")
    p.add_argument("--port", type=int, default=defaults.port, help="HTTPS port for /mutate (8443)")
    p.add_argument("--health-bind", default=defaults.health_bind)
    p.add_argument(
        "--health-port",
        type=int,
        default=defaults.health_port,
        help="plain HTTP port for /healthz, /readyz, /metrics (8080)",
    )
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig to use (default: the pod's ServiceAccount in a cluster, "
        "else $KUBECONFIG or ~/.kube/config)",
    )
    p.add_argument(
        "--names-only",
        action="store_true",
        help="patch secret names without creating secrets (no Kubernetes access)",
    )
    p.add_argument(
        "--pod-name",
        default=os.environ.get("POD_NAME", ""),
        help="this replica's name, the Lease holder identity ($POD_NAME)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.environ.get("WORKERS", "1"),
        help="worker processes sharing the HTTPS port, one per core to use ($WORKERS, 1); "
        "only the first serves health and metrics and runs the background refresh",
    )
    p.add_argument(
        "--shutdown-delay",
        type=float,
        default=defaults.shutdown_delay,
        help="seconds to keep serving, while not ready, after SIGTERM (5)",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", defaults.log_level),
        choices=["debug", "info", "warning", "error"],
    )
    p.add_argument(
        "--log-format",
        default=os.environ.get("LOG_FORMAT", defaults.log_format),
        choices=["text", "json"],
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = ServeSettings.from_args(args)
    config = load(settings.config_path, err)
    if config is None:
        return 2
    for path in (settings.cert_file, settings.key_file):
        if not os.path.isfile(path):
            print(
                f"error: TLS file {path} not found (create one with `python -m webhook "
                f"certs`, or mount the webhook's certificate Secret)",
                file=err,
            )
            return 2
    if settings.workers < 1:
        print(f"error: --workers must be at least 1, not {settings.workers}", file=err)
        return 2
    connection = None
    if not settings.names_only:
        try:
            # Once, for every worker; the loop is closed before they fork.
            connection = asyncio.run(kubeclient.load(settings.kubeconfig))
        except KubeconfigError as e:
            print(f"error: no Kubernetes credentials: {e}; pass --kubeconfig", file=err)
            return 2
    setup_logging(settings.log_level, settings.log_format)
    if not settings.names_only:
        import_providers(config)  # shared by the workers, never on an event loop
    worker, secondaries = fork_workers(settings.workers)  # before any event loop or thread
    return asyncio.run(run_server(config, settings, connection, worker, secondaries))


async def run_server(
    config: Config,
    settings: ServeSettings,
    connection: Connection | None,
    worker: Worker = SINGLE,
    secondaries: Secondaries | None = None,
) -> int:
    """Serve until stopped. With several workers, this process is one of them: only the
    primary serves health and metrics, takes part in leader election and supervises."""
    secondaries = secondaries or Secondaries()
    metrics = Metrics()
    state = ServerState()
    options = ServeOptions(
        cert_file=settings.cert_file,
        key_file=settings.key_file,
        host=settings.bind,
        port=settings.port,
        health_host=settings.health_bind,
        health_port=settings.health_port,
        health=worker.primary,
        reuse_port=worker.shares_port,
    )
    store = ConfigStore(config)
    metrics.admission_timeout.set_function(lambda: store.current.admission.timeout_seconds)
    watcher = ConfigWatcher(settings.config_path, store, on_reload=lambda ok: _count(metrics, ok))

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
        if connection is None:  # --names-only
            log.warning("--names-only: secret names are patched but no secret is created")
            source = NamesOnlySource()
        else:
            source = await start_manager(
                store,
                stack,
                metrics=metrics,
                state=state,
                connection=connection,
                pod_name=settings.pod_name,
                leader_election=worker.primary,
            )
        running = await start_server(store, source, options, metrics=metrics, state=state)
        running.tasks.append(asyncio.create_task(watcher.watch()))
        if worker.channel is not None:  # a secondary: its counts go to the primary
            running.tasks.append(asyncio.create_task(push_totals(worker.channel, metrics.totals)))
        if secondaries.channels:  # the primary: /metrics adds the secondaries' counts
            totals = WorkerTotals(secondaries.channels)
            metrics.peers = totals.latest
            running.tasks.append(asyncio.create_task(totals.follow()))
        watch = asyncio.create_task(secondaries.watch(worker_exited))
        await serve_forever(
            running, shutdown_delay=settings.shutdown_delay, on_signal=secondaries.signal
        )
        watch.cancel()
        await secondaries.wait(SHUTDOWN_TIMEOUT)
    return 1 if lost else 0


def _count(metrics: Metrics, ok: bool) -> None:
    metrics.config_reloads.labels("ok" if ok else "error").inc()
    metrics.config_last_reload_ok.set(1 if ok else 0)


async def start_manager(
    store: ConfigStore,
    stack: AsyncExitStack,
    *,
    metrics: Metrics,
    state: ServerState,
    connection: Connection,
    pod_name: str,
    leader_election: bool = True,
) -> PullSecretManager:
    """Connect to the cluster; start the secret manager and, when ``leader_election``, the
    refresher (under a Lease). Secondary workers serve from their own manager and watch
    and leave the background work to their replica's primary. ``store`` is the one config
    reloads go to: the writer, the credential cache, its providers and the refresher read
    it at use."""
    kube = Kube(
        ApiClient(connection), on_request=lambda call: metrics.api_requests.labels(call).inc()
    )
    stack.push_async_callback(kube.close)
    cache = CredentialCache(
        store,
        secrets=kube,
        tokens=kube,
        on_exchange=lambda entry, ok: metrics.exchanges.labels(
            entry, "ok" if ok else "error"
        ).inc(),
    )
    stack.push_async_callback(cache.aclose)
    cache.start()  # prefetch: the first pods need not wait for the identity round trips
    manager = PullSecretManager(store, kube, cache, metrics, health=kube.health)
    await manager.start()
    stack.push_async_callback(manager.close)
    state.ready_checks.append(manager.not_ready_reason)
    if not leader_election:
        return manager
    # The replica's primary proves the write policy binds its identity (webhook.upkeep.policycheck).
    check = PolicyCheck(
        kube,
        store.current.namespace,  # refused on reload: fixed for the process
        on_verdict=lambda verdict: metrics.write_policy_bound.set(GAUGE[verdict]),
    )
    check.start()
    stack.push_async_callback(check.close)
    state.ready_checks.append(check.not_ready_reason)
    refresher = Refresher(
        store,
        manager,
        kube,
        holder=pod_name or f"{socket.gethostname()}-{os.getpid()}",
        writer=manager.writer,
        collector=manager.collector,
        on_leader=lambda leader: metrics.leader.set(1 if leader else 0),
        healer=Healer(store, manager.opted_in, kube, metrics),
    )
    refresher.start()
    stack.push_async_callback(refresher.close)
    return manager
