"""The merge of human reviews into what a release takes.

The merge itself is not a copy: ``warehouse.effective`` defines views that apply the reviews on every read (so a
re-pulled or edited review is reflected by the next ``emoforge publish`` without rewriting dialogues or turns).
Policy (documented in full in ``warehouse/effective.py``): the human majority verdict overrides the judges'
status (``decided_by = 'human'``; a tie makes the dialogue ``uncertain``); a corrected turn emotion becomes the
turn's ``label`` with ``label_source = 'human'`` while ``intended_emotion`` is kept.

This module reports what the merge changes, for ``emoforge review status`` and for tests.
"""

from __future__ import annotations

from pathlib import Path

from warehouse.effective import effective_views
from warehouse.store import Warehouse


def merge_changes(home: Path, limit: int = 1000) -> dict:
    """Dialogues whose status the reviews change and turns whose label they correct."""
    con = Warehouse(home).connect()
    try:
        effective_views(con)
        status = con.sql(
            "SELECT d.id AS dialogue_id, d.status AS judge_status, e.status AS status, e.status_reason AS reason "
            "FROM dialogues d JOIN effective_dialogues e USING (id) WHERE e.decided_by = 'human' "
            "AND (d.decided_by IS DISTINCT FROM 'human' OR d.status <> e.status) ORDER BY d.id LIMIT $n",
            params={"n": limit}).to_arrow_table().to_pylist()
        labels = con.sql(
            "SELECT t.dialogue_id, t.idx, t.label AS old_label, e.label AS label, e.intended_emotion "
            "FROM turns t JOIN effective_turns e USING (id) WHERE e.label <> t.label ORDER BY 1, 2 LIMIT $n",
            params={"n": limit}).to_arrow_table().to_pylist()
        counts = dict(con.sql("SELECT status, count(*) FROM effective_dialogues GROUP BY 1").fetchall())
        n_status = con.execute("SELECT count(*) FROM effective_dialogues WHERE decided_by = 'human'").fetchone()[0]
        n_labels = con.execute("SELECT count(*) FROM effective_turns WHERE label_source = 'human'").fetchone()[0]
    finally:
        con.close()
    return {"decided_by_human": int(n_status), "labels_from_human": int(n_labels), "status_counts": counts,
            "status_changes": status, "label_changes": labels}
