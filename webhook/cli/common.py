"""What every command shares: where the config is, how a broken one is reported, help format."""

from __future__ import annotations

import argparse
import os
from typing import TextIO, TypeAlias

from webhook.config.load import ConfigError, load_config
from webhook.config.schema import Config

DEFAULT_CONFIG = "/etc/pull-secret-webhook/config.yaml"
DEFAULT_CERT_DIR = "/etc/pull-secret-webhook/tls"
CONFIG_ENV = "PULL_SECRET_WEBHOOK_CONFIG"

#: What ``add_subparsers()`` returns, for the commands' ``add_command`` (argparse gives
#: the type no public name).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def config_path(value: str | None) -> str:
    return value or os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)


def load(path: str, err: TextIO) -> Config | None:
    """The config at ``path``, or None after printing every problem it has."""
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"error: invalid configuration {e}", file=err)
        return None


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help=f"registry config YAML (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
    )


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default when it has one worth showing (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)
