"""The alerting rules exist once (manifests/components/prometheus-rule/alerts.yaml): the
docs, the kustomize component and the chart carry exactly those rules, and promtool accepts
them. (tests/integration/test_alerts.py evaluates each against a real replica's metrics.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from devenv import alerts
from tests.support.alerts import (
    promtool_binary,
)
from tests.support.manifests import (
    MANIFESTS,
    TOOL_TIMEOUT_SECONDS,
    helm_template,
    kustomize,
)


def source_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(alerts.SOURCE.read_text())["groups"]
    return groups


def test_the_docs_the_component_and_the_chart_are_generated_from_the_one_rules_file() -> None:
    assert alerts.stale() == [], "run `make alerts`"


def test_the_docs_show_the_rules_of_the_rules_file() -> None:
    page = alerts.DOCS.read_text()
    block = page.split(alerts.DOCS_BEGIN + "\n```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block)["groups"] == source_groups()


def test_the_kustomize_component_adds_a_prometheus_rule_with_the_rules() -> None:
    rendered = kustomize(components=["components/prometheus-rule"])
    [rule] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "pull-secret-webhook"
    assert rule["spec"]["groups"] == source_groups()


def test_the_chart_renders_no_prometheus_rule_by_default() -> None:
    assert not [o for o in helm_template() if o["kind"] == "PrometheusRule"]


def test_the_chart_renders_the_rules_with_its_namespace_and_labels_when_enabled() -> None:
    rendered = helm_template(
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.namespace=monitoring",
        "--set",
        "prometheusRule.additionalLabels.release=kube-prometheus-stack",
    )
    [rule] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "monitoring"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "pull-secret-webhook"
    # Prometheus's own templates ({{ $labels.entry }}) reach it unrendered by helm.
    assert rule["spec"]["groups"] == source_groups()


def test_the_chart_puts_the_rule_in_the_release_namespace_unless_told() -> None:
    rendered = helm_template("--set", "prometheusRule.enabled=true", namespace="platform")
    [rule] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "platform"


def test_promtool_accepts_the_shipped_rules(tmp_path: Path) -> None:
    promtool = promtool_binary()
    # The component's and the chart's are checked as Prometheus loads them: the spec.
    component = yaml.safe_load(alerts.COMPONENT.read_text())["spec"]
    (tmp_path / "component.yaml").write_text(yaml.safe_dump(component))
    paths = [alerts.SOURCE, alerts.CHART, tmp_path / "component.yaml"]
    done = subprocess.run(
        [str(promtool), "check", "rules", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=TOOL_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(len(g["rules"]) for g in source_groups())
    assert done.stdout.count(f"SUCCESS: {rules} rules found") == len(paths), done.stdout


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for group in source_groups():
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_the_prometheus_overlay_carries_the_rules_beside_its_service_monitor() -> None:
    rendered = kustomize(MANIFESTS / "overlays" / "prometheus")
    kinds = [o["kind"] for o in rendered]
    assert "ServiceMonitor" in kinds
    [rule] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == source_groups()
