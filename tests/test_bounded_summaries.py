"""The bounded summaries a shard reports instead of per-call / per-dialogue lists (schemas.stats) and the driver's
fold of shard results (flows.run_metrics.fold_shards): same figures as the exact lists, size independent of N."""

from __future__ import annotations

import random

from flows.run_metrics import fold_shards
from schemas.stats import add_busy, busy_share_before, histogram_percentile, log_histogram, percentile


def test_latency_histogram_percentiles_are_within_two_percent_and_small():
    rng = random.Random(4)
    values = [rng.lognormvariate(-3.5, 0.8) for _ in range(50_000)]
    hist = log_histogram(values)
    assert len(hist) < 600 and sum(hist.values()) == len(values)
    for p in (0.5, 0.9, 0.99):
        exact = percentile(values, p)
        assert abs(histogram_percentile(hist, p) - exact) / exact < 0.02, p
    assert histogram_percentile({}, 0.5) is None


def test_busy_slots_give_the_exact_overlap_share_for_whole_second_boundaries():
    rng = random.Random(7)
    intervals = []
    for _ in range(2000):
        s = rng.uniform(0, 100)
        intervals.append((s, s + rng.uniform(0.01, 3)))
    slots: dict[int, float] = {}
    for s, e in intervals:
        add_busy(slots, s, e)
    total = sum(e - s for s, e in intervals)
    assert abs(sum(slots.values()) - total) < 1e-6 and len(slots) <= 104
    for until in (20.0, 50.0, 99.0):  # a slot boundary: the share is exact
        exact = sum(max(0.0, min(e, until) - s) for s, e in intervals) / total
        assert abs(busy_share_before(slots, until) - exact) < 1e-3
    assert busy_share_before({}, 5.0) is None and busy_share_before(slots, None) is None


def _shard(i: int) -> dict:
    return {"statuses": {"accepted": i, "rejected": 1}, "gen_calls": 10 * i, "judge_calls": i, "retries": {"empty": 1},
            "gates": {}, "judge_busy": {i: 0.5}, "latencies": {"m1": {3: i}}, "gen_end": float(i),
            "pool_stats": {"m1": {"calls": i, "errors": {"timeout": 1}}}, "home": f"/h{i % 2}", "wall_s": float(i)}


def test_folding_shards_sums_counts_and_keeps_one_summary():
    acc = None
    for i in range(1, 6):
        acc = fold_shards(acc, _shard(i))
    assert acc["statuses"] == {"accepted": 15, "rejected": 5} and acc["gen_calls"] == 150 and acc["judge_calls"] == 15
    assert acc["retries"] == {"empty": 5} and acc["latencies"] == {"m1": {3: 15}} and acc["gen_end"] == 5.0
    assert acc["pool_stats"]["m1"]["calls"] == 15 and acc["pool_stats"]["m1"]["errors"] == {"timeout": 5}
    assert sorted(acc["homes"]) == ["/h0", "/h1"] and acc["judge_busy"] == {i: 0.5 for i in range(1, 6)}
