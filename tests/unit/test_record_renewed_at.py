"""The record says when the webhook last wrote a Secret's credential (``status.renewedAt``),
and ``kubectl get managedpullsecrets -A`` shows it beside the namespace, the registry entry,
the state and the expiry (the CRD's printer columns, the same in the base and the chart)."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import pytest
import yaml

from devenv.support.hotpath import opted_in
from devenv.support.memkube import MemKube
from tests.support.bookkeeping import Minter, need_of, record_of
from tests.support.manifests import CHART, REPO
from webhook.config.schema import Config
from webhook.config.store import ConfigStore
from webhook.kube.rfc3339 import to_rfc3339
from webhook.pullsecrets.manager import PullSecretManager
from webhook.pullsecrets.records import ManagedSecret


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def password(kube: MemKube, namespace: str, name: str) -> Any:
    secret = kube.secrets[(namespace, name)]
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    return [a["password"] for a in auths.values()]


async def test_renewed_at_is_when_the_secret_was_created_and_moves_with_each_renewal(
    config: Config,
) -> None:
    kube, clock = MemKube(), Clock()
    m = PullSecretManager(ConfigStore(config), kube, Minter(), clock=clock)
    m.namespaces.replace_all(opted_in("team-a"))
    need = need_of(config)
    created_at = clock.now
    await m.ensure("team-a", [need], budget=5, dry_run=False)
    status = record_of(kube, "team-a", need)["status"]
    assert status["renewedAt"] == to_rfc3339(created_at)
    assert password(kube, "team-a", need.secret_name) == ["token-1"]

    made = m.records.get("team-a", need.secret_name)
    assert made is not None
    # Once it is due (half its hour, plus its own place in the window) the leader renews it.
    clock.now = renewed_at = float(math.ceil(made.refresh_at))
    assert created_at + 1800 <= renewed_at < created_at + 3600
    assert (await m.writer.refresh("team-a", need)).state == "ready"
    assert password(kube, "team-a", need.secret_name) == ["token-2"]
    status = record_of(kube, "team-a", need)["status"]
    assert status["renewedAt"] == to_rfc3339(renewed_at)
    # The record every replica watches carries it too.
    record = m.records.get("team-a", need.secret_name)
    assert record is not None and record.renewed_at == renewed_at


def test_renewed_at_survives_the_round_trip_and_a_foreign_record_has_none() -> None:
    ready = ManagedSecret("team-a", "s", "acr", "h", "i").ready("uid-1", 2e9, 1.9e9, 1.8e9)
    doc = ready.to_object("pull-secret-webhook")
    assert doc["status"]["renewedAt"] == to_rfc3339(1.8e9)
    assert ManagedSecret.from_object(doc) == ready
    foreign = ready.foreign().to_object("pull-secret-webhook")
    assert "renewedAt" not in foreign["status"]


def crd_versions(path: str) -> Any:
    docs = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]
    [crd] = [
        d for d in docs if d["metadata"]["name"] == "managedpullsecrets.pull-secret-webhook.io"
    ]
    [version] = crd["spec"]["versions"]
    return version


@pytest.mark.parametrize(
    "path",
    [
        "manifests/base/crd.yaml",
        str((CHART / "files" / "crds" / "managedpullsecrets.yaml").relative_to(REPO)),
    ],
)
def test_the_crd_declares_renewed_at_and_prints_the_columns_an_operator_asks_for(
    path: str,
) -> None:
    version = crd_versions(path)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["renewedAt"] == {**status["renewedAt"], "type": "string", "format": "date-time"}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    default = [name for name, c in columns.items() if not c.get("priority")]
    # `-A` prints the record's own namespace (the webhook's) first: the Secret's namespace
    # needs a name of its own to be told apart.
    assert default == ["Secret-Namespace", "Secret", "Registry", "State", "Expires", "Renewed"]
    assert columns["Renewed"]["jsonPath"] == ".status.renewedAt"
    assert columns["Renewed"]["type"] == "date"  # shown as an age: "5m" ago
    # A date column in the future prints "<invalid>" (kubectl shows ages only): the time.
    assert columns["Expires"] == {
        "name": "Expires",
        "type": "string",
        "jsonPath": ".status.expiresAt",
    }
