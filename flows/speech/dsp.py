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
from schemas.audio import EPS, Measures, active_rms, db, f0_track, measure, mfcc_mean, rms, trim_silence

__all__ = ["EPS", "Measures", "active_rms", "db", "f0_track", "measure", "mfcc_mean", "normalise_loudness",
           "resample", "rms", "silence", "stretch_ratio", "trim_silence"]


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


