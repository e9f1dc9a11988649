"""PRC-Emo's easy-to-hard curriculum: difficulty buckets and the phase schedule.

Buckets come from the release's per-dialogue difficulty (column ``bucket``; 0 = easiest, the release's
``publish.difficulty.buckets``, default 2). Asking for another number of buckets re-buckets the train dialogues by
quantiles of their ``difficulty`` (the same rule as ``schemas.difficulty``).

The default schedule with B buckets and E epochs (PRC-Emo: B = 2, E = 3): phase i (i = 0..B-1) trains one epoch on
buckets 0..i, then one last phase trains the remaining E - B epochs on everything. Every phase restarts the
optimiser and the learning-rate schedule. A schedule can be written out, e.g. ``"0:1;0,1:1;all:2"``
(``BUCKETS:EPOCHS`` per phase, ``;`` between phases; buckets as ``0,1`` or ``0-2`` or ``all``).

Within a phase the samples of each epoch are shuffled with a seed derived from (seed, phase, epoch): the order is
reproducible, and a phase only ever sees the buckets it names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from schemas.difficulty import bucket_edges, bucket_of


class ScheduleError(ValueError):
    pass


@dataclass(frozen=True)
class Phase:
    index: int  # 1-based
    buckets: tuple[int, ...]
    epochs: int

    def describe(self) -> str:
        return f"phase {self.index}: buckets {list(self.buckets)}, {self.epochs} epoch(s)"


def default_schedule(n_buckets: int, epochs: int = 3) -> list[Phase]:
    if n_buckets < 1:
        raise ScheduleError("the curriculum needs at least one bucket")
    if epochs < n_buckets:
        raise ScheduleError(f"{epochs} epoch(s) cannot cover {n_buckets} buckets (one epoch per bucket step); "
                            f"use --epochs >= {n_buckets} or fewer buckets")
    phases = [Phase(i + 1, tuple(range(i + 1)), 1) for i in range(n_buckets)]
    if epochs > n_buckets:
        phases.append(Phase(n_buckets + 1, tuple(range(n_buckets)), epochs - n_buckets))
    return phases


def parse_schedule(text: str, n_buckets: int) -> list[Phase]:
    phases = []
    for i, part in enumerate([p.strip() for p in text.split(";") if p.strip()], 1):
        if ":" not in part:
            raise ScheduleError(f"schedule phase {i} {part!r}: expected BUCKETS:EPOCHS, e.g. '0:1' or 'all:2'")
        spec, ep = part.rsplit(":", 1)
        try:
            epochs = int(ep)
        except ValueError:
            raise ScheduleError(f"schedule phase {i} {part!r}: epochs {ep!r} is not an integer") from None
        if epochs < 1:
            raise ScheduleError(f"schedule phase {i} {part!r}: epochs must be >= 1")
        buckets: set[int] = set()
        spec = spec.strip()
        if spec == "all":
            buckets = set(range(n_buckets))
        else:
            for tok in spec.split(","):
                tok = tok.strip()
                try:
                    if "-" in tok:
                        lo, hi = (int(x) for x in tok.split("-", 1))
                        buckets |= set(range(lo, hi + 1))
                    else:
                        buckets.add(int(tok))
                except ValueError:
                    raise ScheduleError(f"schedule phase {i} {part!r}: bad bucket {tok!r}") from None
        bad = sorted(b for b in buckets if not 0 <= b < n_buckets)
        if bad or not buckets:
            raise ScheduleError(f"schedule phase {i} {part!r}: buckets must be within 0..{n_buckets - 1}")
        phases.append(Phase(i, tuple(sorted(buckets)), epochs))
    if not phases:
        raise ScheduleError("empty schedule")
    return phases


def rebucket(difficulty_by_dialogue: dict[str, float], train_dialogues: Sequence[str], n_buckets: int) -> dict[str, int]:
    """Quantile buckets over the train dialogues' difficulty, applied to every dialogue."""
    edges = bucket_edges([difficulty_by_dialogue[d] for d in train_dialogues], n_buckets)
    return {d: bucket_of(v, edges) for d, v in difficulty_by_dialogue.items()}


def epoch_orders(bucket_of_sample: Sequence[int], phase: Phase, seed: int) -> list[list[int]]:
    """Sample indices to train on in each epoch of ``phase``: only its buckets, shuffled per epoch."""
    chosen = [i for i, b in enumerate(bucket_of_sample) if b in phase.buckets]
    if not chosen:
        raise ScheduleError(f"{phase.describe()} has no training samples (buckets present: "
                            f"{sorted(set(bucket_of_sample))})")
    orders = []
    for epoch in range(phase.epochs):
        order = list(chosen)
        random.Random(f"{seed}:{phase.index}:{epoch}").shuffle(order)
        orders.append(order)
    return orders
