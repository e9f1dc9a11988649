"""A release carries the values the warehouse decided with, never a recomputation: each dialogue's judge_score is
the deciding score stored with it (flows.judge.decide), and its text_hash is the warehouse's Dialogue.text_hash."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.judge import decide
from flows.synthetic import synthetic_dialogues
from schemas.config import JudgingConfig, load_config
from schemas.records import Judgement
from schemas.taxonomy import load_taxonomy
from warehouse.publish import publish_release
from warehouse.store import Warehouse

CFG = load_config(publish={"sources": ["synthetic"], "report": False})


def _release_dialogues(path: str) -> dict[str, dict]:
    files = sorted((Path(path) / "data" / "dialogues").glob("*.parquet"))
    rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    return {r["dialogue_id"]: r for r in rows}


def test_release_judge_score_is_the_stored_decision_score(home):
    wh = Warehouse(home)
    tax = load_taxonomy()
    dialogues, turns, judgements, expected = [], [], [], {}
    for i, (dlg, ts) in enumerate(synthetic_dialogues(tax, 24, seed=9)):
        if dlg.status != "accepted":
            continue
        n = len(ts)
        checks = Judgement(id=f"jc{i}", dialogue_id=dlg.id, judge_id="checks", kind="checks", verdict="accept")
        # two judges that disagree a little and score emotion fidelity per turn: a mean of three rubric columns
        # (what publish used to recompute in SQL) differs from the deciding score
        llm = [Judgement(id=f"j{i}{k}", dialogue_id=dlg.id, judge_id=f"llm:j{k}", kind="llm", coherence=3 + k,
                         naturalness=4, domain_fit=5 - k, safety=5, emotion_fidelity=[(i + t + k) % 5 + 1 for t in range(n)],
                         verdict="accept") for k in range(2)]
        decision = decide(checks, llm, JudgingConfig(), advisory=True)
        dialogues.append(dlg.model_copy(update={"judge_score": decision.score}))
        turns += ts
        judgements += [checks, *llm]
        expected[dlg.id] = decision.score
    assert len(expected) >= 10
    wh.upsert(dialogues)
    wh.upsert(turns)
    wh.upsert(judgements)
    out = publish_release(home, CFG)
    released = _release_dialogues(out["path"])
    assert set(released) == set(expected)
    for did, score in expected.items():
        assert released[did]["judge_score"] == pytest.approx(score, abs=1e-12), did
    recomputed = {j.dialogue_id: [] for j in judgements}
    for j in judgements:
        if j.kind == "llm":
            recomputed[j.dialogue_id].append((j.coherence + j.naturalness + j.domain_fit) / 3)
    assert any(abs(sum(v) / len(v) - expected[d]) > 1e-6 for d, v in recomputed.items())  # the old SQL differed
    stored = {d.id: d.text_hash for d in dialogues}
    assert {d: r["text_hash"] for d, r in released.items()} == stored and all(stored.values())
