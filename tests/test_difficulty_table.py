"""The vectorised difficulty of publish (warehouse.difficulty_table) gives the per-dialogue loop's numbers
(schemas.difficulty.difficulty) bit for bit: two-party and multi-party speaker orders, repeated labels, labels
outside the taxonomy, one-turn dialogues, k and b other than the defaults."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
import pytest

from schemas.difficulty import difficulty
from schemas.taxonomy import load_taxonomy
from warehouse.difficulty_table import dialogue_difficulty


def _dialogues(tax, n: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    labels = list(tax.emotion_names[:6]) + ["not-an-emotion"]
    out = {}
    for i in range(n):
        turns = rng.choice([1, 2, 3, 7, 12, 30])
        if i % 3 == 0:  # multi-party order: a speaker may talk twice in a row
            speakers = [rng.choice("AB") for _ in range(turns)]
        else:
            speakers = ["AB"[j % 2] for j in range(turns)]
        sticky = [rng.choice(labels)]
        for _ in range(turns - 1):
            sticky.append(sticky[-1] if rng.random() < 0.4 else rng.choice(labels))
        out[f"d{rng.randrange(10**9):09d}-{i}"] = (speakers, sticky)
    return out


@pytest.mark.parametrize("k,b", [(1.0, 0.4), (2.5, 0.0), (0.3, 1.7)])
def test_vectorised_difficulty_equals_the_loop_bit_for_bit(k, b):
    tax = load_taxonomy("deepdialogue")
    dlgs = _dialogues(tax, 400, seed=int(k * 10 + b * 100))
    rows = [{"dialogue_id": d, "idx": j, "speaker": s, "label": lab}
            for d, (spk, labs) in dlgs.items() for j, (s, lab) in enumerate(zip(spk, labs))]
    random.Random(1).shuffle(rows)  # the store's row order is arbitrary
    con = duckdb.connect()
    con.register("effective_turns", pa.Table.from_pylist(rows))
    keep = sorted(dlgs)[:-5]  # dialogues outside the selection are left out
    con.register("sel", pa.table({"id": keep}))

    def sim(x, y):
        return tax.similarity(x, y) if x in tax.emotion and y in tax.emotion else 0.0

    ids, values = dialogue_difficulty(con, tax, k, b)
    assert ids.to_pylist() == keep
    expected = [difficulty(*dlgs[d], sim, k, b) for d in keep]
    assert values.tolist() == expected  # exact floats: a release's checksums must not depend on the path
    assert len(set(expected)) > 20  # the dialogues really differ


def test_empty_selection():
    con = duckdb.connect()
    con.register("effective_turns", pa.table({"dialogue_id": ["x"], "idx": [0], "speaker": ["A"], "label": ["joy"]}))
    con.register("sel", pa.table({"id": pa.array([], pa.string())}))
    ids, values = dialogue_difficulty(con, load_taxonomy("deepdialogue"), 1.0, 0.4)
    assert len(ids) == 0 and values.size == 0
