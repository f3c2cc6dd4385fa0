"""A real server on loopback for transport tests: its serving pair and its options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devenv.serve import Serve, free_port
from webhook.certs.pki import KeyPair, make_ca, make_serving_cert
from webhook.server.app import ServeOptions


def write_serving_pair(ca: KeyPair, directory: Path) -> None:
    """``tls.crt``/``tls.key`` for localhost and 127.0.0.1, signed by ``ca``."""
    make_serving_cert(ca, ["localhost"], ["127.0.0.1"]).write(
        directory / "tls.crt", directory / "tls.key"
    )


def loopback_serve(directory: Path, config: str, **options: Any) -> tuple[Serve, KeyPair]:
    """A ``python -m webhook serve`` on free loopback ports with ``config`` as its config
    file and a serving pair in ``directory``, and the new CA that signed the pair."""
    (directory / "config.yaml").write_text(config)
    ca = make_ca()
    write_serving_pair(ca, directory)
    serve = Serve(
        directory / "config.yaml",
        directory / "tls.crt",
        directory / "tls.key",
        free_port(),
        free_port(),
        **options,
    )
    return serve, ca


def loopback_options(directory: Path, **overrides: Any) -> ServeOptions:
    """Serve /mutate and health on ephemeral loopback ports with the pair in ``directory``."""
    return ServeOptions(
        cert_file=str(directory / "tls.crt"),
        key_file=str(directory / "tls.key"),
        host="127.0.0.1",
        port=0,
        health_host="127.0.0.1",
        health_port=0,
        **overrides,
    )
