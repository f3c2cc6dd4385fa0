"""The registry kinds are registered in one table (webhook/config/kinds.py): each kind is
one row, the config's kinds and modes come from it, and no other module names a kind."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from webhook.config import acr, ecr, kinds
from webhook.config.entry import SecretRef
from webhook.config.kinds import KINDS, RegistryEntry
from webhook.config.load import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
#: The modules a kind's name may appear in: its config module, its provider (and the
#: provider's helpers), and the table.
KIND_MODULES = {
    "webhook/config/kinds.py",
    *(f"webhook/config/{kind.name}.py" for kind in KINDS),
    *(kind.provider.replace(".", "/") + ".py" for kind in KINDS),
    "webhook/credentials/entra.py",
    "webhook/credentials/ecr_errors.py",
}


def test_every_entry_type_has_exactly_one_row_and_names_are_unique() -> None:
    assert [kind.entry for kind in KINDS] == list(get_args(RegistryEntry))
    assert len(set(kinds.names())) == len(KINDS)
    for kind in KINDS:
        assert kinds.named(kind.name) is kind
        assert kinds.kind_of(kind.entry) is kind
    assert kinds.named(["acr"]) is None  # any YAML value may be asked about


def test_no_module_outside_a_kinds_own_names_a_kind() -> None:
    literal = re.compile("[\"'](" + "|".join(kinds.names()) + ")[\"']")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted((REPO / "webhook").rglob("*.py"))
        if str(path.relative_to(REPO)) not in KIND_MODULES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert offenders == [], "register kind-specific behaviour in webhook/config/kinds.py"


def entry(auth: dict[str, object], kind: str = "acr") -> RegistryEntry:
    [found] = parse_config(
        {"registries": [{"name": "r", "kind": kind, "hosts": ["r.azurecr.io"], "auth": auth}]}
    ).registries
    return found


@pytest.mark.parametrize(
    ("auth", "source"),
    [
        pytest.param(
            {"clientSecretFile": "/s/secret"},
            acr.FromFile("/s/secret", certificate=False),
            id="secret-file",
        ),
        pytest.param(
            {"certificateFile": "/s/cert.pem"},
            acr.FromFile("/s/cert.pem", certificate=True),
            id="certificate-file",
        ),
        pytest.param(
            {"certificateRef": {"name": "sp-cert"}},
            acr.FromSecret(SecretRef("sp-cert", "pull-secret-webhook"), certificate=True),
            id="certificate-secret",
        ),
    ],
)
def test_a_service_principal_carries_exactly_the_one_source_it_was_given(
    auth: dict[str, object], source: acr.FromFile | acr.FromSecret
) -> None:
    ids = {"clientId": "11111111-1111-1111-1111-111111111111", "tenantId": "contoso.com"}
    found = entry({"mode": "servicePrincipal", **ids, **auth})
    assert isinstance(found.auth, acr.ServicePrincipal)
    assert found.auth.secret == source
    assert found.identity() == "sp:contoso.com/11111111-1111-1111-1111-111111111111"


def test_each_mode_is_its_own_type_and_keeps_the_identity_label_secret_names_derive_from() -> None:
    assert entry({}).identity() == "wi:env"
    assert entry({"mode": "managedIdentity"}).identity() == "mi:system"
    pod = entry({"mode": "podServiceAccount"})
    assert isinstance(pod.auth, acr.PodServiceAccount) and pod.per_pod_identity
    role = entry({"mode": "assumeRole", "roleArn": "arn:aws:iam::123456789012:role/pull"}, "ecr")
    assert isinstance(role.auth, ecr.AssumeRole)
    assert role.identity() == "role:arn:aws:iam::123456789012:role/pull"


def test_an_unknown_kind_is_refused_with_the_tables_kinds() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"registries": [{"name": "q", "kind": "quay", "hosts": ["quay.io"]}]})
    assert caught.value.problems == [
        f"registries[0].kind: got 'quay', expected one of {', '.join(kinds.names())}"
    ]
