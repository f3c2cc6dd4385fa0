"""``explain``: how images would be matched to registry entries and which secret each
would get, from a config file, without serving anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import TextIO

from webhook.admission.needs import ImageMatch, match_images
from webhook.cli.common import Commands, add_config_option, config_path, load
from webhook.config.acr import AcrEntry
from webhook.config.kinds import recognised_kind
from webhook.config.schema import Config


def add_command(sub: Commands) -> None:
    p = sub.add_parser("explain", help="show how images would be matched and named")
    add_config_option(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--service-account",
        default="default",
        help="the pod's service account (for podServiceAccount entries)",
    )
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=run_explain)


def why_unmatched(config: Config, host: str) -> str:
    """Why no entry serves ``host``, pointing at the setting that decides it: a family
    entry's own filter (an ECR entry's ``accounts``) before the generic anyRegistry advice."""
    why = "no registry entry matches " + host
    narrowed = [
        (entry.name, reason)
        for entry in config.registries
        if entry.rule.family is not None
        and (reason := entry.rule.family.why_not(host.lower())) is not None
    ]
    if narrowed:
        names = ", ".join(name for name, _ in narrowed)
        return f"{why} (entry {names} {narrowed[0][1]})"
    kind = recognised_kind(host)
    if kind is None:
        return why
    article = "an" if kind[0] in "aeiou" else "a"  # an ACR / an ECR / a GAR host
    return (
        f"{why} (it is {article} {kind.upper()} host: add it to {article} {kind} entry's "
        "hosts or set anyRegistry: true)"
    )


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
            lines.append(f"  registry: none — {why_unmatched(config, ref.domain)}")
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


def run_explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = load(config_path(args.config), err)
    if config is None:
        return 2
    matches = match_images(config, args.images, args.service_account)
    if args.output == "json":
        print(json.dumps(explain_json(matches), indent=2), file=out)
    else:
        print("\n".join(explain_lines(config, matches)).rstrip(), file=out)
    return 1 if any(m.ref is None for m in matches) else 0
