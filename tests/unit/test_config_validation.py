"""A broken config is refused with every problem listed (key, value, expectation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devenv.support.configs import sample_document
from webhook.config import acr, ecr
from webhook.config.acr import AcrEntry
from webhook.config.generic import SecretCredentials
from webhook.config.load import ConfigError, load_config, parse_config


def test_sample_config_parses_into_typed_entries() -> None:
    cfg = parse_config(sample_document())
    kinds = [(e.name, e.kind, type(e.auth)) for e in cfg.registries]
    assert kinds == [
        ("contoso", "acr", acr.WorkloadIdentity),
        ("any-acr", "acr", acr.ManagedIdentity),
        ("aws", "ecr", ecr.DefaultChain),
        ("tenant-ecr", "ecr", ecr.PodServiceAccount),
        ("harbor", "generic", SecretCredentials),
    ]
    harbor = cfg.registries[4].auth
    assert isinstance(harbor, SecretCredentials)
    assert harbor.secret.namespace == "pull-secret-webhook"  # defaults to the webhook's own
    first = cfg.registries[0]
    assert isinstance(first, AcrEntry)
    assert first.scope == "repository:app:pull"
    assert cfg.admission.budget_seconds == pytest.approx(6.0)


def test_every_problem_is_reported_at_once() -> None:
    doc: dict[str, Any] = {
        "registries": [
            {
                "name": "Bad_Name",
                "kind": "acr",
                "anyRegistry": True,
                "auth": {"mode": "servicePrincipal"},
            },
            {"name": "e", "kind": "quay", "hosts": ["quay.io"]},
            {
                "name": "ecr",
                "kind": "ecr",
                "accounts": ["12"],
                "anyRegistry": True,
                "auth": {"mode": "assumeRole", "roleArn": "not-an-arn"},
            },
            {"name": "ecr", "kind": "generic", "hosts": ["EVIL HOST"], "auth": {}},
        ],
        "admission": {"timeoutSeconds": 45, "failClosed": "yes"},
        "refresh": {"fraction": 2},
        "unknownKey": 1,
    }
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    problems = info.value.problems
    expected = [
        "unknownKey: got 1, expected no such key",
        "registries[0].name: got 'Bad_Name'",
        "registries[0].auth: got {'mode': 'servicePrincipal'}, expected clientId and tenantId",
        "expected exactly one of clientSecretRef",
        "registries[1].kind: got 'quay', expected one of acr, ecr, gar, generic",
        "registries[2].accounts: got '12', expected a 12-digit AWS account id",
        "registries[2].auth.roleArn: got 'not-an-arn'",
        "registries[3].hosts: got 'evil host'",
        "registries[3].auth.secretRef: got None",
        "admission.timeoutSeconds: got 45, expected a number from 1 to 30",
        "admission.failClosed: got 'yes', expected true or false",
        "refresh.fraction: got 2, expected a number from 0.1 to 0.9",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert str(len(problems)) in str(info.value)


def test_duplicate_entry_names_are_refused() -> None:
    doc = sample_document()
    doc["registries"][1]["name"] = "contoso"
    with pytest.raises(ConfigError, match=r"registries\[1\]\.name.*unique name"):
        parse_config(doc)


def test_empty_config_is_refused_because_nothing_would_match() -> None:
    with pytest.raises(ConfigError, match="no registry entries"):
        parse_config({})


def test_generic_entries_cannot_claim_a_whole_family() -> None:
    doc = {
        "registries": [
            {
                "name": "g",
                "kind": "generic",
                "anyRegistry": True,
                "hosts": ["r.example.com"],
                "auth": {"secretRef": {"name": "s"}},
            }
        ]
    }
    with pytest.raises(ConfigError, match="anyRegistry"):
        parse_config(doc)


def test_entra_authority_must_use_tls() -> None:
    doc = sample_document()
    doc["registries"][0]["auth"]["authorityHost"] = "http://login.example.com"
    with pytest.raises(ConfigError, match=r"authorityHost.*https"):
        parse_config(doc)


def test_load_config_reports_yaml_errors_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("registries: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in info.value.problems[0]


def test_load_config_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_the_namespace_defaults_to_the_pods_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # The manifests set POD_NAMESPACE from the downward API: a kustomize `namespace:`
    # overlay then needs no change to the config.
    document = {"registries": [{"name": "acr", "kind": "acr", "anyRegistry": True}]}
    monkeypatch.setenv("POD_NAMESPACE", "tools")
    assert parse_config(document).namespace == "tools"
    assert parse_config({**document, "namespace": "other"}).namespace == "other"
    monkeypatch.delenv("POD_NAMESPACE")
    assert parse_config(document).namespace == "pull-secret-webhook"
