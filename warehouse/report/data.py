"""Reading a release for its report: the Parquet files, the manifest, and (given the home) what only the warehouse
has: every judge score, the acceptance of all generated dialogues, clip durations."""

from __future__ import annotations

import json
import re
import wave
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from schemas.taxonomy import Taxonomy, TaxonomyError, load_taxonomy
from warehouse.effective import effective_views
from warehouse.store import Warehouse

REPORT_DIR = "report"


class ReportError(RuntimeError):
    """A release that cannot be reported on (missing or unreadable files); the message names the problem."""


def _read_table(release_dir: Path, name: str, drop: tuple[str, ...] = (), keep: tuple[str, ...] | None = None
                ) -> pa.Table | None:
    """The split files of ``data/<name>`` as one table: the columns in ``keep`` (all when None) that exist, less
    those in ``drop``. An audio column (a
    ``{bytes, path}`` struct) is read as its ``path`` only: the report never needs the embedded bytes, which are
    most of a release with audio."""
    folder = release_dir / "data" / name
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    tables = []
    for f in files:
        try:
            schema = pq.read_schema(f)
            audio = [x.name for x in schema if pa.types.is_struct(x.type) and x.type.get_field_index("bytes") >= 0
                     and x.type.get_field_index("path") >= 0]
            drop_ = set(drop) | ({x.name for x in schema} - set(keep) if keep is not None else set())
            cols = [x.name for x in schema if x.name not in drop_ and x.name not in audio]
            t = pq.read_table(f, columns=cols)
            for col in audio:
                if col not in drop_:
                    t = t.append_column(col, pq.read_table(f, columns=[f"{col}.path"]).column(0))
            tables.append(t)
        except (OSError, pa.ArrowException) as exc:
            raise ReportError(f"cannot read {f}: {exc}") from None
    return pa.concat_tables(tables, promote_options="permissive")


def _given_table(tables: list[pa.Table], drop: tuple[str, ...] = (), keep: tuple[str, ...] | None = None
                 ) -> pa.Table | None:
    """What :func:`_read_table` reads from files, from the tables they were written from (``tables``: one per file,
    in the files' order, audio columns as the clips' file names: ``warehouse.release_files.ReleaseTables``)."""
    if not tables:
        return None
    out = []
    for t in tables:
        drop_ = set(drop) | (set(t.column_names) - set(keep) if keep is not None else set())
        out.append(t.select([c for c in t.column_names if c not in drop_]))
    return pa.concat_tables(out, promote_options="permissive")


def _load_manifest(release_dir: Path) -> dict:
    path = release_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read the manifest: {exc}") from None
    return data if isinstance(data, dict) else {}


def _resolve_taxonomy(taxonomy, manifest: dict):
    """A Taxonomy, or None when the release names one that cannot be loaded here (the graph panel says so)."""
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    spec = taxonomy
    if spec is None:
        spec = manifest.get("taxonomy")
        if isinstance(spec, dict):
            spec = spec.get("name") or spec.get("path")
    if not spec:
        return None
    try:
        return load_taxonomy(spec)
    except TaxonomyError:
        if taxonomy is not None:
            raise
        return None


@dataclass
class ReleaseData:
    """``dialogue_table``: one row per dialogue (no ``turns``: ``emotions`` holds its labels in order), sorted by id;
    ``utterances``: the utterance rows; both Arrow tables (columns, not a dict per row: a release has hundreds of
    thousands); ``samples``: the first dialogues by id with their ``turns``, for the report's sample section."""

    release_dir: Path
    manifest: dict
    dialogue_table: pa.Table
    utterances: pa.Table
    taxonomy: Any = None
    warehouse: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)


def warehouse_figures(home: Path | None, dialogue_ids: pa.Array) -> dict:
    """Figures only the warehouse has: all judge scores, acceptance of every generated dialogue, clip durations;
    ``dialogue_ids``: the release's dialogues."""
    if home is None:
        return {}
    home = Path(home)
    if not (home / "store").is_dir():
        return {}
    wh = Warehouse(home)
    out: dict = {}
    con = wh.connect()
    try:
        effective_views(con)  # human reviews win over judges, as at publish time
        con.register("_release_ids", pa.table({"id": dialogue_ids.cast(pa.string())}))
        rows = con.sql(
            """
            SELECT model_a, model_b, domain, status, count(*) AS n FROM effective_dialogues
            WHERE source = 'generated' OR id IN (SELECT id FROM _release_ids)
            GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
        out["dialogue_status"] = [
            {"model_a": a, "model_b": b, "domain": d, "status": s, "n": int(n)} for a, b, d, s, n in rows
        ]
        rows = con.sql(
            """
            SELECT j.judge_id, j.kind, j.coherence, j.naturalness, j.domain_fit, j.safety,
                   list_avg(j.emotion_fidelity) AS fidelity, j.verdict,
                   (j.dialogue_id IN (SELECT id FROM _release_ids)) AS in_release
            FROM judgements j ORDER BY j.judge_id, j.dialogue_id
            """
        ).fetchall()
        out["judgements"] = [
            {"judge_id": r[0], "kind": r[1], "coherence": r[2], "naturalness": r[3], "domain_fit": r[4],
             "safety": r[5], "emotion_fidelity": r[6], "verdict": r[7], "in_release": bool(r[8])}
            for r in rows
        ]
        rows = con.sql(
            """
            SELECT c.kind, c.duration_s FROM clips c WHERE c.dialogue_id IN (SELECT id FROM _release_ids)
            ORDER BY c.id
            """
        ).fetchall()
        out["clip_durations"] = {"turn": [float(d) for k, d in rows if k == "turn"],
                                 "mix": [float(d) for k, d in rows if k == "mix"]}
    finally:
        con.close()
    return out


def _audio_duration(path: Path) -> float | None:
    try:
        import soundfile as sf  # noqa: PLC0415 - optional speech extra; the wave module reads plain WAV without it

        info = sf.info(str(path))
        return float(info.frames) / float(info.samplerate)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - unreadable clip: reported as missing
        return None
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, wave.Error, EOFError):
        return None


def _audio_ref(value) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return value.get("path") or None
    return None


def _version_from_dir(release_dir: Path) -> str:
    m = re.match(r"^\.tmp-(.+)-[0-9a-f]{8}$", release_dir.name)  # publish builds in releases/.tmp-<version>-<rand>
    return m.group(1) if m else release_dir.name


N_SAMPLES = 10  # dialogues with their turns kept for the report's samples
# what the report reads of the utterances (the figures in warehouse.report.stats, the rebuild below)
UTTERANCE_COLUMNS = ("dialogue_id", "utterance_idx", "speaker", "text", "emotion", "intended_emotion", "label_source",
                     "label_erc7", "n_words", "audio", "domain", "model_a", "model_b", "split", "difficulty", "bucket")


def _samples(utt: pa.Table, first: dict[str, dict]) -> list[dict]:
    """The dialogues ``first`` (the first by id) with their ``turns``, cut from the utterance rows already read."""
    if not first or not utt.num_rows or not {"dialogue_id", "utterance_idx"} <= set(utt.column_names):
        return list(first.values())
    cols = [c for c in ("dialogue_id", "utterance_idx", "speaker", "text", "emotion") if c in utt.column_names]
    rows = utt.select(cols).filter(pa.compute.is_in(utt.column("dialogue_id"),
                                                   value_set=pa.array(list(first), pa.string()))).to_pylist()
    turns: dict[str, list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["utterance_idx"]):
        turns[r["dialogue_id"]].append({"idx": r["utterance_idx"], "speaker": r.get("speaker"), "text": r.get("text"),
                                        "emotion": r.get("emotion")})
    return [d | {"turns": turns.get(did, [])} for did, d in first.items()]


def _dialogues_from_utterances(utt: pa.Table) -> list[dict]:
    """Dialogue rows rebuilt from the utterances (a release shipped without dialogue files)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for u in sorted(utt.to_pylist(), key=lambda r: (r.get("dialogue_id") or "", r.get("utterance_idx") or 0)):
        by[u["dialogue_id"]].append(u)
    return [{"dialogue_id": did, "domain": us[0].get("domain"), "model_a": us[0].get("model_a"),
             "model_b": us[0].get("model_b"), "n_turns": len(us), "split": us[0].get("split"),
             "difficulty": us[0].get("difficulty"), "bucket": us[0].get("bucket"),
             "emotions": [u.get("emotion") for u in us],
             "turns": [{"idx": u["utterance_idx"], "speaker": u.get("speaker"), "text": u.get("text"),
                        "emotion": u.get("emotion")} for u in us]} for did, us in sorted(by.items())]


def load_release(release_dir: Path, taxonomy=None, home: Path | None = None, manifest: dict | None = None,
                 tables=None, figures: tuple[pa.Array, dict] | None = None) -> ReleaseData:
    """The release's data for its report. ``tables``: the Arrow tables its data files were written from (publish
    holds them: ``warehouse.release_files.ReleaseTables``), used instead of reading the files back. ``figures``:
    (dialogue ids, :func:`warehouse_figures` of those ids) computed beforehand (publish reads them meanwhile), used
    when the ids are the release's."""
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise ReportError(f"release folder {release_dir} does not exist")
    manifest = dict(manifest) if manifest is not None else _load_manifest(release_dir)
    manifest.setdefault("version", _version_from_dir(release_dir))
    if tables is not None:
        dlg = _given_table(tables.dialogues, drop=("turns",))
        utt = _given_table(tables.utterances, keep=UTTERANCE_COLUMNS)
    else:
        dlg = _read_table(release_dir, "dialogues", drop=("turns",))
        utt = _read_table(release_dir, "utterances", keep=UTTERANCE_COLUMNS)
    if dlg is None and utt is None:
        raise ReportError(f"{release_dir}: no data/dialogues/*.parquet nor data/utterances/*.parquet")
    if utt is None:
        utt = pa.table({})
    if dlg is not None and "dialogue_id" in dlg.column_names:
        dlg = dlg.sort_by("dialogue_id")
    if dlg is not None and dlg.num_rows:
        samples = _samples(utt, {d["dialogue_id"]: d for d in dlg.slice(0, N_SAMPLES).to_pylist()})
    elif utt.num_rows:
        rebuilt = _dialogues_from_utterances(utt)
        samples = rebuilt[:N_SAMPLES]
        dlg = pa.Table.from_pylist([{k: v for k, v in d.items() if k != "turns"} for d in rebuilt])
    else:
        samples, dlg = [], dlg if dlg is not None else pa.table({})
    tax = _resolve_taxonomy(taxonomy, manifest)
    ids = dlg.column("dialogue_id") if "dialogue_id" in dlg.column_names else pa.array([], pa.string())
    if figures is None or not _same_ids(figures[0], ids):
        figures = (ids, warehouse_figures(home, ids))
    return ReleaseData(release_dir, manifest, dlg, utt, tax, figures[1], samples)


def _same_ids(a, b) -> bool:
    """Whether two columns of unique ids hold the same ids (in any order)."""
    a, b = pa.chunked_array([a]).combine_chunks(), pa.chunked_array(b).combine_chunks()
    return len(a) == len(b) and (not len(a) or pa.compute.all(pa.compute.is_in(a, value_set=b)).as_py())
