"""Wires the server to its secret source for ``python -m webhook serve``."""

from __future__ import annotations

import argparse
import logging
from contextlib import AsyncExitStack

from webhook.admission import SecretSource
from webhook.config import Config
from webhook.metrics import Metrics
from webhook.server import NamesOnlySource, ServeOptions, ServerState, serve_forever, start_server

log = logging.getLogger(__name__)


async def run_server(config: Config, args: argparse.Namespace) -> int:
    metrics = Metrics()
    state = ServerState()
    options = ServeOptions(
        cert_file=args.cert_file,
        key_file=args.key_file,
        host=args.bind,
        port=args.port,
        health_host=args.health_bind,
        health_port=args.health_port,
    )
    async with AsyncExitStack() as stack:
        source: SecretSource
        if args.names_only:
            log.warning("--names-only: secret names are patched but no secret is created")
            source = NamesOnlySource()
        else:
            from webhook.pullsecrets import start_manager

            source = await start_manager(
                config,
                stack,
                metrics=metrics,
                state=state,
                kubeconfig=args.kubeconfig,
                pod_name=args.pod_name,
            )
        running = await start_server(config, source, options, metrics=metrics, state=state)
        await serve_forever(running)
    return 0
