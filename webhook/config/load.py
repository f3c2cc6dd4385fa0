"""Reading a configuration file: YAML in, a validated ``Config`` out, all at once.

A broken config is refused with every problem listed, each naming the key, the value
found and what was expected (``ConfigError.problems``). The file is read with the
bounds of ``webhook.config.files`` (no alias bombs, no FIFOs, no huge numbers).
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webhook.config.files import FileProblems, load_yaml, read_text
from webhook.config.hosts import ACR_DEFAULT_SUFFIXES, ECR_ACCOUNT_RE, HostRule, valid_host
from webhook.config.schema import (
    ACR_AUDIENCES,
    ACR_MODES,
    ECR_MODES,
    AcrAuth,
    AcrEntry,
    AdmissionSettings,
    Config,
    EcrAuth,
    EcrEntry,
    GenericAuth,
    GenericEntry,
    HealingSettings,
    RefreshSettings,
    RegistryEntry,
    SecretRef,
)

_K8S_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
_SCOPE_RE = re.compile(r"^repository:[a-z0-9._/-]+:(pull|\*|metadata_read)(,[a-z_*]+)*$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


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


class _Validator:
    """Walks the document once, collecting every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.namespace = "pull-secret-webhook"

    def bad(self, key: str, value: Any, expected: str) -> None:
        try:
            shown = repr(value)
        except ValueError:  # an int past Python's 4,300-digit str() limit
            shown = f"<{type(value).__name__}>"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        self.problems.append(f"{key}: got {shown}, expected {expected}")

    # -- typed getters -----------------------------------------------------------

    def mapping(self, data: Any, key: str) -> Mapping[str, Any]:
        if isinstance(data, Mapping):
            return data
        self.bad(key, data, "a mapping")
        return {}

    def unknown(self, data: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
        for k in data:
            if k not in allowed:
                where = f"{key}.{k}" if key else str(k)
                self.bad(where, data[k], f"no such key (known: {', '.join(allowed)})")

    def string(self, data: Mapping[str, Any], key: str, prefix: str, default: str = "") -> str:
        value = data.get(key, default)
        if isinstance(value, str):
            return value
        self.bad(f"{prefix}.{key}" if prefix else key, value, "a string")
        return default

    def number(
        self, data: Mapping[str, Any], key: str, prefix: str, default: float, lo: float, hi: float
    ) -> float:
        value = data.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not lo <= value <= hi  # before isfinite: a huge int overflows float()
            or not math.isfinite(value)
        ):
            self.bad(f"{prefix}.{key}", value, f"a number from {lo:g} to {hi:g}")
            return default
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value
        self.bad(f"{prefix}.{key}", value, "true or false")
        return default

    def string_list(self, data: Mapping[str, Any], key: str, prefix: str) -> list[str]:
        value = data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.bad(f"{prefix}.{key}", value, "a list of strings")
            return []
        return list(value)

    def secret_ref(self, data: Mapping[str, Any], key: str, prefix: str) -> SecretRef | None:
        if key not in data:
            return None
        ref = self.mapping(data[key], f"{prefix}.{key}")
        where = f"{prefix}.{key}"
        self.unknown(ref, where, ("name", "namespace", "key"))
        name = self.string(ref, "name", where)
        if not _K8S_NAME_RE.match(name):
            self.bad(f"{where}.name", name, "a Kubernetes object name")
        namespace = self.string(ref, "namespace", where)
        if namespace and not _NAME_RE.match(namespace) and not _K8S_NAME_RE.match(namespace):
            self.bad(f"{where}.namespace", namespace, "a namespace name")
        return SecretRef(
            name=name, namespace=namespace or self.namespace, key=self.string(ref, "key", where)
        )

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

    def port_in_range(self, key: str, value: str) -> None:
        """``host:port`` or a URL's port must be 1-65535 (valid_host checks only digits)."""
        match = re.search(r":(\d+)(?:/|$)", value.split("://", 1)[-1])
        if match and not 1 <= int(match.group(1)[:6]) <= 65535:
            self.bad(key, value, "a port from 1 to 65535")

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
        if not _K8S_NAME_RE.match(namespace):
            self.bad("namespace", namespace, "a namespace name")
        self.namespace = namespace
        prefix = self.string(top, "secretPrefix", "", "psw")
        if not _NAME_RE.match(prefix) or len(prefix) > 20:
            self.bad("secretPrefix", prefix, "1-20 lowercase letters, digits or '-'")
        ca_file = self.string(top, "caFile", "")
        if ca_file:
            self.ca_bundle(ca_file)

        excluded = top.get("excludedNamespaces", [])
        if not isinstance(excluded, list) or not all(
            isinstance(n, str) and _K8S_NAME_RE.match(n) for n in excluded
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
        if not _K8S_NAME_RE.match(lease):
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
        if not _NAME_RE.match(name):
            self.bad(f"{where}.name", name, "1-42 lowercase letters, digits or '-'")
        kind = m.get("kind")
        if kind not in ("acr", "ecr", "generic"):
            self.bad(f"{where}.kind", kind, "one of acr, ecr, generic")
            return None
        common = ("name", "kind", "hosts", "anyRegistry", "auth")
        extra = {
            "acr": ("suffixes", "scope"),
            "ecr": ("accounts", "region", "endpointUrl", "stsEndpointUrl"),
            "generic": (),
        }[kind]
        self.unknown(m, where, common + extra)
        rule = self.host_rule(m, where, kind)
        auth_data = self.mapping(m.get("auth", {}), f"{where}.auth")
        if kind == "acr":
            return self.acr_entry(m, where, name, rule, self.acr_auth(auth_data, f"{where}.auth"))
        if kind == "ecr":
            return self.ecr_entry(m, where, name, rule, self.ecr_auth(auth_data, f"{where}.auth"))
        auth = self.generic_auth(auth_data, f"{where}.auth")
        if rule is None or auth is None:
            return None
        return GenericEntry(name=name, rule=rule, auth=auth)

    def acr_entry(
        self,
        m: Mapping[str, Any],
        where: str,
        name: str,
        rule: HostRule | None,
        auth: AcrAuth | None,
    ) -> AcrEntry | None:
        scope = self.string(m, "scope", where)
        for part in scope.split():
            if not _SCOPE_RE.match(part):
                self.bad(f"{where}.scope", part, "repository:NAME:pull (space-separated list)")
        if rule is None or auth is None:
            return None
        return AcrEntry(name=name, rule=rule, auth=auth, scope=" ".join(scope.split()))

    def ecr_entry(
        self,
        m: Mapping[str, Any],
        where: str,
        name: str,
        rule: HostRule | None,
        auth: EcrAuth | None,
    ) -> EcrEntry | None:
        region = self.string(m, "region", where)
        if region and not _REGION_RE.match(region):
            self.bad(f"{where}.region", region, "an AWS region such as us-east-1")
        endpoint = self.string(m, "endpointUrl", where)
        sts_endpoint = self.string(m, "stsEndpointUrl", where)
        for key, url in (("endpointUrl", endpoint), ("stsEndpointUrl", sts_endpoint)):
            if url and not re.match(r"^https?://[^\s/]+", url):
                self.bad(f"{where}.{key}", url, "an http(s) URL")
            elif url:
                self.port_in_range(f"{where}.{key}", url)
        if rule is None or auth is None:
            return None
        return EcrEntry(
            name=name,
            rule=rule,
            auth=auth,
            region=region,
            endpoint_url=endpoint,
            sts_endpoint_url=sts_endpoint,
        )

    def host_rule(self, m: Mapping[str, Any], where: str, kind: str) -> HostRule | None:
        hosts = [h.lower() for h in self.string_list(m, "hosts", where)]
        for h in hosts:
            if not valid_host(h):
                self.bad(f"{where}.hosts", h, "a registry host such as reg.example.com[:port]")
            else:
                self.port_in_range(f"{where}.hosts", h)
        family = self.boolean(m, "anyRegistry", where, False)
        suffixes = [s.lower().lstrip(".") for s in self.string_list(m, "suffixes", where)]
        for s in suffixes:
            if not valid_host(s) or ":" in s:
                self.bad(f"{where}.suffixes", s, "a DNS suffix such as azurecr.example.com")
        accounts = self.string_list(m, "accounts", where)
        for a in accounts:
            if not ECR_ACCOUNT_RE.match(a):
                self.bad(f"{where}.accounts", a, "a 12-digit AWS account id")
        if family and kind == "generic":
            self.bad(f"{where}.anyRegistry", True, "false for kind generic (list its hosts)")
            family = False
        if not hosts and not family:
            self.bad(f"{where}.hosts", [], "at least one host, or anyRegistry: true")
            return None
        return HostRule(
            kind=kind,
            hosts=frozenset(hosts),
            family=family,
            suffixes=tuple(dict.fromkeys((*ACR_DEFAULT_SUFFIXES, *suffixes)))
            if kind == "acr"
            else (),
            accounts=frozenset(accounts),
        )

    def acr_auth(self, m: Mapping[str, Any], where: str) -> AcrAuth | None:
        self.unknown(
            m,
            where,
            (
                "mode",
                "clientId",
                "tenantId",
                "resourceId",
                "clientSecretRef",
                "clientSecretFile",
                "certificateRef",
                "certificateFile",
                "tokenFile",
                "authorityHost",
                "audience",
            ),
        )
        mode = m.get("mode", "workloadIdentity")
        if mode not in ACR_MODES:
            self.bad(f"{where}.mode", mode, f"one of {', '.join(ACR_MODES)}")
            return None
        client_id = self.string(m, "clientId", where)
        tenant_id = self.string(m, "tenantId", where)
        for key, value in (("clientId", client_id), ("tenantId", tenant_id)):
            if value and not _UUID_RE.match(value) and not (key == "tenantId" and "." in value):
                self.bad(f"{where}.{key}", value, "a GUID")
        resource_id = self.string(m, "resourceId", where)
        if resource_id and not resource_id.lower().startswith("/subscriptions/"):
            self.bad(f"{where}.resourceId", resource_id, "an ARM id /subscriptions/…")
        if mode != "managedIdentity" and resource_id:
            self.bad(f"{where}.resourceId", resource_id, "only with mode managedIdentity")
        if client_id and resource_id:
            self.bad(f"{where}.resourceId", resource_id, "either clientId or resourceId, not both")
        secret = self.secret_ref(m, "clientSecretRef", where)
        secret_file = self.string(m, "clientSecretFile", where)
        cert = self.secret_ref(m, "certificateRef", where)
        cert_file = self.string(m, "certificateFile", where)
        given = [x for x in (secret, secret_file, cert, cert_file) if x]
        if mode == "servicePrincipal":
            if not client_id or not tenant_id:
                self.bad(where, dict(m), "clientId and tenantId for mode servicePrincipal")
            if len(given) != 1:
                self.bad(
                    where,
                    sorted(m),
                    "exactly one of clientSecretRef, clientSecretFile, certificateRef, "
                    "certificateFile for mode servicePrincipal",
                )
        elif given:
            self.bad(where, sorted(m), f"no service principal secret for mode {mode}")
        authority = self.string(m, "authorityHost", where)
        if authority and not authority.startswith("https://"):
            self.bad(f"{where}.authorityHost", authority, "an https:// URL (Entra ID needs TLS)")
        elif authority:
            self.port_in_range(f"{where}.authorityHost", authority)
        audience = self.string(m, "audience", where, "containerregistry")
        if audience not in ACR_AUDIENCES and not audience.startswith("https://"):
            self.bad(
                f"{where}.audience",
                audience,
                f"one of {', '.join(ACR_AUDIENCES)}, or an https:// audience",
            )
            audience = "containerregistry"
        return AcrAuth(
            mode=mode,
            client_id=client_id,
            tenant_id=tenant_id,
            resource_id=resource_id,
            client_secret=secret,
            client_secret_file=secret_file,
            certificate=cert,
            certificate_file=cert_file,
            token_file=self.string(m, "tokenFile", where),
            authority_host=authority.rstrip("/"),
            audience=audience,
        )

    def ecr_auth(self, m: Mapping[str, Any], where: str) -> EcrAuth | None:
        self.unknown(m, where, ("mode", "accessKeysRef", "roleArn", "externalId", "sessionName"))
        mode = m.get("mode", "default")
        if mode not in ECR_MODES:
            self.bad(f"{where}.mode", mode, f"one of {', '.join(ECR_MODES)}")
            return None
        keys = self.secret_ref(m, "accessKeysRef", where)
        role_arn = self.string(m, "roleArn", where)
        if mode == "staticKeys" and keys is None:
            self.bad(f"{where}.accessKeysRef", None, "a Secret reference for mode staticKeys")
        if mode != "staticKeys" and keys is not None:
            self.bad(f"{where}.accessKeysRef", keys.name, "only with mode staticKeys")
        if mode == "assumeRole" and not role_arn:
            self.bad(f"{where}.roleArn", role_arn, "a role ARN for mode assumeRole")
        if role_arn and not _ROLE_ARN_RE.match(role_arn):
            self.bad(f"{where}.roleArn", role_arn, "arn:aws:iam::ACCOUNT:role/NAME")
        if role_arn and mode != "assumeRole":
            self.bad(f"{where}.roleArn", role_arn, "only with mode assumeRole")
        session = self.string(m, "sessionName", where, "pull-secret-webhook")
        if not re.match(r"^[\w+=,.@-]{2,64}$", session):
            self.bad(f"{where}.sessionName", session, "2-64 characters of [A-Za-z0-9+=,.@_-]")
        return EcrAuth(
            mode=mode,
            access_keys=keys,
            role_arn=role_arn,
            external_id=self.string(m, "externalId", where),
            session_name=session,
        )

    def generic_auth(self, m: Mapping[str, Any], where: str) -> GenericAuth | None:
        self.unknown(m, where, ("secretRef",))
        ref = self.secret_ref(m, "secretRef", where)
        if ref is None:
            self.bad(f"{where}.secretRef", None, "a Secret reference with username/password")
            return None
        return GenericAuth(secret=ref)
