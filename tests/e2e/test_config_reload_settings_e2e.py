"""Each setting of docs/configuration.md, reloaded into a running ``serve`` on the real
control plane: what a reload accepts is applied without a restart (the next admission,
the next Secret written), and what needs a restart is refused, naming the setting, while
the last good config keeps serving. A broken file does not stop the watch: a valid change
written after it is applied.

The replica is one more of the stack's install with a config file and a Lease of its own,
so reloading it touches no other test; reviews are sent to it directly, as the API server
would. (``refresh.intervalSeconds`` and ``gcGraceSeconds`` act on every managed Secret of
the install, which the stack's own leader collects too: they are tested on the real
composition in tests/unit/test_config_reload_consumers.py.)"""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.peers.traffic import ACR_EXCHANGE
from devenv.stack import Replica, Stack
from devenv.support.reviews import make_pod, make_review
from tests.e2e.support import get_json, ns_name, refused
from tests.support.alerting import scrape
from webhook.credentials.base import EXPIRY_MARGIN, Credential
from webhook.kube.rfc3339 import from_rfc3339
from webhook.pullsecrets.renewals import JITTER_SHARE, renew_at, spread
from webhook.pullsecrets.secret import ANN_EXPIRES, ANN_REFRESH

pytestmark = pytest.mark.usefixtures("webhook_logs_on_failure")

INSTANCE = "reload-0"
#: The replica polls its config file every 5 s.
RELOAD_SECONDS = 30.0


@dataclass
class Reloading:
    stack: Stack
    replica: Replica
    path: Path
    original: dict[str, Any]

    def count(self, result: str) -> float:
        samples = scrape(self.replica.health_port, INSTANCE).samples
        return sum(
            v
            for (name, labels), v in samples.items()
            if name == "pull_secret_webhook_config_reloads_total" and ("result", result) in labels
        )

    def write(self, text: str | bytes, *, result: str = "ok") -> None:
        """Swap the file in whole (as the kubelet does) and wait for the replica to apply
        (``ok``) or refuse (``error``) it."""
        before = self.count(result)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(text if isinstance(text, bytes) else text.encode())
        os.replace(tmp, self.path)
        deadline = time.monotonic() + RELOAD_SECONDS
        while self.count(result) <= before:
            assert time.monotonic() < deadline, f"no reload {result} within {RELOAD_SECONDS}s"
            time.sleep(0.2)

    def apply(self, change: Callable[[dict[str, Any]], None], *, result: str = "ok") -> None:
        document = copy.deepcopy(self.original)
        change(document)
        self.write(yaml.safe_dump(document), result=result)

    def admit(self, namespace: str, image: str) -> dict[str, Any]:
        review = make_review(make_pod(image, generate_name="p-"), namespace=namespace)
        answer: dict[str, Any] = self.stack.post_review(self.replica, review)["response"]
        return answer

    def secret_names(self, namespace: str, image: str) -> list[str]:
        answer = self.admit(namespace, image)
        if "patch" not in answer:
            return []
        patch = json.loads(base64.b64decode(answer["patch"]))
        return [s["name"] for op in patch for s in op["value"]]


@pytest.fixture(scope="module")
def reloading(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reloading]:
    assert stack.config_path is not None
    document = yaml.safe_load(stack.config_path.read_text())
    document["refresh"] = {**document["refresh"], "leaseName": "pull-secret-webhook-reload"}
    path = tmp_path_factory.mktemp("reload") / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    with stack.extra_replica(INSTANCE, config_path=path) as replica:
        yield Reloading(stack, replica, path, document)
    stack.controlplane.kubectl(
        "delete",
        "lease",
        "pull-secret-webhook-reload",
        "-n",
        "pull-secret-webhook",
        "--ignore-not-found",
        check=False,
    )


@pytest.fixture
def restored(reloading: Reloading) -> Iterator[Reloading]:
    """The replica back on the original config after each test."""
    yield reloading
    if yaml.safe_load(reloading.path.read_text()) != reloading.original:
        reloading.write(yaml.safe_dump(reloading.original))


def acr(stack: Stack, which: str = "acr") -> str:
    registry = getattr(stack, which)
    assert registry is not None
    return f"{registry.login_server}/demo/hello:v1"


def test_registries_an_entry_removed_is_no_longer_served(restored: Reloading) -> None:
    ns = restored.stack.labelled_namespace(ns_name("reload-reg"))
    image = acr(restored.stack, "acr_short")
    assert restored.secret_names(ns, image)
    restored.apply(
        lambda d: d.update(registries=[e for e in d["registries"] if e["name"] != "acr-short"])
    )
    assert restored.secret_names(ns, image) == []
    assert restored.secret_names(ns, acr(restored.stack))  # the others still are


def test_excluded_namespaces_a_namespace_excluded_gets_no_patch_and_no_secret(
    restored: Reloading,
) -> None:
    cp = restored.stack.controlplane
    ns = restored.stack.labelled_namespace(ns_name("reload-excl"))
    image = acr(restored.stack)
    [name] = restored.secret_names(ns, image)
    cp.kubectl("delete", "secret", name, "-n", ns, "--ignore-not-found")
    restored.apply(lambda d: d.update(excludedNamespaces=[ns]))
    assert restored.secret_names(ns, image) == []
    time.sleep(1)  # a write would have been made by now (the admission waits for it)
    assert get_json(cp, "secret", "-n", ns)["items"] == []


def test_secret_prefix_the_next_pod_gets_the_new_name(restored: Reloading) -> None:
    ns = restored.stack.labelled_namespace(ns_name("reload-prefix"))
    image = acr(restored.stack)
    [before] = restored.secret_names(ns, image)
    assert before.startswith("psw-")
    restored.apply(lambda d: d.update(secretPrefix="team"))
    [after] = restored.secret_names(ns, image)
    assert after.startswith("team-")


def test_refresh_fraction_the_next_secret_is_dated_by_the_new_fraction(
    restored: Reloading,
) -> None:
    cp = restored.stack.controlplane
    image = acr(restored.stack)

    def dates(ns: str) -> tuple[str, float, float]:
        [name] = restored.secret_names(ns, image)
        annotations = get_json(cp, "secret", name, "-n", ns)["metadata"]["annotations"]
        refresh, expires = (
            from_rfc3339(annotations[ANN_REFRESH]),
            from_rfc3339(annotations[ANN_EXPIRES]),
        )
        assert refresh is not None and expires is not None
        return name, refresh, expires

    # The same cached credential for both Secrets: only the fraction differs.
    first = restored.original["refresh"]["fraction"]
    second = 0.7 if first < 0.5 else 0.2
    ns1 = restored.stack.labelled_namespace(ns_name("reload-f1"))
    name1, first_refresh, expires = dates(ns1)
    # refresh = issued + f·L + JITTER_SHARE·u·(L - f·L - EXPIRY_MARGIN), issued = expires - L,
    # u the secret's own place (webhook.pullsecrets.renewals.spread): solved for the lifetime L.
    u = JITTER_SHARE * spread(ns1, name1)
    lifetime = (first_refresh - expires + u * EXPIRY_MARGIN) / ((first - 1) * (1 - u))
    restored.apply(lambda d: d["refresh"].update(fraction=second))
    ns2 = restored.stack.labelled_namespace(ns_name("reload-f2"))
    name2, second_refresh, same_expiry = dates(ns2)
    assert same_expiry == expires
    credential = Credential("u", "p", ("h",), expires_at=expires, issued_at=expires - lifetime)
    # RFC 3339 annotations keep whole seconds.
    assert abs(second_refresh - renew_at(credential, second, ns2, name2)) <= 2
    assert second_refresh >= expires - lifetime + second * lifetime - 2


def test_admission_fail_closed_the_next_pod_is_denied(restored: Reloading) -> None:
    stack = restored.stack
    ns = stack.labelled_namespace(ns_name("reload-fc"))
    image = acr(stack, "acr_denied")
    assert stack.acr_denied is not None and stack.object_id
    with refused(stack.acr_denied, stack.object_id):
        assert restored.admit(ns, image)["allowed"]
        restored.apply(lambda d: d["admission"].update(failClosed=True))
        answer = restored.admit(ns, image)
    assert not answer["allowed"] and "acr-exchange 401" in answer["status"]["message"]


@pytest.mark.parametrize(
    ("admission", "budget"),
    [({"timeoutSeconds": 2}, 1.2), ({"budgetFraction": 0.2}, 2.0)],
    ids=["timeoutSeconds", "budgetFraction"],
)
def test_admission_budget_the_next_admission_waits_the_new_budget(
    restored: Reloading, admission: dict[str, Any], budget: float
) -> None:
    stack = restored.stack
    assert stack.emulator is not None and stack.acr_stall is not None
    ns = stack.labelled_namespace(ns_name("reload-budget"))
    restored.apply(lambda d: d["admission"].update(admission))
    # The token service stalls far past any budget: the admission ends at its budget.
    stack.emulator.traffic.inject_fault(
        ACR_EXCHANGE, status=None, delay=60.0, count=100, listener=stack.acr_stall.login_server
    )
    try:
        started = time.monotonic()
        answer = restored.admit(ns, acr(stack, "acr_stall"))
        took = time.monotonic() - started
    finally:
        stack.emulator.traffic.clear_faults()
    assert answer["allowed"] and answer.get("warnings")
    # The default budget is 6 s (0.6 x 10 s); 1 s of slack for a busy machine.
    assert budget - 0.2 <= took <= budget + 1.0, took


@pytest.mark.parametrize(
    ("key", "change"),
    [
        ("namespace", lambda d: d.update(namespace="elsewhere")),
        ("refresh.leaseName", lambda d: d["refresh"].update(leaseName="another-lease")),
    ],
)
def test_a_setting_that_needs_a_restart_is_refused_naming_it_and_the_last_good_serves(
    restored: Reloading, key: str, change: Callable[[dict[str, Any]], None]
) -> None:
    ns = restored.stack.labelled_namespace(ns_name("reload-restart"))
    restored.apply(change, result="error")
    log = restored.replica.log.read_text(errors="replace")
    assert f"{key}: changed from" in log and "which needs a restart" in log
    assert restored.secret_names(ns, acr(restored.stack))  # still serving


def test_a_valid_change_written_after_a_broken_file_is_applied(restored: Reloading) -> None:
    ns = restored.stack.labelled_namespace(ns_name("reload-broken"))
    restored.write(b"registries: [\x01]\n", result="error")
    assert restored.secret_names(ns, acr(restored.stack))  # the last good config
    restored.apply(lambda d: d.update(secretPrefix="fixed"))
    [name] = restored.secret_names(ns, acr(restored.stack))
    assert name.startswith("fixed-")
    log = restored.replica.log.read_text(errors="replace")
    assert "unacceptable character #x0001" in log and "Traceback" not in log
