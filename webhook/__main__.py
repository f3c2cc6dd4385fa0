"""Command line: ``python -m webhook serve | validate | explain | doctor | certs``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from webhook.config import Config, ConfigError, load_config
from webhook.needs import ImageMatch, match_images
from webhook.registries import family_of

DEFAULT_CONFIG = "/etc/pull-secret-webhook/config.yaml"
DEFAULT_CERT_DIR = "/etc/pull-secret-webhook/tls"


def _config_path(value: str | None) -> str:
    return value or os.environ.get("PULL_SECRET_WEBHOOK_CONFIG", DEFAULT_CONFIG)


def _load(path: str, err: TextIO) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"error: invalid configuration {e}", file=err)
        return None


# ------------------------------------------------------------------------- explain


def explain_lines(config: Config, matches: Sequence[ImageMatch]) -> list[str]:
    lines: list[str] = []
    for m in matches:
        lines.append(m.image)
        if m.ref is None:
            lines.append(f"  invalid reference: {m.error}")
            lines.append("")
            continue
        ref = m.ref
        lines.append(f"  domain:   {ref.domain}")
        lines.append(f"  path:     {ref.path}")
        lines.append(f"  tag:      {ref.tag or '-'}")
        lines.append(f"  digest:   {ref.digest or '-'}")
        if m.need is None:
            family = family_of(ref.domain)
            why = "no registry entry matches " + ref.domain
            if family:
                why += f" (it is an {family.upper()} host: add it to an {family} entry's hosts"
                why += " or set anyRegistry: true)"
            lines.append(f"  registry: none — {why}")
        else:
            need = m.need
            lines.append(
                f"  registry: {need.entry.name} (kind {need.entry.kind}; covers "
                f"{need.entry.rule.describe()})"
            )
            mode = getattr(need.entry.auth, "mode", "secret")
            lines.append(f"  identity: {need.identity.key} (auth mode {mode})")
            if need.entry.scope:
                lines.append(f"  scope:    {need.entry.scope}")
            lines.append(f"  secret:   {need.secret_name}")
        lines.append("")
    return lines


def explain_json(matches: Sequence[ImageMatch]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for m in matches:
        item: dict[str, object] = {"image": m.image}
        if m.ref is not None:
            item.update(domain=m.ref.domain, path=m.ref.path, tag=m.ref.tag, digest=m.ref.digest)
        if m.need is not None:
            item.update(
                registry=m.need.entry.name,
                kind=m.need.entry.kind,
                identity=m.need.identity.key,
                secret=m.need.secret_name,
            )
        else:
            item["error"] = m.error
        out.append(item)
    return out


def cmd_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = _load(_config_path(args.config), err)
    if config is None:
        return 2
    matches = match_images(config, args.images, args.service_account)
    if args.output == "json":
        print(json.dumps(explain_json(matches), indent=2), file=out)
    else:
        print("\n".join(explain_lines(config, matches)).rstrip(), file=out)
    return 1 if any(m.ref is None for m in matches) else 0


# ------------------------------------------------------------------------ validate


def cmd_validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Exit 0 and summarise a valid config; exit 2 listing every problem of a broken one."""
    path = _config_path(args.config)
    config = _load(path, err)
    if config is None:
        return 2
    names = ", ".join(f"{e.name} ({e.kind})" for e in config.registries)
    print(f"{path}: valid; {len(config.registries)} registry entries: {names}", file=out)
    return 0


# --------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook.logs import setup_logging
    from webhook.runtime import run_server

    args.config_path = _config_path(args.config)
    config = _load(args.config_path, err)
    if config is None:
        return 2
    for path in (args.cert_file, args.key_file):
        if not os.path.isfile(path):
            print(
                f"error: TLS file {path} not found (create one with `python -m webhook "
                f"certs`, or mount the webhook's certificate Secret)",
                file=err,
            )
            return 2
    setup_logging(args.log_level, args.log_format)
    return asyncio.run(run_server(config, args))


def cmd_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook import doctor

    return doctor.main(_config_path(args.config), args)


def cmd_certs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook import certs

    return certs.main(args, out, err)


# ----------------------------------------------------------------------------- cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webhook",
        description="pull-secret-webhook: registry pull secrets for pods, minted at admission.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            help=f"registry config YAML (default: $PULL_SECRET_WEBHOOK_CONFIG or {DEFAULT_CONFIG})",
        )

    p = sub.add_parser("serve", help="serve admission reviews over HTTPS")
    with_config(p)
    p.add_argument("--cert-file", default=f"{DEFAULT_CERT_DIR}/tls.crt")
    p.add_argument("--key-file", default=f"{DEFAULT_CERT_DIR}/tls.key")
    p.add_argument("--bind", default="0.0.0.0", help="address of the HTTPS listener")  # noqa: S104
    p.add_argument("--port", type=int, default=8443, help="HTTPS port for /mutate (8443)")
    p.add_argument("--health-bind", default="0.0.0.0")  # noqa: S104
    p.add_argument(
        "--health-port",
        type=int,
        default=8080,
        help="plain HTTP port for /healthz, /readyz, /metrics (8080)",
    )
    p.add_argument("--kubeconfig", help="kubeconfig to use instead of in-cluster config")
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
        "--shutdown-delay",
        type=float,
        default=5.0,
        help="seconds to keep serving, while not ready, after SIGTERM (5)",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    p.add_argument(
        "--log-format", default=os.environ.get("LOG_FORMAT", "text"), choices=["text", "json"]
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "validate", help="check a config file; list every problem (exit 2) or say it is valid"
    )
    with_config(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("explain", help="show how images would be matched and named")
    with_config(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--service-account",
        default="default",
        help="the pod's service account (for podServiceAccount entries)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("doctor", help="try every registry's identity exchange from here")
    with_config(p)
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="ENTRY=HOST: a host to try for a family entry (repeatable)",
    )
    p.add_argument(
        "--service-account",
        default="",
        help="NAMESPACE/NAME whose token podServiceAccount entries use",
    )
    p.add_argument("--kubeconfig", help="kubeconfig for Secrets and service-account tokens")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("certs", help="create or rotate the serving certificate and caBundle")
    p.add_argument("--namespace", default="pull-secret-webhook")
    p.add_argument("--service", default="pull-secret-webhook")
    p.add_argument("--out-dir", help="write ca.crt, tls.crt, tls.key here")
    p.add_argument("--secret", help="write the pair into this kubernetes.io/tls Secret")
    p.add_argument(
        "--webhook-config",
        default="pull-secret-webhook",
        help="MutatingWebhookConfiguration whose caBundle to patch ('' to skip)",
    )
    p.add_argument("--ip", action="append", default=[], help="extra IP SAN (repeatable)")
    p.add_argument("--dns", action="append", default=[], help="extra DNS SAN (repeatable)")
    p.add_argument("--days", type=int, default=365, help="serving certificate lifetime")
    p.add_argument(
        "--renew-before",
        type=int,
        default=0,
        metavar="DAYS",
        help="change nothing while the pair in place has more than DAYS left and its CA is "
        "trusted and reusable (for a daily CronJob); default: always issue",
    )
    p.add_argument(
        "--rotate-ca",
        action="store_true",
        help="also make a new CA; the caBundle trusts old and new until the new pair is in use",
    )
    p.add_argument("--kubeconfig")
    p.set_defaults(func=cmd_certs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args, sys.stdout, sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
