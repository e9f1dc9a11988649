"""The release gate: Great Expectations (GX Core 1.x, ephemeral context) suites kept as code.

Two suites run on every release before it becomes visible:

* ``utterances`` — row level, run over the utterance Parquet files in chunks (memory stays bounded): no empty text,
  emotions and mapped labels in the taxonomy, speakers alternate, words per turn within bounds, difficulty within
  its range, bucket and split valid;
* ``dialogues`` — one row per dialogue, with per-dialogue aggregates of its utterances computed by DuckDB: ids
  unique, turn count within bounds and equal to the utterances present (indices 0..n-1), splits disjoint by
  dialogue and by normalised text hash, difficulty within its range.

A failing expectation is reported with the rows it failed on (dialogue id, utterance index).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.config import PublishConfig
from schemas.difficulty import max_difficulty
from schemas.gx import MAX_LISTED, GXRunner
from schemas.suites import SourceSuite, generated_suite
from schemas.taxonomy import Taxonomy

SPLITS = ["train", "validation", "test"]


@dataclass
class Failure:
    suite: str
    expectation: str
    kwargs: dict[str, Any]
    unexpected_count: int
    rows: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k not in ("value_set",))
        rows = ", ".join(str(r) for r in self.rows[:MAX_LISTED])
        more = f" (+{self.unexpected_count - MAX_LISTED} more)" if self.unexpected_count > MAX_LISTED else ""
        return f"[{self.suite}] {self.expectation}({args}) failed on {self.unexpected_count} row(s): {rows}{more}"


@dataclass
class GateResult:
    success: bool
    failures: list[Failure]
    checked: dict[str, int]
    results: list[dict]

    def to_json(self) -> str:
        return json.dumps(
            {
                "success": self.success,
                "checked": self.checked,
                "failures": [f.__dict__ for f in self.failures],
                "results": self.results,
            },
            indent=1,
            default=str,
        )

    def summary(self) -> str:
        if self.success:
            return f"release gate passed ({self.checked})"
        return "release gate FAILED:\n" + "\n".join("  " + f.describe() for f in self.failures)


def default_suite(taxonomy: Taxonomy, cfg: PublishConfig) -> SourceSuite:
    v = cfg.validation
    return generated_suite(taxonomy.emotion_names, {n: dict(m.map) for n, m in taxonomy.mappings.items()},
                           min_turns=v.min_turns, max_turns=v.max_turns, min_words=v.min_words_per_turn,
                           max_words=v.max_words_per_turn)


def utterance_suite(gx, taxonomy: Taxonomy, cfg: PublishConfig, suite: SourceSuite | None = None):
    """Row-level expectations of one source's utterances (``suite``: its labels and bounds; default generated)."""
    E = gx.expectations
    suite = suite or default_suite(taxonomy, cfg)
    emotions = list(suite.labels)
    exps = [
        E.ExpectColumnValuesToNotBeNull(column="text"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        E.ExpectColumnValuesToBeInSet(column="emotion", value_set=emotions),
        E.ExpectColumnValuesToBeInSet(column="intended_emotion", value_set=emotions),
        E.ExpectColumnValuesToBeInSet(column="speaker", value_set=["A", "B"]),
        E.ExpectColumnPairValuesToBeEqual(column_A="speaker", column_B="expected_speaker"),
        E.ExpectColumnValuesToBeBetween(column="n_words", min_value=suite.min_words, max_value=suite.max_words),
        E.ExpectColumnValuesToBeBetween(column="difficulty", min_value=0.0, max_value=max_difficulty(cfg.difficulty.k, cfg.difficulty.b)),
        E.ExpectColumnValuesToBeBetween(column="bucket", min_value=0, max_value=cfg.difficulty.buckets - 1),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
        E.ExpectColumnValuesToBeInSet(column="label_source", value_set=["intended", "human", "import"]),
    ]
    for name, mapping in taxonomy.mappings.items():
        if suite.mapped(name) is not None:
            exps.append(E.ExpectColumnValuesToBeInSet(column=f"label_{name}", value_set=list(mapping.labels)))
            exps.append(E.ExpectColumnValuesToNotBeNull(column=f"label_{name}"))
    return "utterances", exps


def dialogue_suite(gx, taxonomy: Taxonomy, cfg: PublishConfig):
    """Dialogue-level expectations over every source at once (leakage spans sources); turn-count bounds come per
    row from the row's source suite (columns ``min_turns_bound``, ``max_turns_bound``)."""
    E = gx.expectations
    return "dialogues", [
        E.ExpectColumnValuesToBeUnique(column="dialogue_id"),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="n_turns", column_B="min_turns_bound", or_equal=True),
        E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="max_turns_bound", column_B="n_turns", or_equal=True),
        E.ExpectColumnPairValuesToBeEqual(column_A="n_turns", column_B="n_utterances"),
        E.ExpectColumnPairValuesToBeEqual(column_A="n_turns", column_B="n_distinct_idx"),
        E.ExpectColumnValuesToBeBetween(column="min_idx", min_value=0, max_value=0),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
        E.ExpectColumnValuesToBeBetween(column="difficulty", min_value=0.0, max_value=max_difficulty(cfg.difficulty.k, cfg.difficulty.b)),
        E.ExpectColumnValuesToBeUnique(column="split_text_hash"),
    ]


def _run(runner: GXRunner, suite_name: str, expectations: list, df: pd.DataFrame,
         index_cols: list[str]) -> tuple[list[Failure], list[dict]]:
    failures = []
    summaries = []
    for r in runner.validate(suite_name, expectations, df, index_cols):
        cfg = r.expectation_config
        res = r.result or {}
        summaries.append({"suite": suite_name, "expectation": cfg.type, "success": bool(r.success),
                          "unexpected_count": res.get("unexpected_count", 0)})
        if r.success:
            continue
        idx = res.get("unexpected_index_list") or []
        rows = [":".join(str(d.get(c)) for c in index_cols) if isinstance(d, dict) else str(d) for d in idx[:MAX_LISTED]]
        if r.exception_info and r.exception_info.get("raised_exception"):
            rows = [r.exception_info.get("exception_message")]
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("result_format", "batch_id")}
        failures.append(Failure(suite_name, cfg.type, kwargs, int(res.get("unexpected_count") or len(rows)), rows))
    return failures, summaries


UTTERANCE_COLUMNS = ["dialogue_id", "utterance_idx", "speaker", "text", "emotion", "intended_emotion", "label_source",
                     "n_words", "difficulty", "bucket", "split"]  # what the utterance suite reads, less the mappings


def _file_batches(files: Iterable[Path], cols: list[str], chunk_rows: int) -> Iterable[pa.Table]:
    """The columns ``cols`` (and ``source`` where a file has it) of every file, ``chunk_rows`` rows at a time."""
    for f in files:
        pf = pq.ParquetFile(f)
        has_source = "source" in pf.schema_arrow.names
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols + (["source"] if has_source else [])):
            yield pa.Table.from_batches([batch])


def _table_batches(tables: Iterable[pa.Table], chunk_rows: int) -> Iterable[pa.Table]:
    for t in tables:
        for start in range(0, t.num_rows, chunk_rows):
            yield t.slice(start, chunk_rows)


def _utterance_frames(batches: Iterable[pa.Table], mapping_names: list[str], chunk_rows: int
                      ) -> Iterable[pd.DataFrame]:
    """The utterance rows of ``batches`` (:func:`_file_batches`, :func:`_table_batches`), in frames of about
    ``chunk_rows`` rows (a frame spans files: each GX run has a fixed cost, so the split files are validated
    together, not one run per file); a batch without ``source`` is generated dialogue."""
    cols = UTTERANCE_COLUMNS + [f"label_{m}" for m in mapping_names]
    pending: list[pa.Table] = []
    n = 0
    for table in batches:
        if "source" not in table.column_names:
            table = table.append_column("source", pa.array(["generated"] * table.num_rows, pa.string()))
        pending.append(table.select(cols + ["source"]))
        n += table.num_rows
        if n >= chunk_rows:
            yield _frame(pending)
            pending, n = [], 0
    if pending:
        yield _frame(pending)


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    df["expected_speaker"] = np.where(df["utterance_idx"].to_numpy() % 2 == 0, "A", "B")
    return df


def _dialogue_frame(utt: str, dlg: str, has_source: bool, con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per dialogue with the aggregates of its utterances; ``utt``, ``dlg``: what DuckDB reads them from
    (``read_parquet(...)`` of the files, or a registered table)."""
    return con.sql(
        f"""
        WITH u AS (
            SELECT dialogue_id, count(*) AS n_utterances, count(DISTINCT utterance_idx) AS n_distinct_idx,
                   min(utterance_idx) AS min_idx
            FROM {utt} GROUP BY dialogue_id
        ), d AS (
            SELECT dialogue_id, n_turns, split, difficulty, text_hash,
                   {"source" if has_source else "'generated' AS source"}
            FROM {dlg}
        ), leak AS (
            SELECT text_hash, count(DISTINCT split) AS n_splits FROM d GROUP BY text_hash
        )
        SELECT d.dialogue_id, d.source, d.n_turns, d.split, d.difficulty,
               coalesce(u.n_utterances, 0) AS n_utterances, coalesce(u.n_distinct_idx, 0) AS n_distinct_idx,
               coalesce(u.min_idx, 0) AS min_idx,
               -- one value per (text hash, split): unique unless the same text sits in two splits
               CASE WHEN leak.n_splits > 1 THEN d.text_hash ELSE d.dialogue_id END AS split_text_hash
        FROM d LEFT JOIN u USING (dialogue_id) LEFT JOIN leak USING (text_hash)
        ORDER BY d.dialogue_id
        """
    ).df()


def _file_dialogue_frame(data_dir: Path) -> pd.DataFrame:
    utt = str(data_dir / "utterances" / "*.parquet").replace("'", "''")
    dlg = str(data_dir / "dialogues" / "*.parquet").replace("'", "''")
    con = duckdb.connect()
    try:
        return _dialogue_frame(f"read_parquet('{utt}')", f"read_parquet('{dlg}')",
                               _has_column(data_dir / "dialogues", "source"), con)
    finally:
        con.close()


def _table_dialogue_frame(utterances: list[pa.Table], dialogues: list[pa.Table]) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        con.register("_utt", pa.concat_tables([t.select(["dialogue_id", "utterance_idx"]) for t in utterances]))
        has_source = bool(dialogues) and all("source" in t.column_names for t in dialogues)
        cols = ["dialogue_id", "n_turns", "split", "difficulty", "text_hash"] + (["source"] if has_source else [])
        con.register("_dlg", pa.concat_tables([t.select(cols) for t in dialogues]))
        return _dialogue_frame("_utt", "_dlg", has_source, con)
    finally:
        con.close()


def _has_column(folder: Path, column: str) -> bool:
    files = sorted(folder.glob("*.parquet"))
    return bool(files) and all(column in pq.read_schema(f).names for f in files)


def validate_release(data_dir: Path, taxonomy: Taxonomy, cfg: PublishConfig, chunk_rows: int = 250_000,
                     suites: dict[str, SourceSuite] | None = None,
                     tables: tuple[list[pa.Table], list[pa.Table]] | None = None) -> GateResult:
    """Run both suites over ``data_dir`` (the ``data/`` folder of a release being built). ``suites``: the suite
    of each source (``schemas.suites``; default: every source is generated dialogue under the taxonomy).
    ``tables``: (utterance tables, dialogue tables), the Arrow tables the files of ``data_dir`` were written from,
    one per file in the files' order: validated instead of reading the files back."""
    suites = suites or {}
    runner = GXRunner()
    failures: list[Failure] = []
    results: list[dict] = []
    checked = {"utterances": 0, "dialogues": 0}
    mapping_names = list(taxonomy.mappings)
    if tables is not None:
        batches = _table_batches(tables[0], chunk_rows)
    else:
        files = sorted((data_dir / "utterances").glob("*.parquet"))
        batches = _file_batches(files, UTTERANCE_COLUMNS + [f"label_{m}" for m in mapping_names], chunk_rows)
    for df in _utterance_frames(batches, mapping_names, chunk_rows):
        if df.empty:
            continue
        checked["utterances"] += len(df)
        for source, part in df.groupby("source", sort=True):
            suite = suites.get(source)
            part = part.reset_index(drop=True)
            if suite is not None and not suite.alternating:  # multi-party real data: any speaker order
                part["expected_speaker"] = part["speaker"]
            u_name, u_exps = utterance_suite(runner.gx, taxonomy, cfg, suite)  # an expectation belongs to one suite
            f, r = _run(runner, u_name, u_exps, part, ["dialogue_id", "utterance_idx"])
            failures.extend(f)
            results.extend(r)
    ddf = _table_dialogue_frame(*tables) if tables is not None else _file_dialogue_frame(data_dir)
    checked["dialogues"] = len(ddf)
    if len(ddf):
        default = default_suite(taxonomy, cfg)
        of = {s: suites.get(s, default) for s in ddf["source"].unique()}
        ddf["min_turns_bound"] = ddf["source"].map({s: x.min_turns for s, x in of.items()})
        ddf["max_turns_bound"] = ddf["source"].map({s: x.max_turns for s, x in of.items()})
        d_name, d_exps = dialogue_suite(runner.gx, taxonomy, cfg)
        f, r = _run(runner, d_name, d_exps, ddf, ["dialogue_id"])
        failures.extend(f)
        results.extend(r)
    return GateResult(success=not failures, failures=_merge(failures), checked=checked, results=results)


def _merge(failures: list[Failure]) -> list[Failure]:
    """One failure per (suite, expectation, kwargs) across chunks."""
    merged: dict[str, Failure] = {}
    for f in failures:
        key = json.dumps([f.suite, f.expectation, f.kwargs], sort_keys=True, default=str)
        if key in merged:
            merged[key].unexpected_count += f.unexpected_count
            merged[key].rows.extend(f.rows[: max(0, MAX_LISTED - len(merged[key].rows))])
        else:
            merged[key] = Failure(f.suite, f.expectation, dict(f.kwargs), f.unexpected_count, list(f.rows))
    return list(merged.values())
