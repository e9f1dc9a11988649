"""The near-duplicate stage of a build: after every shard, the run's dialogues that nearly repeat an earlier one
(MinHash + LSH, verified by exact Jaccard; :func:`flows.checks.near_duplicates`) are rejected by the
``near_duplicate`` gate, with the id of the original in the checks judgement."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa

from schemas.config.generation import JudgingConfig
from flows.checks import NEAR_DUPLICATE, near_duplicates
from flows.generate import dialogue_id, dialogue_record
from flows.judge import CHECKS_JUDGE_ID, judgement_id, near_duplicate_judgement
from schemas.records import Judgement, Scenario
from warehouse.store import Warehouse

DECIDED = ("accepted", "rejected", "uncertain")


def apply_near_duplicates(home: Path, scenarios: Sequence[Scenario], jud: JudgingConfig) -> dict[str, str]:
    """Reject (gate ``near_duplicate``) every dialogue of the run that nearly repeats an earlier one: accepted
    dialogues of other runs first, then this run's in grid order. Returns {dialogue id: id of the original}."""
    wh = Warehouse(home)
    if "turns" not in wh.tables():
        return {}
    order = {dialogue_id(s): s for s in scenarios}
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": list(order)}))
        rows = con.sql(
            """SELECT d.id, d.run_id, d.status, d.decided_by, d.status_reason, d.text_hash, (d.id IN (SELECT id FROM want)) AS mine,
                      list(t.text ORDER BY t.idx) AS texts
               FROM dialogues d JOIN turns t ON t.dialogue_id = d.id
               WHERE d.source = 'generated' AND (d.id IN (SELECT id FROM want) OR d.status = 'accepted')
               GROUP BY ALL"""
        ).to_arrow_table().to_pylist()
    finally:
        con.close()
    candidates = []
    others = []
    for r in rows:
        if not r["mine"]:
            others.append((r["id"], r["texts"]))
        elif r["status"] in DECIDED and not (r["status"] == "rejected" and r["decided_by"] == "checks"
                                             and NEAR_DUPLICATE not in (r["status_reason"] or "")):
            candidates.append(r)
    candidates.sort(key=lambda r: order[r["id"]].index)
    seq = sorted(others) + [(r["id"], r["texts"]) for r in candidates]
    dups = near_duplicates(seq, threshold=jud.near_duplicate_jaccard)
    mine = {r["id"]: r for r in candidates}
    dups = {k: v for k, v in dups.items() if k in mine}
    if not dups:
        return {}
    stored_checks = {}
    con = wh.connect()
    try:
        ids = [judgement_id(d, CHECKS_JUDGE_ID, mine[d]["text_hash"]) for d in dups]
        con.register("jid", pa.table({"id": ids}))
        fields = set(Judgement.model_fields)
        for r in con.sql("SELECT * FROM judgements WHERE id IN (SELECT id FROM jid)").to_arrow_table().to_pylist():
            stored_checks[r["dialogue_id"]] = Judgement.model_validate({k: v for k, v in r.items() if k in fields})
    finally:
        con.close()
    judgements, dialogues = [], []
    for did, (of_id, jac) in dups.items():
        base = stored_checks.get(did) or Judgement(
            id=judgement_id(did, CHECKS_JUDGE_ID, mine[did]["text_hash"]), dialogue_id=did, judge_id=CHECKS_JUDGE_ID,
            kind="checks", verdict="accept")
        judgements.append(near_duplicate_judgement(base, of_id, jac))
        dialogues.append(dialogue_record(order[did], mine[did]["run_id"], "rejected", texts=mine[did]["texts"],
                                         reason=f"checks: near_duplicate of {of_id} (jaccard {jac})", decided_by="checks"))
    wh.upsert(judgements)
    wh.upsert(dialogues)
    return {d: of for d, (of, _) in dups.items()}


__all__ = ["DECIDED", "apply_near_duplicates"]
