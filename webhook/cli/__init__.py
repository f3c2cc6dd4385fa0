"""The command line: ``python -m webhook serve | validate | explain | doctor | certs | probe``.

One module a command; each adds its parser and the function that runs it, and turns its
arguments into typed values before calling inward.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webhook.cli import certs, doctor, explain, probe, serve, validate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webhook",
        description="pull-secret-webhook: registry pull secrets for pods, minted at admission.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_command(sub)
    validate.add_command(sub)
    explain.add_command(sub)
    doctor.add_command(sub)
    certs.add_command(sub)
    probe.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args, sys.stdout, sys.stderr)
    return code
