"""The renewal benchmark's readings of what it sampled: runs of slow reads, and the
API server's garbage collections from its gctrace lines."""

from __future__ import annotations

from bench.renewals import gc_cycles, gc_during, slow_stretches

# Lines as a Go 1.2x runtime writes them with GODEBUG=gctrace=1, between other log lines.
LOG = """\
I1207 12:00:00.000000 1 server.go:1] starting
gc 1 @0.012s 2%: 0.010+1.2+0.003 ms clock, 0.020+0.5/1.0/0.1+0.006 ms cpu, 4->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P
gc 2 @120.500s 3%: 0.21+2300+0.15 ms clock, 0.43+510/1150/0+0.31 ms cpu, 1450->1490->760 MB, 1500 MB goal, 1 MB stacks, 0 MB globals, 2 P
"""  # noqa: E501


def test_each_gctrace_line_becomes_a_cycle_at_its_wall_clock_time() -> None:
    first, second = gc_cycles(LOG, started=1000.0)
    assert first["at"] == 1000.012
    assert second["at"] == 1120.5
    assert second["mark_ms"] == 2300.0
    assert round(second["wall_ms"], 2) == 2300.36
    assert (second["heap_before_mb"], second["heap_live_mb"], second["goal_mb"]) == (
        1450,
        760,
        1500,
    )


def test_a_cycle_is_beside_a_stretch_when_its_wall_time_overlaps_it() -> None:
    cycles = gc_cycles(LOG, started=1000.0)
    # The second cycle runs from 1120.5 to ~1122.8 s.
    assert [c["at"] for c in gc_during(cycles, 1122.0, 1125.0, origin=1000.0)] == [120.5]
    assert gc_during(cycles, 1123.0, 1125.0, origin=1000.0) == []
    assert gc_during(cycles, 1100.0, 1120.4, origin=1000.0) == []


def test_slow_reads_less_than_the_gap_apart_are_one_stretch() -> None:
    reads = [(0.0, 0.001), (1.0, 0.05), (2.5, 0.06), (10.0, 0.07), (10.1, 0.002)]
    assert slow_stretches(reads, over=0.02) == [(1.0, 2.5, 2), (10.0, 10.0, 1)]
