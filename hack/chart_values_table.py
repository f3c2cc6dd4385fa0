#!/usr/bin/env python3
"""Write the values table of charts/pull-secret-webhook/README.md from values.yaml.

    python3 hack/chart_values_table.py           rewrite the table in the chart's README
    python3 hack/chart_values_table.py --check   exit 1 when the README's table is stale

Each value's description is the comment block directly above its key in values.yaml (and
a comment on the key's own line); its default is the value itself. Maps are listed key by
key down to their leaves; lists and empty maps are leaves. Only the standard library and
PyYAML (already a dependency of the project), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "pull-secret-webhook"
START = "<!-- values-table:start (hack/chart_values_table.py writes this part) -->"
END = "<!-- values-table:end -->"
_KEY_RE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")
_COMMENT_RE = re.compile(r"^ *#(?P<text>.*)$")
#: Longer defaults are cut in the table (values.yaml has the whole value).
MAX_DEFAULT_CHARS = 120


def comments_by_path(text: str) -> dict[str, str]:
    """The comment block above each key (and on its line), by dotted path."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            pending = []  # a blank line ends a comment block: it belongs to no key
            continue
        comment = _COMMENT_RE.match(line)
        if comment:
            pending.append(comment.group("text").strip())
            continue
        key = _KEY_RE.match(line)
        if not key or line.lstrip().startswith("-"):
            pending = []
            continue
        indent = len(key.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.group("key")))
        path = ".".join(k for _, k in stack)
        inline = key.group("rest").split(" #", 1)
        lines = [*pending, *([inline[1].strip()] if len(inline) > 1 else [])]
        found[path] = " ".join(x for x in lines if x)
        pending = []
    return found


def entries(values: Any, prefix: str = "") -> list[tuple[str, Any, bool]]:
    """(path, value, is_leaf) in file order: every leaf, and every map before its keys."""
    if isinstance(values, dict) and values:
        out: list[tuple[str, Any, bool]] = [(prefix, values, False)] if prefix else []
        for key, value in values.items():
            out.extend(entries(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, values, True)]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def default_of(value: Any) -> str:
    shown = json.dumps(value, separators=(", ", ": "))
    if len(shown) > MAX_DEFAULT_CHARS:
        shown = shown[: MAX_DEFAULT_CHARS - 1] + "…"
    return f"`{cell(shown)}`"


def table(values_yaml: str) -> str:
    values = yaml.safe_load(values_yaml)
    comments = comments_by_path(values_yaml)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for path, value, is_leaf in entries(values):
        if is_leaf:
            rows.append(f"| `{path}` | {default_of(value)} | {cell(comments.get(path, ''))} |")
        elif comments.get(path):
            # A map's own comment says what its keys are for; its keys follow.
            rows.append(f"| `{path}` | | {cell(comments[path])} |")
    return "\n".join(rows) + "\n"


def render(readme: str, values_yaml: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"chart README: the markers {START!r} and {END!r} are missing")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_yaml)}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail when the table is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text()
    wanted = render(readme, (args.chart / "values.yaml").read_text())
    if args.check:
        if wanted != readme:
            print(
                f"{readme_path}: the values table is stale; run python3 hack/chart_values_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
