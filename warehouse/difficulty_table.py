"""PRC-Emo difficulty of every selected dialogue at once (publish step 3), the same numbers as
:func:`schemas.difficulty.difficulty` per dialogue.

DuckDB lists each turn with the previous label of the same speaker and the previous turn's speaker and label
(window functions); NumPy then scores the label changes (``k * s + b`` from a similarity matrix of the labels
present) and adds them up per dialogue **in turn order** (``np.add.at`` over rows sorted by dialogue and index
accumulates element by element), so every value is the float the per-dialogue loop computes, bit for bit: a
release's checksums do not depend on which of the two ran. At DeepDialogue's size this replaces a Python loop over
260k turns.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.taxonomy import Taxonomy

TURNS_SQL = """
    SELECT t.dialogue_id, t.speaker, t.label,
           lag(t.label) OVER (PARTITION BY t.dialogue_id, t.speaker ORDER BY t.idx) AS prev_same,
           lag(t.speaker) OVER (PARTITION BY t.dialogue_id ORDER BY t.idx) AS prev_speaker,
           lag(t.label) OVER (PARTITION BY t.dialogue_id ORDER BY t.idx) AS prev_label
    FROM effective_turns t JOIN sel ON sel.id = t.dialogue_id
    ORDER BY t.dialogue_id, t.idx
"""


def similarity_matrix(tax: Taxonomy, labels: list[str]) -> np.ndarray:
    """``tax.similarity`` of every pair of ``labels``, plus a last row and column of zeros (code -1: a missing
    label); a label outside the taxonomy scores 0 (the gate then names its row)."""
    out = np.zeros((len(labels) + 1, len(labels) + 1))
    for i, x in enumerate(labels):
        for j, y in enumerate(labels):
            if x in tax.emotion and y in tax.emotion:
                out[i, j] = tax.similarity(x, y)
    return out


def _codes(col: pa.ChunkedArray, labels: pa.Array) -> np.ndarray:
    """Index of every value in ``labels``; -1 for a null."""
    return pc.fill_null(pc.index_in(col, value_set=labels), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def dialogue_difficulty(con, tax: Taxonomy, k: float, b: float) -> tuple[pa.Array, np.ndarray]:
    """(dialogue ids in sorted order, their DIF) over ``effective_turns`` of the dialogues in ``sel``."""
    t = con.sql(TURNS_SQL).to_arrow_table()
    if not t.num_rows:
        return pa.array([], pa.string()), np.zeros(0)
    ids = t.column("dialogue_id").combine_chunks()
    enc = pc.dictionary_encode(ids)
    first = np.diff(enc.indices.to_numpy(zero_copy_only=False), prepend=-1) != 0  # rows are sorted by dialogue
    dlg = np.cumsum(first) - 1
    n_dlg = int(dlg[-1]) + 1
    labels = pc.unique(pa.concat_arrays([t.column(c).combine_chunks().cast(pa.string())
                                         for c in ("label", "prev_same", "prev_label")])).drop_null()
    sim = similarity_matrix(tax, labels.to_pylist())
    lab, same, prev = (_codes(t.column(c), labels) for c in ("label", "prev_same", "prev_label"))
    spk = t.column("speaker").to_numpy(zero_copy_only=False)
    prev_spk = t.column("prev_speaker").to_numpy(zero_copy_only=False)
    not_first = pc.is_valid(t.column("prev_speaker")).to_numpy(zero_copy_only=False)

    # the label changed since this speaker's previous turn / since the previous turn, by the other speaker (a
    # missing label, code -1, reads the zero row of ``sim``: as the loop's similarity of an unknown label)
    c_same = np.where((same >= 0) & (same != lab), k * sim[same, lab] + b, 0.0)
    changed = not_first & (prev_spk != spk) & (prev != lab)
    c_diff = np.where(changed, k * sim[prev, lab] + b, 0.0)
    wes_same, wes_diff = np.zeros(n_dlg), np.zeros(n_dlg)
    np.add.at(wes_same, dlg, c_same)  # in row order: each dialogue's sum runs in turn order, as the loop's does
    np.add.at(wes_diff, dlg, c_diff)
    n_u = np.bincount(dlg, minlength=n_dlg)
    spk_code = pc.dictionary_encode(t.column("speaker").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    pairs = np.unique(dlg * (int(spk_code.max()) + 1) + spk_code)
    n_sp = np.bincount(pairs // (int(spk_code.max()) + 1), minlength=n_dlg)
    values = (wes_same + wes_diff + n_sp) / (n_u + n_sp)
    return ids.filter(pa.array(first)), values


__all__ = ["dialogue_difficulty", "similarity_matrix"]
