"""Near-duplicate detection in bounded memory (flows.neardup) and the build's streaming pass over the warehouse
(flows.dedup): same answers as exact Jaccard over string shingles, memory per dialogue bounded."""

from __future__ import annotations

import random
import tracemalloc

from flows.checks import jaccard
from flows.dedup import apply_near_duplicates
from flows.generate import dialogue_id, dialogue_record, turn_records
from flows.judge import CHECKS_JUDGE_ID, judgement_id
from flows.neardup import NearDupIndex, near_duplicates, shingles
from schemas.config.generation import JudgingConfig
from schemas.records import Judgement, Scenario
from schemas.text import text_hash
from warehouse.store import Warehouse

WORDS = ("sun rain river mountain coffee train music garden letter window storm harbour bread lamp forest "
         "market winter candle bridge city island paper clock shadow voice dream stone fire ocean field").split()


def _dialogue(rng: random.Random, n_turns: int = 5) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "." for _ in range(n_turns)]


def _corpus(n: int, seed: int = 3) -> list[tuple[str, list[str]]]:
    """Random dialogues with planted copies: exact ones and ones with one turn changed."""
    rng = random.Random(seed)
    out: list[tuple[str, list[str]]] = []
    for i in range(n):
        if out and rng.random() < 0.15:
            _, src = out[rng.randrange(len(out))]
            texts = list(src)
            if rng.random() < 0.5:
                texts[rng.randrange(len(texts))] = _dialogue(rng, 1)[0]
            out.append((f"d{i:05d}", texts))
        else:
            out.append((f"d{i:05d}", _dialogue(rng)))
    return out


def _exact(corpus, threshold=0.6):
    """Reference: exact string-shingle Jaccard against every earlier non-duplicate (no LSH)."""
    refs, dups = [], {}
    for did, texts in corpus:
        sh = shingles(texts)
        best = None
        for rid, rsh in refs:
            j = jaccard(sh, rsh)
            if j >= threshold and (best is None or j > best[1]):
                best = (rid, round(j, 3))
        if best is not None:
            dups[did] = best
        elif sh:
            refs.append((did, sh))
    return dups


def test_index_matches_exact_jaccard_on_planted_copies():
    corpus = _corpus(400)
    found = near_duplicates(corpus)
    exact = _exact(corpus)
    assert len(exact) > 25  # the corpus has copies to find
    # every hit is a true near-duplicate with the exact figure, and LSH misses none of the clear ones
    for did, (of, j) in found.items():
        assert did in exact and abs(exact[did][1] - j) <= 0.01, (did, found[did], exact.get(did))
    clear = {d for d, (_, j) in exact.items() if j >= 0.8}
    assert clear <= set(found)
    assert len(found) >= 0.95 * len(exact)


def test_index_memory_per_dialogue_is_small():
    corpus = _corpus(1000, seed=9)
    tracemalloc.start()
    try:
        idx = NearDupIndex()
        base = tracemalloc.get_traced_memory()[0]
        for did, texts in corpus:
            idx.add(did, texts)
        per = (tracemalloc.get_traced_memory()[0] - base) / len(corpus)
    finally:
        tracemalloc.stop()
    # what a Python set of shingle strings per dialogue cost (the old pass) for the same corpus, for scale
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sets = [shingles(t) for _, t in corpus]
        per_sets = (tracemalloc.get_traced_memory()[0] - base) / len(corpus)
    finally:
        tracemalloc.stop()
    assert sets and per < 2500 and per < per_sets / 2, (per, per_sets)


def _scenario(i: int) -> Scenario:
    emotions = ["Happy", "Sad", "Happy", "Sad", "Happy"]
    return Scenario(id=Scenario.make_id("Travel", "m1", "m2", emotions, 0, i, "t", "v", 25), domain="Travel",
                    model_a="m1", model_b="m2", n_turns=5, emotions=emotions, seed=0, index=i, taxonomy="t")


def _store(wh: Warehouse, sc: Scenario, texts: list[str], run_id: str, status: str, **kw) -> None:
    did = dialogue_id(sc)
    wh.upsert(turn_records(did, sc, texts))
    wh.upsert([dialogue_record(sc, run_id, status, texts=texts, **kw)])


def test_build_pass_streams_the_warehouse_and_rejects_later_copies(tmp_path):
    rng = random.Random(1)
    wh = Warehouse(tmp_path)
    old = _scenario(1000)  # an accepted dialogue of an earlier run (not in this run's scenarios)
    base = _dialogue(rng)
    _store(wh, old, base, "run-old", "accepted", decided_by="judge")
    run = [_scenario(i) for i in range(40)]
    texts = {sc.id: _dialogue(rng) for sc in run}
    texts[run[5].id] = list(base)  # copies the earlier run's accepted dialogue
    texts[run[20].id] = list(texts[run[10].id])  # copies an earlier dialogue of this run
    texts[run[30].id] = list(texts[run[10].id])
    texts[run[30].id][0] = "Something else entirely was said here."
    texts[run[25].id] = list(texts[run[12].id])  # a copy of a dialogue the checks rejected: not a reference
    for sc in reversed(run):  # written out of grid order: the pass orders by grid position itself
        status = "rejected" if sc.index == 12 else "accepted"
        _store(wh, sc, texts[sc.id], "run-new", status, decided_by="checks" if sc.index == 12 else "judge",
               reason="checks: truncated" if sc.index == 12 else None)
    th = text_hash(texts[run[20].id])
    wh.upsert([Judgement(id=judgement_id(dialogue_id(run[20]), CHECKS_JUDGE_ID, th), dialogue_id=dialogue_id(run[20]),
                         judge_id=CHECKS_JUDGE_ID, kind="checks", verdict="accept", failures=["x:1"])])
    dups = apply_near_duplicates(tmp_path, run, JudgingConfig())
    d = {k: dialogue_id(v) for k, v in ((5, run[5]), (10, run[10]), (20, run[20]), (30, run[30]))}
    assert dups[d[5]] == dialogue_id(old) and dups[d[20]] == d[10] and dups[d[30]] == d[10]
    assert dialogue_id(run[25]) not in dups and d[10] not in dups and len(dups) == 3
    rows = {r["id"]: r for r in wh.query("SELECT id, status, status_reason, run_id FROM dialogues").to_pylist()}
    assert rows[d[20]]["status"] == "rejected" and d[10] in rows[d[20]]["status_reason"]
    assert rows[d[20]]["run_id"] == "run-new" and rows[d[10]]["status"] == "accepted"
    chk = wh.query(f"SELECT failures FROM judgements WHERE id = '{judgement_id(d[20], CHECKS_JUDGE_ID, th)}'")
    failures = chk.to_pylist()[0]["failures"]
    assert "x:1" in failures and any(f.startswith("near_duplicate:-:" + d[10]) for f in failures)
    # a second pass finds the same (the rejected copies stay candidates) and changes nothing
    assert apply_near_duplicates(tmp_path, run, JudgingConfig()) == dups
