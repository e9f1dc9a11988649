"""Audio checks for the release gate (Great Expectations 1.x, ephemeral context).

``validate_audio(clips, turns, bounds, audio_root=...)`` measures every clip file and checks:

- ``missing_clip``: every accepted turn has a turn clip (and every dialogue a mix: ``missing_mix``);
- ``unreadable``: the file exists and decodes;
- ``duration``: duration within ``base + words * s_per_word`` bounds (min and max);
- ``silent``: speech level above ``min_rms_dbfs``;
- ``clipping``: share of full-scale samples at most ``max_clipped_fraction``;
- ``sample_rate``: one sample rate for the whole release, and the file's rate equals the recorded one;
- ``wer``: per-clip ASR word error rate ≤ ``max_clip_wer`` (turns of ``wer_min_words``+ words) and release mean
  ≤ ``max_mean_wer``
  (``require_wer``: every turn clip has one);
- ``voices``: in every dialogue A keeps one voice, B keeps one voice, the two voice ids differ and (when
  ``check_voice_acoustics``) the two voices differ on the audio (mean MFCCs or median pitch).

The result lists, for each failed check, the offending clip ids (and turn ids where the clip is missing).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from schemas.audio import measure_clip, mix_clip_id, turn_clip_id, voice_distance, voice_features
from schemas.config.speech import AudioBounds
from schemas.gx import GXRunner
from schemas.text import count_words

MAX_AUDIO_THREADS = 4  # threads computing voice features
CHECKS = ("missing_clip", "missing_mix", "unreadable", "duration", "silent", "clipping", "sample_rate", "wer",
          "voices")


@dataclass
class AudioFailure:
    check: str
    message: str
    clip_ids: list[str] = field(default_factory=list)
    turn_ids: list[str] = field(default_factory=list)
    dialogue_ids: list[str] = field(default_factory=list)  # the dialogues these clips belong to (quarantine)

    def as_dict(self) -> dict:
        return {"check": self.check, "message": self.message, "clip_ids": self.clip_ids, "turn_ids": self.turn_ids,
                "dialogue_ids": self.dialogue_ids}


@dataclass
class AudioValidation:
    success: bool
    failures: list[AudioFailure]
    stats: dict[str, Any]
    gx_results: list[dict] = field(default_factory=list)

    @property
    def offending_clip_ids(self) -> list[str]:
        return sorted({c for f in self.failures for c in f.clip_ids})

    def summary(self) -> str:
        if self.success:
            return f"audio checks passed ({self.stats.get('turn_clips', 0)} turn clips)"
        lines = [f"audio checks failed: {len(self.failures)} check(s)"]
        for f in self.failures:
            ids = f.clip_ids or f.turn_ids
            lines.append(f"- {f.check}: {f.message} [{', '.join(ids[:10])}{' …' if len(ids) > 10 else ''}]")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"success": self.success, "failures": [f.as_dict() for f in self.failures],
                           "stats": self.stats, "gx_results": self.gx_results}, indent=2, default=str)


def _frame(data) -> pd.DataFrame:
    if data is None:
        return pd.DataFrame()
    if isinstance(data, pd.DataFrame):
        return data.copy()
    if hasattr(data, "to_pandas"):
        return data.to_pandas()
    return pd.DataFrame(list(data))


def _gx_run(gx: GXRunner, df: pd.DataFrame, expectations: list[tuple[str, Any]], id_column: str
            ) -> list[tuple[str, dict]]:
    """(check, expectation result as JSON) for each (check, expectation)."""
    if df.empty or not expectations:
        return []
    results = gx.validate("audio", [exp for _, exp in expectations], df, [id_column])
    return [(check, r.to_json_dict()) for (check, _), r in zip(expectations, results)]


def _ids(result: dict, column: str) -> list[str]:
    idx = (result.get("result") or {}).get("unexpected_index_list") or []
    return sorted({str(row[column]) for row in idx if isinstance(row, dict) and row.get(column) is not None})


def _measure_frames(present: pd.DataFrame, mixes: pd.DataFrame, audio_root: Path, measure: bool) -> None:
    """Add the file measurements (readable, real sample rate and duration, level, clipping) to both frames."""
    if measure:
        meas = [measure_clip(audio_root / p) for p in present["path"]]
        mmeas = [measure_clip(audio_root / p) for p in mixes["path"]]
    else:
        meas = [{"file_ok": True, "file_sample_rate": sr, "file_duration_s": d, "rms_dbfs": 0.0, "clipped_fraction": 0.0}
                for sr, d in zip(present["sample_rate"], present["duration_s"])]
        mmeas = [{"file_ok": True, "file_sample_rate": sr, "file_duration_s": d, "rms_dbfs": 0.0, "clipped_fraction": 0.0}
                 for sr, d in zip(mixes["sample_rate"], mixes["duration_s"])]
    for frame, ms in ((present, meas), (mixes, mmeas)):
        for col in ("file_ok", "file_sample_rate", "file_duration_s", "rms_dbfs", "clipped_fraction"):
            frame[col] = [m.get(col) for m in ms]
        frame["sample_rate_matches"] = [bool(m["file_ok"]) and m["file_sample_rate"] == sr
                                        for m, sr in zip(ms, frame["sample_rate"])]


def _voice_rows(present: pd.DataFrame, b: AudioBounds, audio_root: Path, measure: bool) -> list[dict]:
    """One row per dialogue: how many voices A and B used, whether they differ, and how far apart they sound.

    The voice features (pitch track and MFCCs of each speaker's clips: most of the audio checks' time) are computed
    in a thread per core: NumPy's FFTs and the file decoding release the GIL; the same numbers, in the same order."""
    voice_rows, speakers = [], []  # speakers: (row, clips of A, clips of B) whose acoustics are compared
    for did, g in present.groupby("dialogue_id"):
        va = sorted(set(g.loc[g["speaker"] == "A", "voice"]))
        vb = sorted(set(g.loc[g["speaker"] == "B", "voice"]))
        row = {"dialogue_id": did, "voices_a": len(va), "voices_b": len(vb),
               "voices_differ": bool(va and vb and not set(va) & set(vb)), "voice_distance": None,
               "clip_ids": list(g["clip_id"])}
        if b.check_voice_acoustics and measure and va and vb:
            speakers.append((row, [audio_root / p for p in g.loc[g["speaker"] == "A", "path"]],
                             [audio_root / p for p in g.loc[g["speaker"] == "B", "path"]]))
        voice_rows.append(row)
    if speakers:
        with ThreadPoolExecutor(min(_cores(), MAX_AUDIO_THREADS), thread_name_prefix="voices") as pool:
            features = pool.map(voice_features, [paths for _, a, bb in speakers for paths in (a, bb)])
            for row, _, _ in speakers:
                fa, fb = next(features), next(features)
                row["voice_distance"] = voice_distance(fa, fb, b.min_voice_mfcc, b.min_voice_pitch_st)
    return voice_rows


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _failures(gx_out: list[tuple[str, dict]], voice_rows: list[dict], readable: pd.DataFrame,
              present_ok: pd.DataFrame, b: AudioBounds, gx_results: list[dict]) -> list[AudioFailure]:
    """One AudioFailure per failed check, naming the offending clips; every result is summarised into
    ``gx_results``."""
    failures: list[AudioFailure] = []
    clips_of_dialogue = {r["dialogue_id"]: r["clip_ids"] for r in voice_rows}
    per_check: dict[str, tuple[set[str], list[str]]] = {}
    for check, r in gx_out:
        gx_results.append({"check": check, "success": r.get("success"),
                           "expectation": (r.get("expectation_config") or {}).get("type"),
                           "kwargs": (r.get("expectation_config") or {}).get("kwargs"),
                           "observed": (r.get("result") or {}).get("observed_value"),
                           "unexpected_count": (r.get("result") or {}).get("unexpected_count")})
        if r.get("success"):
            continue
        ids: set[str] = set()
        cfg = r.get("expectation_config") or {}
        kind = cfg.get("type", "")
        if check == "voices":
            for d in _ids(r, "dialogue_id"):
                ids.update(clips_of_dialogue.get(d, []))
        elif kind == "expect_column_unique_value_count_to_be_between":
            counts = readable["file_sample_rate"].value_counts()
            major = counts.index[0] if len(counts) else None
            ids.update(readable.loc[readable["file_sample_rate"] != major, "clip_id"].astype(str))
        elif kind == "expect_column_mean_to_be_between":
            # the clips that pull the mean over its bound
            above = present_ok[present_ok["wer"].astype(float) > b.max_mean_wer]
            ids.update(above["clip_id"].astype(str))
        else:
            ids.update(_ids(r, "clip_id"))
        observed = (r.get("result") or {}).get("observed_value")
        msg = f"{kind} {json.dumps(cfg.get('kwargs', {}), default=str)}"
        if observed is not None:
            msg += f" observed {observed}"
        count = (r.get("result") or {}).get("unexpected_count")
        if count:
            msg += f" ({count} unexpected)"
        prev = per_check.get(check, (set(), []))
        per_check[check] = (prev[0] | ids, prev[1] + [msg])
    for check, (ids, msgs) in per_check.items():
        failures.append(AudioFailure(check, "; ".join(msgs), clip_ids=sorted(ids)))
    failures.sort(key=lambda f: CHECKS.index(f.check) if f.check in CHECKS else 99)

    return failures


def _run_expectations(everything: pd.DataFrame, readable: pd.DataFrame, present_ok: pd.DataFrame,
                      voices: pd.DataFrame, b: AudioBounds) -> list[tuple[str, dict]]:
    """Every audio expectation through GX: per clip (readable, level, clipping, sample rate), per turn clip
    (duration, WER) and per dialogue (voices). Adds the derived columns to ``present_ok`` and ``voices``."""
    try:
        gx = GXRunner("emoforge_audio")
        E = gx.expectations
    except Exception as exc:  # noqa: BLE001 - GX is a main dependency; say so plainly if it breaks
        raise RuntimeError(f"Great Expectations is unavailable for the audio checks: {exc}") from exc

    clip_exps = []
    if len(everything):
        clip_exps += [
            ("unreadable", E.ExpectColumnValuesToBeInSet(column="file_ok", value_set=[True])),
        ]
    if len(readable):
        clip_exps += [
            ("silent", E.ExpectColumnValuesToBeBetween(column="rms_dbfs", min_value=b.min_rms_dbfs)),
            ("clipping", E.ExpectColumnValuesToBeBetween(column="clipped_fraction", min_value=0,
                                                         max_value=b.max_clipped_fraction)),
            ("sample_rate", E.ExpectColumnUniqueValueCountToBeBetween(column="file_sample_rate", min_value=1,
                                                                      max_value=1)),
            ("sample_rate", E.ExpectColumnValuesToBeInSet(column="sample_rate_matches", value_set=[True])),
        ]
    gx_out = _gx_run(gx, everything if len(everything) else pd.DataFrame(), clip_exps, "clip_id") if clip_exps else []
    # readable-only expectations on the readable subset
    if len(readable) and len(everything) != len(readable):
        gx_out = gx_out[:1] + _gx_run(gx, readable.reset_index(drop=True), clip_exps[1:], "clip_id")
    turn_exps = []
    if len(present_ok):
        turn_exps += [
            ("duration", E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="duration_s", column_B="min_duration_s",
                                                                   or_equal=True)),
            ("duration", E.ExpectColumnPairValuesAToBeGreaterThanB(column_A="max_duration_s", column_B="duration_s",
                                                                   or_equal=True)),
        ]
        has_wer = present_ok["wer"].notna().any() if "wer" in present_ok else False
        if has_wer:
            present_ok["wer"] = present_ok["wer"].astype(float)
            # per clip only where the turn is long enough for a WER to mean something (one misheard word of a
            # 3-word turn is 0.33); every clip counts towards the release mean
            present_ok["wer_clip"] = present_ok["wer"].where(present_ok["n_words"] >= b.wer_min_words)
            turn_exps += [
                ("wer", E.ExpectColumnValuesToBeBetween(column="wer_clip", min_value=0, max_value=b.max_clip_wer)),
                ("wer", E.ExpectColumnMeanToBeBetween(column="wer", min_value=0, max_value=b.max_mean_wer)),
            ]
        if b.require_wer:
            turn_exps.append(("wer", E.ExpectColumnValuesToNotBeNull(column="wer")))
    cols = ["clip_id", "duration_s", "min_duration_s", "max_duration_s", "wer", "wer_clip"]
    gx_out += _gx_run(gx, present_ok[[c for c in cols if c in present_ok]].reset_index(drop=True), turn_exps, "clip_id")
    voice_exps = []
    if len(voices):
        voice_exps += [
            ("voices", E.ExpectColumnValuesToBeBetween(column="voices_a", min_value=1, max_value=1)),
            ("voices", E.ExpectColumnValuesToBeBetween(column="voices_b", min_value=1, max_value=1)),
            ("voices", E.ExpectColumnValuesToBeInSet(column="voices_differ", value_set=[True])),
        ]
        if voices["voice_distance"].notna().any():
            voices["voice_distance"] = voices["voice_distance"].astype(float)
            voice_exps.append(("voices", E.ExpectColumnValuesToBeBetween(column="voice_distance", min_value=1.0)))
    gx_out += _gx_run(gx, voices.drop(columns=["clip_ids"]) if len(voices) else voices, voice_exps, "dialogue_id")

    return gx_out


def _audio_stats(tr, present, mixes, readable, present_ok, voices) -> dict[str, Any]:
    return {
        "turns": int(len(tr)),
        "turn_clips": int(len(present)),
        "mixes": int(len(mixes)),
        "sample_rates": sorted({int(x) for x in readable["file_sample_rate"].dropna()}),
        "hours": round(float(pd.to_numeric(present["file_duration_s"], errors="coerce").fillna(0).sum()) / 3600, 4),
        "mean_wer": (round(float(present_ok["wer"].astype(float).mean()), 4)
                     if "wer" in present_ok and present_ok["wer"].notna().any() else None),
        "wer_measured": int(present_ok["wer"].notna().sum()) if "wer" in present_ok else 0,
        "min_voice_distance": (float(voices["voice_distance"].min())
                               if len(voices) and voices["voice_distance"].notna().any() else None),
    }


def validate_audio(clips, turns, bounds: AudioBounds | dict | None = None, *, audio_root: Path,
                   measure: bool = True) -> AudioValidation:
    """Check the clips of a release. ``clips``: AudioClip rows (pyarrow Table / DataFrame) of the accepted
    dialogues; ``turns``: the accepted turns (``id, dialogue_id, speaker, text`` and ``n_words``);
    ``audio_root``: the folder the clips' ``path`` is relative to."""
    b = bounds if isinstance(bounds, AudioBounds) else AudioBounds.model_validate(bounds or {})
    audio_root = Path(audio_root)
    cl = _frame(clips)
    tr = _frame(turns)
    if "n_words" not in tr.columns:
        tr["n_words"] = tr["text"].map(lambda t: count_words(str(t)))
    if cl.empty:
        cl = pd.DataFrame(columns=["id", "dialogue_id", "turn_id", "kind", "path", "voice", "sample_rate",
                                   "duration_s", "wer"])
    cl = cl.rename(columns={"id": "clip_id"})
    failures: list[AudioFailure] = []
    gx_results: list[dict] = []

    turn_clips = cl[cl["kind"] == "turn"].copy()
    mixes = cl[cl["kind"] == "mix"].copy()

    # missing clips / mixes (a join, no GX needed to find them; GX records the count below)
    merged = tr.merge(turn_clips, how="left", left_on="id", right_on="turn_id", suffixes=("_turn", ""))
    missing = merged[merged["clip_id"].isna()]
    if len(missing):
        failures.append(AudioFailure("missing_clip", f"{len(missing)} accepted turn(s) have no clip",
                                     clip_ids=[turn_clip_id(t) for t in missing["id"]],
                                     turn_ids=sorted(missing["id"].astype(str)),
                                     dialogue_ids=sorted(set(missing["dialogue_id_turn"].astype(str)))))
    dlg_with_mix = set(mixes["dialogue_id"])
    no_mix = sorted(set(tr["dialogue_id"]) - dlg_with_mix)
    if no_mix:
        failures.append(AudioFailure("missing_mix", f"{len(no_mix)} dialogue(s) have no full-dialogue mix",
                                     clip_ids=[mix_clip_id(d) for d in no_mix], dialogue_ids=list(no_mix)))

    present = merged[merged["clip_id"].notna()].copy()
    present["min_duration_s"] = b.min_base_s + present["n_words"] * b.min_s_per_word
    present["max_duration_s"] = b.max_base_s + present["n_words"] * b.max_s_per_word
    _measure_frames(present, mixes, audio_root, measure)
    everything = pd.concat([present[["clip_id", "file_ok", "file_sample_rate", "rms_dbfs", "clipped_fraction",
                                     "sample_rate", "sample_rate_matches"]],
                            mixes[["clip_id", "file_ok", "file_sample_rate", "rms_dbfs", "clipped_fraction",
                                   "sample_rate", "sample_rate_matches"]]], ignore_index=True)
    readable = everything[everything["file_ok"] == True]  # noqa: E712
    present_ok = present[present["file_ok"] == True].copy()  # noqa: E712
    present_ok["duration_s"] = present_ok["file_duration_s"].astype(float)

    voice_rows = _voice_rows(present, b, audio_root, measure)
    voices = pd.DataFrame(voice_rows)

    gx_out = _run_expectations(everything, readable, present_ok, voices, b)

    failures += _failures(gx_out, voice_rows, readable, present_ok, b, gx_results)
    dialogue_of = dict(zip(cl["clip_id"].astype(str), cl["dialogue_id"].astype(str)))
    for f in failures:
        if not f.dialogue_ids:
            f.dialogue_ids = sorted({dialogue_of[c] for c in f.clip_ids if c in dialogue_of})
    failures.sort(key=lambda f: CHECKS.index(f.check) if f.check in CHECKS else 99)
    stats = _audio_stats(tr, present, mixes, readable, present_ok, voices)
    return AudioValidation(success=not failures, failures=failures, stats=stats, gx_results=gx_results)
