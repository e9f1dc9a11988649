"""PRC-Emo difficulty of every selected dialogue at once (publish step 3), the same numbers as
:func:`schemas.difficulty.difficulty` per dialogue.

DuckDB lists the turns in order; NumPy finds each turn's previous label of the same speaker and the previous
turn's speaker and label (shifts within a dialogue, and within a dialogue's speaker after a stable sort), scores the
label changes (``k * s + b`` from a similarity matrix of the labels present) and adds them up per dialogue **in turn order** (``np.add.at`` over rows sorted by dialogue and index
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
    SELECT t.dialogue_id, t.speaker, t.label
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


def dictionary_codes(col: pa.Array | pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """(distinct values, the index of every value among them; -1 for a null)."""
    enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    return enc.dictionary.to_pylist(), pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _previous(group_sorted_rows: np.ndarray, same_group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For rows listed group by group (``group_sorted_rows``, in turn order within a group; ``same_group[k]``: row
    k of that listing continues the group of row k-1), the value of the previous row of its group; -1 if none."""
    out = np.full(values.size, -1, dtype=np.int64)
    rows = group_sorted_rows
    out[rows[1:][same_group[1:]]] = values[rows[:-1][same_group[1:]]]
    return out


def dialogue_difficulty(con, tax: Taxonomy, k: float, b: float) -> tuple[pa.Array, np.ndarray]:
    """(dialogue ids in sorted order, their DIF) over ``effective_turns`` of the dialogues in ``sel``."""
    t = con.sql(TURNS_SQL).to_arrow_table()
    if not t.num_rows:
        return pa.array([], pa.string()), np.zeros(0)
    ids = t.column("dialogue_id").combine_chunks()
    _, id_code = dictionary_codes(ids)
    first = np.diff(id_code, prepend=-1) != 0  # rows are sorted by dialogue, then index
    dlg = np.cumsum(first) - 1
    n, n_dlg = t.num_rows, int(dlg[-1]) + 1
    labels, lab = dictionary_codes(t.column("label"))
    _, spk = dictionary_codes(t.column("speaker"))
    sim = similarity_matrix(tax, [str(x) for x in labels])
    rows = np.arange(n)
    prev = _previous(rows, ~first, lab)  # the previous turn's label
    prev_spk = _previous(rows, ~first, spk)
    by_speaker = np.lexsort((rows, spk, dlg))  # each dialogue's turns of one speaker, in turn order
    same_speaker = np.zeros(n, dtype=bool)
    same_speaker[1:] = (dlg[by_speaker][1:] == dlg[by_speaker][:-1]) & (spk[by_speaker][1:] == spk[by_speaker][:-1])
    same = _previous(by_speaker, same_speaker, lab)  # the label of this speaker's previous turn

    # the label changed since this speaker's previous turn / since the previous turn, by the other speaker (a
    # missing label, code -1, reads the zero row of ``sim``: as the loop's similarity of an unknown label)
    c_same = np.where((same >= 0) & (same != lab), k * sim[same, lab] + b, 0.0)
    c_diff = np.where(~first & (prev_spk != spk) & (prev != lab), k * sim[prev, lab] + b, 0.0)
    wes_same, wes_diff = np.zeros(n_dlg), np.zeros(n_dlg)
    np.add.at(wes_same, dlg, c_same)  # in row order: each dialogue's sum runs in turn order, as the loop's does
    np.add.at(wes_diff, dlg, c_diff)
    n_u = np.bincount(dlg, minlength=n_dlg)
    speakers = np.unique(dlg * (int(spk.max()) + 2) + spk + 1)
    n_sp = np.bincount(speakers // (int(spk.max()) + 2), minlength=n_dlg)
    values = (wes_same + wes_diff + n_sp) / (n_u + n_sp)
    return ids.filter(pa.array(first)), values


__all__ = ["dialogue_difficulty", "dictionary_codes", "similarity_matrix"]
