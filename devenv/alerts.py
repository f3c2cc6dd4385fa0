"""The alerting rules, written once and shipped three ways.

``manifests/components/prometheus-rule/alerts.yaml`` is the source (a plain Prometheus
rules file, what ``promtool`` reads). From it come the kustomize component's
PrometheusRule, the chart's copy (``files/alerts.yaml``, read by its PrometheusRule
template: a chart cannot read files outside itself) and the rules shown in
docs/alerts.md.

    python -m devenv.alerts          write the three from the source (``make alerts``)
    python -m devenv.alerts --check  exit 1 naming each one that differs from it
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "manifests/components/prometheus-rule/alerts.yaml"
COMPONENT = ROOT / "manifests/components/prometheus-rule/prometheusrule.yaml"
CHART = ROOT / "charts/pull-secret-webhook/files/alerts.yaml"
DOCS = ROOT / "docs/alerts.md"
#: The docs' rules sit between these two lines.
DOCS_BEGIN = "<!-- the rules: generated from manifests/components/prometheus-rule/alerts.yaml -->"
DOCS_END = "<!-- end of the rules -->"


def groups(source: str) -> str:
    """The rules without the source's header comment: from ``groups:`` on."""
    start = source.index("\ngroups:") + 1
    return source[start:]


def component(source: str) -> str:
    body = "".join(
        f"  {line}" if line.strip() else line for line in groups(source).splitlines(True)
    )
    return (
        "# Generated from alerts.yaml beside it by `make alerts`; edit that file instead.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: pull-secret-webhook\n"
        "  namespace: pull-secret-webhook\n"
        "  labels:\n"
        "    app.kubernetes.io/name: pull-secret-webhook\n"
        "    app.kubernetes.io/part-of: pull-secret-webhook\n"
        "spec:\n" + body
    )


def chart(source: str) -> str:
    return (
        "# Generated from manifests/components/prometheus-rule/alerts.yaml by `make alerts`;\n"
        "# edit that file instead. templates/prometheusrule.yaml puts these under spec.\n"
        + groups(source)
    )


def docs(source: str, page: str) -> str:
    before, rest = page.split(DOCS_BEGIN + "\n", 1)
    _, after = rest.split(DOCS_END, 1)
    return f"{before}{DOCS_BEGIN}\n```yaml\n{groups(source)}```\n{DOCS_END}{after}"


def expected() -> dict[Path, str]:
    source = SOURCE.read_text()
    return {
        COMPONENT: component(source),
        CHART: chart(source),
        DOCS: docs(source, DOCS.read_text()),
    }


def stale() -> list[Path]:
    return [
        path for path, text in expected().items() if not path.exists() or path.read_text() != text
    ]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        out_of_date = stale()
        for path in out_of_date:
            print(
                f"{path.relative_to(ROOT)} differs from {SOURCE.relative_to(ROOT)}: run make alerts"
            )
        return 1 if out_of_date else 0
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
