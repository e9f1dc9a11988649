"""Small signal helpers on mono float32 audio: resampling, loudness, silence trimming and measurements.

Measurements (:func:`measure`) feed the audio checks and the tests: peak, RMS level, clipped fraction,
speech duration, median F0 (autocorrelation pitch tracker) and a coarse log-spectrum profile used to tell
voices apart.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

# the measurements are shared with the release gate (schemas.audio); re-exported for the speech stage
from schemas.audio import EPS, Measures, active_rms, db, f0_track, frame_rms, measure, mfcc_mean, rms, trim_silence

__all__ = ["EPS", "Measures", "active_rms", "db", "f0_track", "measure", "mfcc_mean", "normalise_loudness",
           "resample", "rms", "silence", "stretch_ratio", "trim_silence", "gate"]


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    if sr_from == sr_to or x.size == 0:
        return x.astype(np.float32, copy=False)
    frac = Fraction(sr_to, sr_from).limit_denominator(1000)
    return resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)


def stretch_ratio(x: np.ndarray, ratio: float) -> np.ndarray:
    """Resample to ``len(x) / ratio`` samples: played at the same rate, pitch and formants rise by ``ratio``."""
    if abs(ratio - 1.0) < 1e-4 or x.size == 0:
        return x.astype(np.float32, copy=False)
    frac = Fraction(1.0 / ratio).limit_denominator(200)
    return resample_poly(x, frac.numerator, frac.denominator).astype(np.float32)


def normalise_loudness(x: np.ndarray, sr: int, target_dbfs: float, peak_dbfs: float = -1.0) -> np.ndarray:
    """Scale so the speech RMS sits at ``target_dbfs``; then scale down if the peak would pass ``peak_dbfs``."""
    level = active_rms(x, sr)
    if level < 1e-6:
        return x.astype(np.float32)
    y = x * (10 ** (target_dbfs / 20) / level)
    peak = float(np.max(np.abs(y)))
    ceiling = 10 ** (peak_dbfs / 20)
    if peak > ceiling:
        y = y * (ceiling / peak)
    return y.astype(np.float32)


def silence(seconds: float, sr: int) -> np.ndarray:
    return np.zeros(max(0, int(round(seconds * sr))), dtype=np.float32)


def gate(x: np.ndarray, sr: int, threshold_db: float, frame_s: float = 0.01, hold_s: float = 0.04) -> np.ndarray:
    """Silence the stretches quieter than ``threshold_db`` relative to the peak (frame RMS), keeping ``hold_s``
    around every louder frame so onsets and tails stay whole; the gain ramps over one frame (no clicks)."""
    n = max(1, int(round(frame_s * sr)))
    k = x.size // n
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if k < 2 or peak < 1e-6:
        return x.astype(np.float32, copy=False)
    level = frame_rms(x, n) / peak
    keep = level >= 10 ** (threshold_db / 20)
    hold = int(round(hold_s / frame_s))
    if hold:
        keep = np.convolve(keep.astype(np.int8), np.ones(2 * hold + 1, np.int8), mode="same") > 0
    keep = np.append(keep, keep[-1])  # the tail shorter than a frame follows the last frame
    centres = np.minimum(np.arange(keep.size) * n + n // 2, x.size - 1)
    gain = np.interp(np.arange(x.size), centres, keep.astype(np.float32))
    return (x * gain).astype(np.float32)
