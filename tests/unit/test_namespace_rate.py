"""Token buckets per namespace: a burst, then a steady rate, whatever the names."""

from __future__ import annotations

import pytest

from webhook.admission.needs import valid_service_account_name
from webhook.pullsecrets.ratelimit import NamespaceRate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_namespace_gets_its_burst_then_its_rate_per_minute() -> None:
    clock = Clock()
    rate = NamespaceRate(per_minute=10, clock=clock)
    assert sum(rate.take("team-a") for _ in range(1000)) == 10
    clock.now += 30  # half a minute: five more
    assert sum(rate.take("team-a") for _ in range(1000)) == 5
    clock.now += 3600  # refilled, never beyond the burst
    assert sum(rate.take("team-a") for _ in range(1000)) == 10


def test_namespaces_have_buckets_of_their_own_and_a_gone_one_is_forgotten() -> None:
    rate = NamespaceRate(per_minute=2, clock=Clock())
    assert [rate.take("a"), rate.take("a"), rate.take("a")] == [True, True, False]
    assert rate.take("b")
    rate.forget("a")
    assert len(rate) == 1


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("default", True),
        ("build-bot.v2", True),
        ("kube-system:clusterrole-aggregation-controller", False),
        ("system:serviceaccount:kube-system:x", False),
        ("../x", False),
        ("..", False),
        ("Builder", False),
        ("a" * 254, False),
    ],
)
def test_only_names_a_service_account_can_have_are_valid(name: str, valid: bool) -> None:
    assert valid_service_account_name(name) is valid
