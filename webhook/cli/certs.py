"""``certs``: create or rotate the webhook's CA, serving certificate and caBundle.

The rotation itself (what to issue, where it is kept, the Kubernetes writes) is
``webhook.certs``; this module is its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
from pathlib import Path
from typing import TextIO

from webhook.certs.rotation import CA_DAYS, CertsError
from webhook.certs.run import Options, run
from webhook.cli.common import Commands, DefaultsFormatter


def add_command(sub: Commands) -> None:
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
        formatter_class=DefaultsFormatter,
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
    p.set_defaults(func=main)


_DNS_RE = re.compile(
    r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def options_from_args(args: argparse.Namespace) -> Options:
    """The typed options, or CertsError listing every unusable argument."""
    problems: list[str] = []
    out_dir = Path(args.out_dir) if args.out_dir else None
    secret = args.secret or ""
    if out_dir is None and not secret:
        problems.append(
            "nothing to write: pass --secret NAME (the Deployment mounts "
            "pull-secret-webhook-tls) and/or --out-dir DIR"
        )
    for ip in args.ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            problems.append(f"--ip {ip!r} is not an IP address")
    dns = [d.lower().rstrip(".") for d in args.dns]
    problems += [f"--dns {d!r} is not a DNS name" for d in dns if not _DNS_RE.match(d)]
    if not 1 <= args.days <= CA_DAYS:
        problems.append(f"--days {args.days}: expected 1 to {CA_DAYS}")
    renew_before = args.renew_before
    if renew_before and not 1 <= renew_before < args.days:
        problems.append(
            f"--renew-before {renew_before}: expected 1 to {args.days - 1} (below --days)"
        )
    if problems:
        raise CertsError("; ".join(problems))
    return Options(
        namespace=args.namespace,
        service=args.service,
        out_dir=out_dir,
        secret=secret,
        webhook_config=args.webhook_config or "",
        dns=tuple(dict.fromkeys(dns)),
        ips=tuple(dict.fromkeys(args.ip)),
        days=args.days,
        rotate_ca=args.rotate_ca,
        kubeconfig=args.kubeconfig,
        renew_before_days=renew_before,
    )


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Entry point of ``python -m webhook certs``: 0 done, 1 failed, 2 bad arguments."""
    try:
        opts = options_from_args(args)
    except CertsError as e:
        print(f"error: {e}", file=err)
        return 2
    try:
        asyncio.run(run(opts, out))
    except CertsError as e:
        print(f"error: {e}", file=err)
        return 1
    return 0
