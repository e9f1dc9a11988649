"""The data files of a release: utterance- and dialogue-level Parquet per split (called by ``warehouse.publish``).

The release's utterance rows are joined and sorted (split, dialogue, index) once by DuckDB (over ``effective_turns``,
``sel``, ``dif``, ``split_map``, the label mappings and, with audio, the clip paths), so each split's rows are a
contiguous slice; each is written by ``pyarrow.parquet.ParquetWriter``. The dialogue files' ``emotions`` and ``turns``
lists are cut from the same sorted utterance columns (a dialogue's turns are a contiguous run of them), not
aggregated again by SQL: an ordered ``list(struct_pack(...))`` per dialogue costs seconds at DeepDialogue's size.

Columns named ``_audio*`` hold clip paths relative to ``<home>/audio``; they are written as Hugging Face ``Audio``
structs ``{bytes, path}`` with the file's bytes embedded, a few hundred rows at a time (memory stays bounded).
"""

from __future__ import annotations

import json
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.config import PublishConfig
from schemas.taxonomy import Taxonomy
from warehouse.splits import SPLITS

AUDIO_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
AUDIO_BATCH_ROWS = 256  # rows whose clip bytes are held at once
TURN_FIELDS = [("idx", "utterance_idx"), ("speaker", "speaker"), ("text", "text"), ("emotion", "emotion")]


@dataclass
class ReleaseTables:
    """What the data files of a release hold, as the Arrow tables they were written from, one per split file in the
    files' name order (``<split>-<uid>``), so the gate and the report need not read the files back: ``utterances``
    and ``dialogues`` (without ``turns``: its values are the utterance rows'). An audio column holds the clip's file
    name (the ``path`` of the file's ``Audio`` struct), not its bytes, and comes last, as
    ``warehouse.report.data`` reads it from a file."""

    utterances: list[pa.Table]
    dialogues: list[pa.Table]
    writes: list[Future] = field(default_factory=list)  # the file writes still running in a writer thread

    def wait_written(self) -> None:
        """Wait until every file is written; raises the first write's error."""
        for f in self.writes:
            f.result()


def write_splits(con, audio_root: Path | None, tax: Taxonomy, pc_: PublishConfig, data: Path,
                 uid: str, writer: Executor | None = None) -> tuple[dict[str, dict[str, int]], ReleaseTables]:
    """Write ``data/utterances/<split>-<uid>.parquet`` and ``data/dialogues/<split>-<uid>.parquet`` for every split;
    returns the counts per split and the tables written (:class:`ReleaseTables`). ``audio_root``: embed the clips
    under it (None: no audio columns). File names carry a per-release id: `datasets` keys its cache on the directory
    name and the card's data_files patterns, so two releases named alike must not share file names.

    ``writer``: an executor (one thread) that writes the files meanwhile (Parquet encoding and compression release
    the GIL, so they overlap the gate and the report, which read the returned tables); the caller waits for
    :meth:`ReleaseTables.wait_written` (and for the executor before removing ``data``). None: written here."""
    audio = audio_root is not None
    map_cols = "".join(f", m_{n}.label AS label_{n}" for n in tax.mappings)
    map_joins = "".join(f" LEFT JOIN map_{n} m_{n} ON m_{n}.source = sel.source AND m_{n}.emotion = t.label"
                        for n in tax.mappings)
    utt_all = con.sql(f"""
        SELECT t.dialogue_id, t.idx AS utterance_idx, t.speaker, t.speaker_name, t.text, t.label AS emotion,
               t.intended_emotion, sel.source, t.label_source{map_cols}, sel.domain, t.model, sel.model_a, sel.model_b,
               sel.n_turns, t.n_words, dif.difficulty, dif.bucket, s.split{", c.path AS _audio" if audio else ""}
        FROM effective_turns t JOIN sel ON sel.id = t.dialogue_id JOIN dif ON dif.id = sel.id
             JOIN split_map s ON s.id = sel.id{map_joins}
             {"LEFT JOIN (SELECT turn_id, path FROM clips WHERE kind = 'turn') c ON c.turn_id = t.id" if audio else ""}
        ORDER BY s.split, t.dialogue_id, t.idx""").to_arrow_table()
    mix_join = (" LEFT JOIN (SELECT dialogue_id AS mix_dialogue_id, any_value(path) AS mix_path FROM clips "
                "WHERE kind = 'mix' GROUP BY 1) c ON c.mix_dialogue_id = sel.id") if audio else ""
    base_all = con.sql(f"""
        SELECT sel.id AS dialogue_id, sel.source, sel.domain, sel.model_a, sel.model_b,
               CASE WHEN sel.model_a = sel.model_b THEN 'same' ELSE 'cross' END AS pair_type, sel.n_turns,
               dif.difficulty, dif.bucket, s.split, sel.judge_score, sel.decided_by, sel.text_hash
               {", c.mix_path AS _audio_mix" if audio else ""}
        FROM sel JOIN dif ON dif.id = sel.id JOIN split_map s ON s.id = sel.id{mix_join}
        ORDER BY s.split, sel.id""").to_arrow_table()
    utt_of, base_of = by_split(utt_all), by_split(base_all)
    counts: dict[str, dict[str, int]] = {}
    written: dict[str, tuple[pa.Table, pa.Table]] = {}
    writes: list[Future] = []
    for split in SPLITS:
        utt, base = utt_of[split], base_of[split]
        dlg = dialogue_rows(base, utt)
        for table, kind in ((utt, "utterances"), (dlg, "dialogues")):
            args = (table, data / kind / f"{split}-{uid}.parquet", pc_.row_group_size, audio_root)
            if writer is None:
                write_parquet(*args)
            else:
                writes.append(writer.submit(write_parquet, *args))
        counts[split] = {"dialogues": dlg.num_rows, "utterances": utt.num_rows}
        written[split] = (as_read(utt), as_read(dlg.drop_columns(["turns"])))
    order = sorted(written)  # the files' name order: <split>-<uid>.parquet
    return counts, ReleaseTables([written[s][0] for s in order], [written[s][1] for s in order], writes)


def by_split(table: pa.Table) -> dict[str, pa.Table]:
    """The rows of every split of ``table`` (sorted by ``split`` first, so each split is a contiguous run): slices,
    no copy."""
    n = dict(zip(*(c.to_pylist() for c in pc.value_counts(table.column("split")).flatten())))
    out, start = {}, 0
    for split in sorted(n):  # the order DuckDB sorted them in (bytewise; split names are ASCII)
        out[split] = table.slice(start, n[split])
        start += n[split]
    return {split: out.get(split, table.schema.empty_table()) for split in SPLITS} | out


def clip_name(rel: str) -> str:
    """The ``path`` an embedded clip keeps in its ``Audio`` struct: its file name."""
    return Path(rel).name


def as_read(table: pa.Table) -> pa.Table:
    """``table`` as its file reads without the clip bytes: every ``_audio*`` column (clip paths) becomes the column
    without the underscore holding the clip's file name, moved to the end."""
    for name in [n for n in table.column_names if n.startswith("_audio")]:
        names = [None if rel is None else clip_name(rel) for rel in table.column(name).to_pylist()]
        table = table.drop_columns([name]).append_column(name[1:], pa.array(names, pa.string()))
    return table


def dialogue_rows(base: pa.Table, utt: pa.Table) -> pa.Table:
    """``base`` (one row per dialogue, sorted by id) with ``emotions`` and ``turns`` (lists in turn order) cut from
    ``utt`` (sorted by dialogue id, then index) inserted after ``n_turns``. A dialogue without utterances is left
    out (as an inner join would)."""
    runs = pc.run_end_encode(utt.column("dialogue_id").combine_chunks(), run_end_type=pa.int32())
    ids, ends = runs.values, runs.run_ends  # each dialogue's utterances are one run, in the dialogues' order
    if len(ids) < base.num_rows:
        base = base.filter(pc.is_in(base.column("dialogue_id"), value_set=ids))
    if not base.column("dialogue_id").combine_chunks().equals(ids):
        raise ValueError("utterances of a dialogue that is not in the split's dialogue rows (or not sorted alike)")
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), ends])
    emotions = pa.ListArray.from_arrays(offsets, utt.column("emotion").combine_chunks())
    turns = pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(
        [utt.column(src).combine_chunks() for _, src in TURN_FIELDS], names=[name for name, _ in TURN_FIELDS]))
    at = base.schema.get_field_index("n_turns") + 1
    return base.add_column(at, "emotions", emotions).add_column(at + 1, "turns", turns)


def write_parquet(table: pa.Table, path: Path, row_group_size: int, audio_root: Path | None = None) -> int:
    """Write ``table`` as one Parquet file; with ``audio_root``, ``_audio*`` columns become ``Audio`` structs with
    their files' bytes, embedded ``AUDIO_BATCH_ROWS`` rows at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = audio_root is not None and any(n.startswith("_audio") for n in table.column_names)
    schema = out_schema(table.schema) if audio else table.schema
    rows = AUDIO_BATCH_ROWS if audio else row_group_size
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for start in range(0, table.num_rows, rows):
            part = table.slice(start, rows)
            if any(col.num_chunks > 1 for col in part.columns):
                # a row group's rows as one contiguous chunk wherever they come from: the pages (and the file's
                # bytes) depend on the rows alone, not on how the query's result was chunked
                part = part.combine_chunks()
            (batch,) = part.to_batches()
            if audio:
                batch = embed_audio(batch, schema, audio_root)
            writer.write_batch(batch, row_group_size=rows)
    return table.num_rows


def out_schema(schema: pa.Schema) -> pa.Schema:
    audio = [f.name for f in schema if f.name.startswith("_audio")]
    if not audio:
        return schema
    fields = [pa.field(f.name[1:], AUDIO_TYPE) if f.name in audio else f for f in schema]
    out = pa.schema(fields)
    # datasets costs ~25 MB and a second at import; only a release with audio needs its Audio feature metadata
    from datasets import Audio, Features  # noqa: PLC0415 - heavy, needed only for audio (see above)

    feats = Features.from_arrow_schema(out)
    for name in audio:
        feats[name[1:]] = Audio()
    return out.with_metadata({"huggingface": json.dumps({"info": {"features": feats.to_dict()}})})


def embed_audio(batch: pa.RecordBatch, schema: pa.Schema, audio_root: Path) -> pa.RecordBatch:
    cols = []
    for f in batch.schema:
        col = batch.column(f.name)
        if f.name.startswith("_audio"):
            values = []
            for rel in col.to_pylist():
                if rel is None:
                    values.append(None)
                else:
                    values.append({"bytes": (audio_root / rel).read_bytes(), "path": clip_name(rel)})
            col = pa.array(values, type=AUDIO_TYPE)
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=schema)


__all__ = ["AUDIO_TYPE", "ReleaseTables", "as_read", "clip_name", "dialogue_rows", "embed_audio", "out_schema", "write_parquet", "write_splits"]
