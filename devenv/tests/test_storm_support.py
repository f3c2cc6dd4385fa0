"""The storm benchmark's reading of the replicas' latency histograms."""

from __future__ import annotations

from devenv.support.storm import counter_values, histogram_bucket

EXPOSITION = """\
# TYPE pull_secret_webhook_admission_duration_seconds histogram
pull_secret_webhook_admission_duration_seconds_bucket{le="0.5"} 40.0
pull_secret_webhook_admission_duration_seconds_bucket{le="1.0"} 90.0
pull_secret_webhook_admission_duration_seconds_bucket{le="5.0"} 99.0
pull_secret_webhook_admission_duration_seconds_bucket{le="+Inf"} 100.0
pull_secret_webhook_admission_duration_seconds_count 100.0
"""
NAME = "pull_secret_webhook_admission_duration_seconds_bucket"


def test_the_percentile_falls_in_the_first_bucket_holding_that_share() -> None:
    buckets = counter_values(EXPOSITION, NAME)
    assert histogram_bucket([buckets], 40) == (0.0, 0.5)
    assert histogram_bucket([buckets], 50) == (0.5, 1.0)
    assert histogram_bucket([buckets], 99) == (1.0, 5.0)
    assert histogram_bucket([buckets], 100) == (5.0, float("inf"))


def test_histograms_add_up() -> None:
    slow = {'{le="0.5"}': 0.0, '{le="1.0"}': 0.0, '{le="5.0"}': 0.0, '{le="+Inf"}': 100.0}
    both = [counter_values(EXPOSITION, NAME), slow]
    assert histogram_bucket(both, 45) == (0.5, 1.0)
    assert histogram_bucket(both, 50) == (5.0, float("inf"))
    assert histogram_bucket([slow], 1) == (5.0, float("inf"))
    assert histogram_bucket([], 99) == (0.0, 0.0)
