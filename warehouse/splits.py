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
    sized = {k: sum(c.values()) for k, c in counts.items()}  # dialogues per stratum so far
    n_all = sum(overall.values())
    targets = [(s, fractions.get(s, 0.0)) for s in SPLITS]
    pending = sorted(new, key=lambda r: (r[1], _order_key(seed, r[2]), r[0]))
    out = []
    for did, stratum, group in pending:
        split = by_group.get(group)
        c = counts[stratum]
        n_s = sized.get(stratum, 0)
        if split is None:
            # largest deficit against the target share, within the stratum and overall (so that small strata
            # still fill validation and test across the release); ties broken by the larger fraction, then by
            # the order of SPLITS
            best = None
            for s, f in targets:
                key = ((f * (n_s + 1) - c[s]) + (f * (n_all + 1) - overall[s]), f)
                if best is None or key > best:
                    best, split = key, s
            by_group[group] = split
        c[split] += 1
        overall[split] += 1
        sized[stratum] = n_s + 1
        n_all += 1
        out.append({"id": did, "split": split, "stratum": stratum, "group_key": group})
    return out
