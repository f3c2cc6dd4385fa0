"""Command line: ``python -m webhook serve | validate | explain | doctor | certs``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from webhook.config import AcrEntry, Config
from webhook.configload import ConfigError, load_config
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
            lines.append(f"  identity: {need.identity.key} (auth mode {need.entry.auth.mode})")
            if isinstance(need.entry, AcrEntry) and need.entry.scope:
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
    from webhook.workers import fork_workers

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
    if args.workers < 1:
        print(f"error: --workers must be at least 1, not {args.workers}", file=err)
        return 2
    setup_logging(args.log_level, args.log_format)
    worker, secondaries = fork_workers(args.workers)  # before any event loop or thread
    return asyncio.run(run_server(config, args, worker, secondaries))


def cmd_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook import doctor

    return doctor.main(_config_path(args.config), args)


def cmd_certs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook import certs

    return certs.main(args, out, err)


def cmd_probe(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from webhook import probe

    return probe.main(args, out, err)


# ----------------------------------------------------------------------------- cli


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default when it has one worth showing (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


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
        "--workers",
        type=int,
        default=os.environ.get("WORKERS", "1"),
        help="worker processes sharing the HTTPS port, one per core to use ($WORKERS, 1); "
        "only the first serves health and metrics and runs the background refresh",
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

    p = sub.add_parser(
        "certs",
        help="create or rotate the serving certificate and caBundle",
        description=(
            "Make the webhook's serving certificate, signed by a private CA, and publish the CA "
            "as the MutatingWebhookConfiguration's caBundle. The CA is reused while it is "
            "valid, so a rerun renews the serving certificate without the API server ever "
            "distrusting the webhook. Nothing is written until every object has been read. "
            "Give --secret, --out-dir, or both."
        ),
        epilog=(
            "example: python -m webhook certs --secret pull-secret-webhook-tls  "
            "(certs/README.md has rotation and the Secrets it writes)"
        ),
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument(
        "--namespace",
        default="pull-secret-webhook",
        help="the webhook's namespace: where the Secrets go, and part of the DNS names",
    )
    p.add_argument(
        "--service", default="pull-secret-webhook", help="the webhook's Service (DNS names)"
    )
    p.add_argument(
        "--out-dir",
        metavar="DIR",
        help="write ca.crt, ca.key (the CA's private key: keep it safe), tls.crt, tls.key here",
    )
    p.add_argument(
        "--secret",
        metavar="NAME",
        help=(
            "write tls.crt, tls.key, ca.crt into this kubernetes.io/tls Secret, and the CA's "
            "certificate and key into NAME-ca (mounted by no pod)"
        ),
    )
    p.add_argument(
        "--webhook-config",
        metavar="NAME",
        default="pull-secret-webhook",
        help=(
            "MutatingWebhookConfiguration whose caBundle to patch ('' to skip); the Secrets "
            "are owned by it, so deleting it deletes them"
        ),
    )
    p.add_argument("--ip", action="append", default=[], help="extra IP SAN (repeatable)")
    p.add_argument("--dns", action="append", default=[], help="extra DNS SAN (repeatable)")
    p.add_argument("--days", type=int, default=365, help="serving certificate lifetime in days")
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
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig to use instead of $KUBECONFIG, ~/.kube/config or the in-cluster account",
    )
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser(
        "probe",
        help="send a running webhook a dry-run admission and check its answer",
        description=(
            "POST one dry-run AdmissionReview (a pod whose image no registry entry matches) to "
            "the webhook's /mutate URL over HTTPS, trusting only --ca-file, and check that the "
            "answer echoes the request's uid and allows the pod. `helm test` runs it."
        ),
        formatter_class=_DefaultsFormatter,
    )
    p.add_argument(
        "--url",
        default="https://pull-secret-webhook.pull-secret-webhook.svc:443/mutate",
        help="the webhook's /mutate URL, as the API server calls it",
    )
    p.add_argument(
        "--ca-file",
        default=f"{DEFAULT_CERT_DIR}/ca.crt",
        help="the CA to trust (the caBundle; ca.crt of the webhook's TLS Secret)",
    )
    p.add_argument("--namespace", default="default", help="namespace of the probe pod")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args, sys.stdout, sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
