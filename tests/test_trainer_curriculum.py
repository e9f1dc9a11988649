"""Curriculum schedule and bucket order (pure functions), and the ERC metrics."""

from __future__ import annotations

import pytest

from trainer.curriculum import Phase, ScheduleError, default_schedule, epoch_orders, parse_schedule, rebucket
from trainer.evaluate import classification_metrics


def test_default_schedule_is_prc_emo() -> None:
    assert default_schedule(2, 3) == [Phase(1, (0,), 1), Phase(2, (0, 1), 1), Phase(3, (0, 1), 1)]
    assert default_schedule(2, 5)[-1] == Phase(3, (0, 1), 3)
    assert default_schedule(3, 3) == [Phase(1, (0,), 1), Phase(2, (0, 1), 1), Phase(3, (0, 1, 2), 1)]
    assert default_schedule(1, 1) == [Phase(1, (0,), 1)]
    with pytest.raises(ScheduleError, match="cannot cover 3 buckets"):
        default_schedule(3, 2)


def test_parse_schedule() -> None:
    assert parse_schedule("0:1; 0-1:2 ;all:1", 3) == [Phase(1, (0,), 1), Phase(2, (0, 1), 2), Phase(3, (0, 1, 2), 1)]
    assert parse_schedule("1,0:1", 2) == [Phase(1, (0, 1), 1)]
    for bad, msg in [("0", "BUCKETS:EPOCHS"), ("0:x", "not an integer"), ("5:1", "within 0..1"), ("0:0", ">= 1"),
                     ("a:1", "bad bucket"), ("", "empty")]:
        with pytest.raises(ScheduleError, match=msg):
            parse_schedule(bad, 2)


def test_epoch_orders_follow_buckets_and_are_reproducible() -> None:
    buckets = [0, 1, 1, 0, 2, 1, 0, 2, 0, 1] * 5
    phases = default_schedule(3, 5)
    seen_per_phase = []
    for phase in phases:
        orders = epoch_orders(buckets, phase, seed=7)
        assert len(orders) == phase.epochs
        for order in orders:
            assert {buckets[i] for i in order} == set(phase.buckets)
            assert sorted(order) == [i for i, b in enumerate(buckets) if b in phase.buckets]  # each once per epoch
        seen_per_phase.append(orders)
        assert orders == epoch_orders(buckets, phase, seed=7)
    assert seen_per_phase[0][0] != epoch_orders(buckets, phases[0], seed=8)[0]  # the seed shuffles
    last = seen_per_phase[-1]
    assert last[0] != last[1]  # reshuffled every epoch
    with pytest.raises(ScheduleError, match="no training samples"):
        epoch_orders([1, 1], Phase(1, (0,), 1), 0)


def test_rebucket_quantiles() -> None:
    dif = {f"d{i}": i / 10 for i in range(10)}
    b = rebucket(dif, sorted(dif), 2)
    assert [b[f"d{i}"] for i in range(10)] == [0] * 5 + [1] * 5
    b3 = rebucket(dif, [f"d{i}" for i in range(6)], 3)  # edges from the train dialogues only
    assert b3["d0"] == 0 and b3["d9"] == 2


def test_weighted_f1_and_accuracy() -> None:
    gold = ["joy", "joy", "joy", "anger", "anger", "neutral"]
    pred = ["joy", "joy", "anger", "anger", "neutral", "neutral"]
    m = classification_metrics(gold, pred, ["neutral", "anger", "joy", "fear"])
    # joy: p=1 r=2/3 f=0.8 (3); anger: p=1/2 r=1/2 f=0.5 (2); neutral: p=1/2 r=1 f=2/3 (1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + (2 / 3) * 1) / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["per_label"]["fear"]["support"] == 0
    sk = pytest.importorskip("sklearn.metrics")
    assert m["weighted_f1"] == pytest.approx(sk.f1_score(gold, pred, average="weighted"))
    with pytest.raises(ValueError):
        classification_metrics(["a"], [])
