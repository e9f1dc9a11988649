"""Measurements of clips on disk for the audio checks: level, clipping, real duration/sample rate, and per
dialogue speaker voice features (mean MFCCs, median pitch)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from flows.speech import dsp, store


def measure_clip(path: Path) -> dict:
    try:
        x, sr = store.read(path)
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable file is a finding, not a crash
        return {"file_ok": False, "file_error": f"{type(exc).__name__}: {exc}", "file_sample_rate": None,
                "file_duration_s": None, "rms_dbfs": None, "peak": None, "clipped_fraction": None}
    m = dsp.measure(x, sr)
    return {"file_ok": True, "file_error": None, "file_sample_rate": sr, "file_duration_s": round(m.duration_s, 4),
            "rms_dbfs": round(m.rms_dbfs, 2), "peak": round(m.peak, 4), "clipped_fraction": m.clipped_fraction}


def voice_features(paths: list[Path]) -> tuple[np.ndarray | None, float | None]:
    """(mean MFCCs, median F0 in Hz) of the concatenated clips of one speaker."""
    xs, sr = [], None
    for p in paths:
        try:
            x, sr = store.read(p)
        except Exception:  # noqa: BLE001
            continue
        xs.append(x)
    if not xs or sr is None:
        return None, None
    x = np.concatenate(xs)
    track = dsp.f0_track(x, sr)
    return dsp.mfcc_mean(x, sr), (float(np.median(track)) if track.size >= 5 else None)


def voice_distance(a: tuple, b: tuple, min_mfcc: float, min_pitch_st: float) -> float | None:
    """≥ 1 when two speakers sound clearly different: max(MFCC distance / min_mfcc, |pitch difference in
    semitones| / min_pitch_st)."""
    (ma, fa), (mb, fb) = a, b
    if ma is None or mb is None:
        return None
    d = float(np.linalg.norm(ma - mb)) / min_mfcc
    if fa and fb:
        d = max(d, abs(12 * math.log2(fa / fb)) / min_pitch_st)
    return round(d, 3)
