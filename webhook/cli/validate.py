"""``validate``: check a config file, without serving anything (exit 0 with a summary, or
2 listing every problem)."""

from __future__ import annotations

import argparse
from typing import TextIO

from webhook.cli.common import Commands, add_config_option, config_path, load


def add_command(sub: Commands) -> None:
    p = sub.add_parser(
        "validate", help="check a config file; list every problem (exit 2) or say it is valid"
    )
    add_config_option(p)
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Exit 0 and summarise a valid config; exit 2 listing every problem of a broken one."""
    path = config_path(args.config)
    config = load(path, err)
    if config is None:
        return 2
    names = ", ".join(f"{e.name} ({e.kind})" for e in config.registries)
    print(f"{path}: valid; {len(config.registries)} registry entries: {names}", file=out)
    return 0
