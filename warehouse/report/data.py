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
import pyarrow.parquet as pq

from schemas.taxonomy import Taxonomy, TaxonomyError, load_taxonomy
from warehouse.effective import effective_views
from warehouse.store import Warehouse

REPORT_DIR = "report"


class ReportError(RuntimeError):
    """A release that cannot be reported on (missing or unreadable files); the message names the problem."""


def _read_table(release_dir: Path, name: str):
    folder = release_dir / "data" / name
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (OSError, pa.ArrowException) as exc:
            raise ReportError(f"cannot read {f}: {exc}") from None
    return pa.concat_tables(tables, promote_options="permissive")


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
    release_dir: Path
    manifest: dict
    dialogues: list[dict]
    utterances: list[dict]
    taxonomy: Any = None
    warehouse: dict = field(default_factory=dict)


def _warehouse_figures(home: Path | None, dialogue_ids: list[str]) -> dict:
    """Figures only the warehouse has: all judge scores, acceptance of every generated dialogue, clip durations."""
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
        con.register("_release_ids", pa.table({"id": pa.array(dialogue_ids, pa.string())}))
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


def load_release(release_dir: Path, taxonomy=None, home: Path | None = None, manifest: dict | None = None) -> ReleaseData:
    release_dir = Path(release_dir)
    if not release_dir.is_dir():
        raise ReportError(f"release folder {release_dir} does not exist")
    manifest = dict(manifest) if manifest is not None else _load_manifest(release_dir)
    manifest.setdefault("version", _version_from_dir(release_dir))
    dlg = _read_table(release_dir, "dialogues")
    utt = _read_table(release_dir, "utterances")
    if dlg is None and utt is None:
        raise ReportError(f"{release_dir}: no data/dialogues/*.parquet nor data/utterances/*.parquet")
    dialogues = sorted(dlg.to_pylist(), key=lambda r: r.get("dialogue_id") or "") if dlg is not None else []
    utterances = (sorted(utt.to_pylist(), key=lambda r: (r.get("dialogue_id") or "", r.get("utterance_idx") or 0))
                  if utt is not None else [])
    if not dialogues and utterances:  # rebuild dialogue rows from utterances
        by: dict[str, list[dict]] = defaultdict(list)
        for u in utterances:
            by[u["dialogue_id"]].append(u)
        for did, us in sorted(by.items()):
            dialogues.append({"dialogue_id": did, "domain": us[0].get("domain"), "model_a": us[0].get("model_a"),
                              "model_b": us[0].get("model_b"), "n_turns": len(us), "split": us[0].get("split"),
                              "difficulty": us[0].get("difficulty"), "bucket": us[0].get("bucket"),
                              "turns": [{"idx": u["utterance_idx"], "speaker": u.get("speaker"), "text": u.get("text"),
                                         "emotion": u.get("emotion")} for u in us]})
    tax = _resolve_taxonomy(taxonomy, manifest)
    ids = [d["dialogue_id"] for d in dialogues]
    return ReleaseData(release_dir, manifest, dialogues, utterances, tax, _warehouse_figures(home, ids))
