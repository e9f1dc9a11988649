"""Resume: what the warehouse already holds for a run's scenarios (generated dialogues whose turns are complete and
consistent, LLM judgements), read once at the start of a shard so nothing finished is generated or judged again."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from flows.generate import Stored, dialogue_id
from schemas.records import Judgement, Scenario, text_hash
from warehouse.store import Warehouse


def load_stored(home: Path, scenarios: Sequence[Scenario]) -> tuple[dict[str, Stored], dict[str, Judgement]]:
    """Generated dialogues (complete, consistent turns) and LLM judgements already in the warehouse."""
    wh = Warehouse(home)
    if "dialogues" not in wh.tables():
        return {}, {}
    by_did = {dialogue_id(s): s for s in scenarios}
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": list(by_did)}))
        # filtered before the latest-row window: a shard's lookup costs a scan of the store, not a sort of it
        drows = con.sql(
            f"SELECT id, status, text_hash, n_turns FROM ({wh.latest_sql('dialogues', 'id IN (SELECT id FROM want)')})"
        ).to_arrow_table().to_pylist()
        texts: dict[str, list[tuple[int, str]]] = defaultdict(list)
        if "turns" in wh.tables():
            for r in con.sql(
                f"SELECT dialogue_id, idx, text FROM ({wh.latest_sql('turns', 'dialogue_id IN (SELECT id FROM want)')})"
            ).to_arrow_table().to_pylist():
                texts[r["dialogue_id"]].append((r["idx"], r["text"]))
        jrows = []
        if "judgements" in wh.tables():
            jrows = con.sql(
                f"SELECT * FROM ({wh.latest_sql('judgements', 'dialogue_id IN (SELECT id FROM want)')}) "
                "WHERE kind = 'llm'"
            ).to_arrow_table().to_pylist()
    finally:
        con.close()
    stored: dict[str, Stored] = {}
    for r in drows:
        s = by_did[r["id"]]
        if r["status"] not in ("generated", "accepted", "rejected", "uncertain", "failed") or not r["text_hash"]:
            continue
        turns = sorted(texts.get(r["id"], []))
        tx = [t for _, t in turns]
        if [i for i, _ in turns] != list(range(s.n_turns)) or text_hash(tx) != r["text_hash"]:
            continue  # incomplete or inconsistent on disk: generate again (from the cache)
        stored[s.id] = Stored(texts=tx, status=r["status"])
    fields = set(Judgement.model_fields)
    judgements = {r["id"]: Judgement.model_validate({k: v for k, v in r.items() if k in fields}) for r in jrows}
    return stored, judgements


__all__ = ["load_stored"]
