"""A replica (``python -m webhook serve`` as its own process) stays inside the Deployment's
256Mi whatever the network does: a flood of connections that never start TLS, and the
reviews that decode largest for their size, many at once. The figures come from the
process's /proc status, through bench/memory.py's scenarios (which print them all)."""

from __future__ import annotations

import pytest

from bench.memory import LIMIT_MIB, run


def mib(text: str) -> float:
    return float(text.split()[0])


@pytest.mark.timeout(180)
def test_ten_thousand_half_open_connections_leave_memory_and_admissions_alone() -> None:
    result = run(10_000, settle=6.0, hold_seconds=20.0, scenario="half-open")
    before, peak, after = (mib(result[k]) for k in ("rss_before", "rss_peak_during", "rss_after"))
    assert peak < LIMIT_MIB * 0.5, result
    assert after - before < 16, result  # returned: no lasting growth from the flood
    assert result["half_open_connects_made"] >= 10_000, result
    # Legitimate admissions meanwhile: every one answered, inside the default admission
    # budget (timeoutSeconds 10 x budgetFraction 0.6).
    assert result["normal_admission_statuses"] == [200], result
    assert result["normal_admission_slowest_ms"] < 6000, result
    assert result["normal_admissions_during"] >= 10, result


@pytest.mark.timeout(180)
def test_64_reviews_that_decode_four_times_their_size_stay_under_the_limit() -> None:
    """One string filling the 7 MiB body, ending in one character beyond U+FFFF (Python
    then stores every character in 4 bytes): 64 at once, after 64 of the same in ASCII."""
    result = run(0, settle=0.0, hold_seconds=0.0, scenario="decoded", reviews=64)
    assert mib(result["astral_rss_peak_so_far"]) < LIMIT_MIB, result
    assert 200 in result["astral_statuses"], result  # served, not only refused
    # Refused (429: no budget in time; 400 or a reset: body not read in time), never a 5xx.
    assert set(result["astral_statuses"]) <= {0, 200, 400, 429}, result
