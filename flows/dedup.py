"""The near-duplicate stage of a build: after every shard, the run's dialogues that nearly repeat an earlier one
(MinHash + LSH, verified by Jaccard; :class:`flows.neardup.NearDupIndex`, texts streamed from DuckDB in batches)
are rejected by the ``near_duplicate`` gate, with the id of the original in the checks judgement."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa

from schemas.config.generation import JudgingConfig
from flows.checks import NEAR_DUPLICATE
from flows.generate import dialogue_id, dialogue_record
from flows.judge import CHECKS_JUDGE_ID, judgement_id, near_duplicate_judgement
from flows.neardup import NearDupIndex
from schemas.records import Judgement, Scenario
from warehouse.store import Warehouse

DECIDED = ("accepted", "rejected", "uncertain")


_BATCH = 2048  # rows fetched from DuckDB at a time


def _ordered_rows(con, batch: int = _BATCH) -> Iterator[dict]:
    """The dialogues the pass looks at, in the order that decides which copy is kept (accepted dialogues of other
    runs by id, then this run's candidates by grid position), fetched in batches."""
    reader = con.sql(
        f"""SELECT d.id, (w.id IS NOT NULL) AS mine, list(t.text ORDER BY t.idx) AS texts
            FROM dialogues d JOIN turns t ON t.dialogue_id = d.id LEFT JOIN want w ON w.id = d.id
            WHERE d.source = 'generated' AND (
                  (w.id IS NULL AND d.status = 'accepted')
               OR (w.id IS NOT NULL AND d.status IN {DECIDED!r}
                   AND NOT (d.status = 'rejected' AND coalesce(d.decided_by, '') = 'checks'
                            AND NOT contains(coalesce(d.status_reason, ''), '{NEAR_DUPLICATE}'))))
            GROUP BY d.id, w.id, w.pos
            ORDER BY mine, CASE WHEN w.id IS NULL THEN d.id END, w.pos"""
    ).to_arrow_reader(batch)
    for rb in reader:
        yield from rb.to_pylist()


def find_near_duplicates(home: Path, scenarios: Sequence[Scenario], jud: JudgingConfig) -> dict[str, tuple[str, float]]:
    """{dialogue id of this run: (id of the original, jaccard)}, streaming the texts through a
    :class:`flows.neardup.NearDupIndex` (memory: a few hundred bytes per reference dialogue, no texts kept)."""
    wh = Warehouse(home)
    if "turns" not in wh.tables():
        return {}
    index = NearDupIndex(threshold=jud.near_duplicate_jaccard)
    dups: dict[str, tuple[str, float]] = {}
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": [dialogue_id(s) for s in scenarios],
                                       "pos": [s.index for s in scenarios]}))
        for r in _ordered_rows(con):
            hit = index.add(r["id"], r["texts"])
            if hit is not None and r["mine"]:
                dups[r["id"]] = hit
    finally:
        con.close()
    return dups


def apply_near_duplicates(home: Path, scenarios: Sequence[Scenario], jud: JudgingConfig) -> dict[str, str]:
    """Reject (gate ``near_duplicate``) every dialogue of the run that nearly repeats an earlier one: accepted
    dialogues of other runs first, then this run's in grid order. Returns {dialogue id: id of the original}."""
    dups = find_near_duplicates(home, scenarios, jud)
    if not dups:
        return {}
    wh = Warehouse(home)
    by_did = {dialogue_id(s): s for s in scenarios if dialogue_id(s) in dups}
    con = wh.connect()
    try:
        con.register("dup", pa.table({"id": list(dups)}))
        rows = {r["id"]: r for r in con.sql(
            """SELECT d.id, d.run_id, d.text_hash, list(t.text ORDER BY t.idx) AS texts
               FROM dialogues d JOIN turns t ON t.dialogue_id = d.id WHERE d.id IN (SELECT id FROM dup)
               GROUP BY ALL""").to_arrow_table().to_pylist()}
        ids = [judgement_id(d, CHECKS_JUDGE_ID, rows[d]["text_hash"]) for d in dups]
        con.register("jid", pa.table({"id": ids}))
        fields = set(Judgement.model_fields)
        stored_checks = {r["dialogue_id"]: Judgement.model_validate({k: v for k, v in r.items() if k in fields})
                         for r in con.sql("SELECT * FROM judgements WHERE id IN (SELECT id FROM jid)")
                         .to_arrow_table().to_pylist()}
    finally:
        con.close()
    judgements, dialogues = [], []
    for did, (of_id, jac) in dups.items():
        row = rows[did]
        base = stored_checks.get(did) or Judgement(
            id=judgement_id(did, CHECKS_JUDGE_ID, row["text_hash"]), dialogue_id=did, judge_id=CHECKS_JUDGE_ID,
            kind="checks", verdict="accept")
        judgements.append(near_duplicate_judgement(base, of_id, jac))
        dialogues.append(dialogue_record(by_did[did], row["run_id"], "rejected", texts=row["texts"],
                                         reason=f"checks: near_duplicate of {of_id} (jaccard {jac})", decided_by="checks"))
    wh.upsert(judgements)
    wh.upsert(dialogues)
    return {d: of for d, (of, _) in dups.items()}


__all__ = ["DECIDED", "apply_near_duplicates", "find_near_duplicates"]
