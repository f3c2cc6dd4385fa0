"""Reading a configuration file: YAML in, a validated ``Config`` out, all at once.

A broken config is refused with every problem listed, each naming the key, the value
found and what was expected (``ConfigError.problems``). The file is read with the
bounds of ``webhook.config.files`` (no alias bombs, no FIFOs, no huge numbers).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webhook.config import kinds
from webhook.config.files import FileProblems, load_yaml, read_text
from webhook.config.hosts import HostRule, valid_host
from webhook.config.kinds import Kind, RegistryEntry
from webhook.config.reader import K8S_NAME_RE, NAME_RE, Reader
from webhook.config.schema import (
    AdmissionSettings,
    Config,
    HealingSettings,
    RefreshSettings,
)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every issue found."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


#: Set from the pod's own namespace by the manifests and the chart (downward API).
POD_NAMESPACE_ENV = "POD_NAMESPACE"


def _own_namespace() -> str:
    return os.environ.get(POD_NAMESPACE_ENV, "").strip() or "pull-secret-webhook"


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; raise ConfigError listing every problem.

    Never blocks (a FIFO is refused, not read) and never lets a hostile file cost more
    than a bounded amount of time and memory (see ``webhook.config.files``).
    """
    p = Path(path)
    try:
        text = read_text(p)
    except FileProblems as e:
        raise ConfigError(e.problems, source=str(p)) from None
    return load_config_text(text, str(p))


def load_config_text(text: str, source: str = "config") -> Config:
    """Validate the text of a config file (already read); raise ConfigError listing every
    problem."""
    try:
        data, problems = load_yaml(text)
    except FileProblems as e:
        raise ConfigError(e.problems, source=source) from None
    v = _Validator()
    cfg = v.config(data if data is not None else {})
    problems = problems + v.problems
    if problems or cfg is None:
        raise ConfigError(problems, source=source)
    return cfg


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate a decoded config document; raise ConfigError listing every problem."""
    v = _Validator()
    cfg = v.config(data)
    if v.problems or cfg is None:
        raise ConfigError(v.problems, source=source)
    return cfg


class _Validator(Reader):
    """Walks the document once, collecting every problem instead of stopping."""

    def ca_bundle(self, path: str) -> None:
        """caFile must be a readable regular file holding at least one PEM certificate."""
        try:
            text = read_text(Path(path))
        except FileProblems as e:
            self.bad("caFile", path, f"a readable PEM file ({'; '.join(e.problems)})")
            return
        try:
            ssl.create_default_context(cadata=text)
        except (ssl.SSLError, ValueError) as e:
            reason = " ".join(str(e).split())[:120]
            self.bad("caFile", path, f"PEM CA certificates (loading them failed: {reason})")

    # -- sections ----------------------------------------------------------------

    def config(self, data: Any) -> Config | None:
        top = self.mapping(data, "(top level)")
        self.unknown(
            top,
            "",
            (
                "registries",
                "admission",
                "refresh",
                "healing",
                "namespace",
                "secretPrefix",
                "caFile",
                "excludedNamespaces",
            ),
        )
        # Default: the namespace the webhook runs in (the manifests inject POD_NAMESPACE),
        # so renaming the namespace in a kustomize overlay needs no config change.
        namespace = self.string(top, "namespace", "", _own_namespace())
        if not K8S_NAME_RE.match(namespace):
            self.bad("namespace", namespace, "a namespace name")
        self.namespace = namespace
        prefix = self.string(top, "secretPrefix", "", "psw")
        if not NAME_RE.match(prefix) or len(prefix) > 20:
            self.bad("secretPrefix", prefix, "1-20 lowercase letters, digits or '-'")
        ca_file = self.string(top, "caFile", "")
        if ca_file:
            self.ca_bundle(ca_file)

        excluded = top.get("excludedNamespaces", [])
        if not isinstance(excluded, list) or not all(
            isinstance(n, str) and K8S_NAME_RE.match(n) for n in excluded
        ):
            self.bad("excludedNamespaces", excluded, "a list of namespace names")
            excluded = []

        raw_entries = top.get("registries", [])
        entries: list[RegistryEntry] = []
        if not isinstance(raw_entries, list):
            self.bad("registries", raw_entries, "a list of registry entries")
            raw_entries = []
        if not raw_entries:
            self.problems.append("registries: no registry entries; nothing would ever match")
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_entries):
            entry = self.entry(raw, f"registries[{i}]")
            if entry is None:
                continue
            if entry.name in seen:
                self.bad(
                    f"registries[{i}].name",
                    entry.name,
                    f"a unique name (registries[{seen[entry.name]}] has it)",
                )
            seen[entry.name] = i
            entries.append(entry)
        return Config(
            registries=tuple(entries),
            admission=self.admission(top.get("admission", {})),
            refresh=self.refresh(top.get("refresh", {})),
            healing=self.healing(top.get("healing", {})),
            namespace=namespace,
            secret_prefix=prefix,
            ca_file=ca_file,
            excluded_namespaces=tuple(excluded),
        )

    def admission(self, data: Any) -> AdmissionSettings:
        m = self.mapping(data, "admission")
        self.unknown(m, "admission", ("timeoutSeconds", "budgetFraction", "failClosed"))
        # The API server caps a webhook's timeoutSeconds at 30 (admissionregistration/v1).
        timeout = self.number(m, "timeoutSeconds", "admission", 10, 1, 30)
        if timeout != int(timeout):
            self.bad("admission.timeoutSeconds", timeout, "a whole number of seconds")
        return AdmissionSettings(
            timeout_seconds=int(timeout),
            budget_fraction=self.number(m, "budgetFraction", "admission", 0.6, 0.05, 0.95),
            fail_closed=self.boolean(m, "failClosed", "admission", False),
        )

    def refresh(self, data: Any) -> RefreshSettings:
        m = self.mapping(data, "refresh")
        self.unknown(m, "refresh", ("fraction", "intervalSeconds", "gcGraceSeconds", "leaseName"))
        lease = self.string(m, "leaseName", "refresh", "pull-secret-webhook")
        if not K8S_NAME_RE.match(lease):
            self.bad("refresh.leaseName", lease, "a Kubernetes object name")
        return RefreshSettings(
            fraction=self.number(m, "fraction", "refresh", 0.5, 0.1, 0.9),
            interval_seconds=self.number(m, "intervalSeconds", "refresh", 60, 1, 86400),
            gc_grace_seconds=self.number(m, "gcGraceSeconds", "refresh", 3600, 0, 30 * 86400),
            lease_name=lease,
        )

    def healing(self, data: Any) -> HealingSettings:
        m = self.mapping(data, "healing")
        self.unknown(m, "healing", ("evict", "graceSeconds"))
        return HealingSettings(
            evict=self.boolean(m, "evict", "healing", True),
            # At least a second (a pass runs every few seconds anyway); at most a day.
            grace_seconds=self.number(m, "graceSeconds", "healing", 90, 1, 86400),
        )

    def entry(self, data: Any, where: str) -> RegistryEntry | None:
        m = self.mapping(data, where)
        if not m:
            return None
        name = self.string(m, "name", where)
        if not NAME_RE.match(name):
            self.bad(f"{where}.name", name, "1-42 lowercase letters, digits or '-'")
        kind = kinds.named(m.get("kind"))
        if kind is None:
            self.bad(f"{where}.kind", m.get("kind"), f"one of {', '.join(kinds.names())}")
            return None
        self.unknown(
            m, where, ("name", "kind", "hosts", "anyRegistry", "auth", "prefetch", *kind.keys)
        )
        entry: RegistryEntry | None = kind.parse(
            self, m, where, name, self.host_rule(m, where, kind)
        )
        prefetch = self.boolean(m, "prefetch", where, True)
        if entry is None:
            return None
        if entry.per_pod_identity:
            # Each pod's own identity is exchanged when its pod comes, never ahead.
            if m.get("prefetch") is True:
                self.bad(f"{where}.prefetch", True, "false or absent with a per-pod identity")
            prefetch = False
        return dataclasses.replace(entry, prefetch=prefetch)

    def host_rule(self, m: Mapping[str, Any], where: str, kind: Kind[Any]) -> HostRule | None:
        hosts = [h.lower() for h in self.string_list(m, "hosts", where)]
        for h in hosts:
            if not valid_host(h):
                self.bad(f"{where}.hosts", h, "a registry host such as reg.example.com[:port]")
            else:
                self.port_in_range(f"{where}.hosts", h)
        any_registry = self.boolean(m, "anyRegistry", where, False)
        family = kind.family(self, m, where) if kind.family is not None else None
        if any_registry and family is None:
            self.bad(f"{where}.anyRegistry", True, f"false for kind {kind.name} (list its hosts)")
            any_registry = False
        if not hosts and not any_registry:
            self.bad(f"{where}.hosts", [], "at least one host, or anyRegistry: true")
            return None
        return HostRule(hosts=frozenset(hosts), family=family if any_registry else None)
