"""Evaluating the shipped alerting rules against what a real replica exported.

A test scrapes a running ``serve`` while healthy (``before``), drives it into a failure and
scrapes it again (``after``). ``promtool test rules`` then evaluates the rules of
manifests/components/prometheus-rule/alerts.yaml on series made of those two scrapes:

- one sample per ``step`` seconds, ``step`` being the real time between the scrapes, so a
  counter's rate is the rate the replica really showed;
- the failure persisting as observed: a counter keeps growing by what it grew between the
  scrapes, a gauge keeps its value (long enough for each rule's window and ``for``);
- ``*_timestamp_seconds`` gauges keep the time left until them (promtool's clock starts at
  0, the replica's at the Unix epoch);
- ``up`` is what Prometheus would record: 1 when the scrape answered, 0 when it failed.

Each alert is also evaluated on the healthy scrape alone, where it must stay silent.
Annotations are left out of the evaluated copy: they do not decide whether an alert fires
(promtool compares them verbatim, and they render values such as durations), and
``promtool check rules`` checks their templates.
"""

from __future__ import annotations

import math
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devenv import alerts

#: The job and instance labels Prometheus would add (the ServiceMonitor's job is the
#: Service's name).
JOB = "pull-secret-webhook"
#: How often promtool evaluates the rules (Prometheus's default is 1 min); the samples
#: themselves are ``step`` apart.
EVALUATION_SECONDS = 30
PROMTOOL_TIMEOUT_SECONDS = 120

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    at: float
    up: bool
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    """Sample name -> counter, gauge or timestamp."""


def scrape(health_port: int, instance: str) -> Scrape:
    """One scrape of ``/metrics`` as Prometheus would make it, with its job and instance."""
    at = time.time()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return Scrape(at, up=False)
    out = Scrape(at, up=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # prometheus_client's creation times; not Prometheus series
            labels = tuple(sorted({**sample.labels, "job": JOB, "instance": instance}.items()))
            out.samples[(sample.name, labels)] = sample.value
            out.kinds[sample.name] = _kind(family.type, sample.name)
    return out


def scrape_until(
    health_port: int,
    instance: str,
    what: str,
    predicate: Callable[[Scrape], bool],
    *,
    within: float,
    every: float,
    context: Callable[[], str] = lambda: "",
) -> Scrape:
    """Scrape every ``every`` seconds until a scrape satisfies ``predicate``; fail the test
    with ``what`` (and ``context()``, e.g. the replica's log) when ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = scrape(health_port, instance)
        if predicate(got):
            return got
        time.sleep(every)
    detail = context()
    pytest.fail(f"not within {within:g}s: {what}" + (f"\n{detail}" if detail else ""))


def total(s: Scrape, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (sample, found), v in s.samples.items()
        if sample == name and all((k, x) in found for k, x in labels.items())
    )


def _kind(family_type: str, name: str) -> str:
    if name.endswith("_timestamp_seconds") or name == "process_start_time_seconds":
        return "timestamp"
    if family_type in ("counter", "histogram", "summary"):
        return "counter"
    return "gauge"


def series(
    before: Scrape, after: Scrape, instance: str, until: int
) -> tuple[int, list[dict[str, str]]]:
    """(step in seconds, promtool input_series) for the failure as scraped, persisting
    until ``until`` seconds of promtool time."""
    step = max(1, round(after.at - before.at))
    held = math.ceil(until / step) + 1
    out: list[dict[str, str]] = []
    up = (("instance", instance), ("job", JOB))
    out.append({"series": _name("up", up), "values": f"{int(before.up)} {int(after.up)}x{held}"})
    kinds = {**before.kinds, **after.kinds}
    for key in sorted(set(before.samples) | set(after.samples)):
        name, labels = key
        kind = kinds[name]
        first, last = before.samples.get(key), after.samples.get(key)
        if kind == "timestamp":
            # The time left until it, at each scrape, then counting down in promtool time.
            first = None if first is None else first - before.at
            last = None if last is None else last - after.at + step
        values = _values(kind, first, last, held)
        out.append({"series": _name(name, labels), "values": values})
    return step, out


def _values(kind: str, first: float | None, last: float | None, held: int) -> str:
    start = "_" if first is None else _num(first)
    if last is None:
        return f"{start} _x{held}"
    if kind == "counter":
        grew = last - (first or 0.0)
        return f"{start} {_num(last)}+{_num(grew)}x{held}"
    # A gauge keeps its value; a timestamp's time left keeps shrinking with the clock, so
    # the expiry itself stays where it was: value + elapsed is constant.
    return f"{start} {_num(last)}x{held}"


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def _name(name: str, labels: Labels) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def rules_without_annotations(directory: Path) -> Path:
    doc = yaml.safe_load(alerts.SOURCE.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def rule(name: str) -> dict[str, Any]:
    for group in yaml.safe_load(alerts.SOURCE.read_text())["groups"]:
        for found in group["rules"]:
            if found["alert"] == name:
                return dict(found)
    raise KeyError(name)


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(duration[:-1]) * units[duration[-1]]


def expect_alert(
    promtool: Path,
    directory: Path,
    alert: str,
    before: Scrape,
    after: Scrape,
    *,
    instance: str,
    labels: Sequence[Mapping[str, str]],
) -> None:
    """``alert`` fires with exactly ``labels`` (besides its own) on the failure as scraped,
    once its ``for`` has passed, and stays silent on the healthy scrape alone."""
    wait = _seconds(rule(alert).get("for", "0s"))
    # Past the longest range a rule uses (1 h) plus its ``for``, at an evaluation.
    eval_seconds = math.ceil((3600 + wait + 60) / EVALUATION_SECONDS) * EVALUATION_SECONDS
    step, failing = series(before, after, instance, eval_seconds)
    _, healthy = series(before, _held(before, after.at), instance, eval_seconds)
    severity = rule(alert)["labels"]
    fired = [{"exp_labels": {**severity, **dict(x)}} for x in labels]
    tests = [
        {
            "name": f"{alert} on the failure as scraped",
            "interval": f"{step}s",
            "input_series": failing,
            "alert_rule_test": [
                {"eval_time": f"{eval_seconds}s", "alertname": alert, "exp_alerts": fired}
            ],
        },
        {
            "name": f"{alert} on the healthy replica",
            "interval": f"{step}s",
            "input_series": healthy,
            "alert_rule_test": [
                {"eval_time": f"{eval_seconds}s", "alertname": alert, "exp_alerts": []}
            ],
        },
    ]
    rules = rules_without_annotations(directory)
    spec = directory / f"test-{alert}.yaml"
    document = {
        "rule_files": [rules.name],
        "evaluation_interval": f"{EVALUATION_SECONDS}s",
        "tests": tests,
    }
    spec.write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [str(promtool), "test", "rules", spec.name],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
    )
    assert done.returncode == 0, f"{alert}:\n{done.stdout}{done.stderr}"


def _held(before: Scrape, at: float) -> Scrape:
    """The healthy scrape as if taken again at ``at`` with nothing changed."""
    return Scrape(at, before.up, dict(before.samples), dict(before.kinds))
