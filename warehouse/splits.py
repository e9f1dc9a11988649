"""Deterministic, stratified, stable train/validation/test assignment, grouped by dialogue.

* grouped: a dialogue's utterances all land in its split; dialogues whose normalised text is identical share one
  split key, so a duplicate can never straddle two splits;
* stratified: new dialogues, taken stratum by stratum (domain x model pair), go to the split furthest below its
  target share within the stratum plus overall, so every stratum and the release follow the fractions as closely
  as their sizes allow;
* stable: assignments are stored (table ``splits``); a dialogue keeps its split in every later version, and adding
  dialogues only assigns the new ones;
* deterministic: new dialogues are taken in the order of a seeded hash of their group key.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

import pyarrow as pa

SPLITS = ("train", "validation", "test")

SPLIT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # dialogue id
        pa.field("split", pa.string(), nullable=False),
        pa.field("stratum", pa.string(), nullable=False),
        pa.field("group_key", pa.string(), nullable=False),
    ]
)


def _order_key(seed: int, group_key: str) -> str:
    return hashlib.sha256(f"{seed}:{group_key}".encode()).hexdigest()


def assign_splits(
    new: Iterable[tuple[str, str, str]],
    existing: Iterable[tuple[str, str, str, str]],
    fractions: dict[str, float],
    seed: int = 0,
) -> list[dict]:
    """Assign splits to ``new`` dialogues given as (dialogue_id, stratum, group_key).

    ``existing`` holds earlier assignments as (dialogue_id, split, stratum, group_key); they are never changed and
    count towards each stratum's shares. Returns rows for the new dialogues only.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    overall = {s: 0 for s in SPLITS}
    by_group: dict[str, str] = {}
    for _did, split, stratum, group in existing:
        counts[stratum][split] += 1
        overall[split] += 1
        by_group.setdefault(group, split)
    pending = sorted(new, key=lambda r: (r[1], _order_key(seed, r[2]), r[0]))
    out = []
    for did, stratum, group in pending:
        split = by_group.get(group)
        if split is None:
            c = counts[stratum]
            n_s, n_all = sum(c.values()) + 1, sum(overall.values()) + 1

            def deficit(s: str) -> tuple[float, float]:
                f = fractions.get(s, 0.0)
                return (f * n_s - c[s]) + (f * n_all - overall[s]), f

            # largest deficit against the target share, within the stratum and overall (so that small strata
            # still fill validation and test across the release); ties broken by the larger fraction
            split = max(SPLITS, key=deficit)
            by_group[group] = split
        counts[stratum][split] += 1
        overall[split] += 1
        out.append({"id": did, "split": split, "stratum": stratum, "group_key": group})
    return out
