"""Audio measurements shared by the speech stage and the release gate: level, clipping, real duration and sample
rate of a clip on disk, pitch (YIN) and a timbre sketch (mean MFCCs) to tell two speakers apart, and the ids of
turn clips and dialogue mixes. numpy only at import time (soundfile and scipy come with the ``speech`` extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.records import content_id

EPS = 1e-10


def turn_clip_id(turn_id: str) -> str:
    return content_id("clp", turn_id, "turn")


def mix_clip_id(dialogue_id: str) -> str:
    return content_id("clp", dialogue_id, "mix")


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate of an audio file."""
    import soundfile as sf  # noqa: PLC0415 - soundfile comes with the optional speech extra

    x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if x.ndim > 1:
        x = x.mean(axis=1)
    return x, int(sr)


def db(x: float) -> float:
    return float(20.0 * np.log10(max(x, EPS)))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def frame_rms(x: np.ndarray, n: int) -> np.ndarray:
    """RMS of every whole frame of ``n`` samples (a tail shorter than a frame is left out)."""
    k = x.size // n
    return np.sqrt(np.mean(x[: k * n].reshape(k, n).astype(np.float64) ** 2, axis=1))


def active_rms(x: np.ndarray, sr: int, frame_s: float = 0.03) -> float:
    """RMS over the frames within 30 dB of the loudest frame (the speech, not the pauses)."""
    n = max(1, int(sr * frame_s))
    if x.size < n:
        return rms(x)
    frames = frame_rms(x, n)
    loud = frames[frames >= frames.max() * 10 ** (-30 / 20)]
    return float(np.sqrt(np.mean(loud**2))) if loud.size else 0.0


def trim_silence(x: np.ndarray, sr: int, threshold_db: float = -40.0, keep_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing audio quieter than ``threshold_db`` relative to the peak, keeping ``keep_s``."""
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak < 1e-6:
        return x[:0]
    idx = np.flatnonzero(np.abs(x) > peak * 10 ** (threshold_db / 20))
    keep = int(keep_s * sr)
    return x[max(0, idx[0] - keep): min(x.size, idx[-1] + keep + 1)]


def f0_track(x: np.ndarray, sr: int, fmin: float = 60.0, fmax: float = 450.0, frame_s: float = 0.04,
             hop_s: float = 0.01, threshold: float = 0.1, voicing: float = 0.2) -> np.ndarray:
    """Per-frame F0 in Hz of the voiced frames (YIN: cumulative-mean-normalised difference, first dip under
    ``threshold``; frames whose best dip stays above ``voicing`` count as unvoiced)."""
    n, hop = int(frame_s * sr), int(hop_s * sr)
    if x.size < n:
        return np.zeros(0)
    idx = np.arange(n)[None, :] + hop * np.arange((x.size - n) // hop + 1)[:, None]
    frames = x[idx].astype(np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames**2, axis=1)
    frames = frames[energy > energy.max() * 10 ** (-25 / 10)]
    if frames.shape[0] == 0:
        return np.zeros(0)
    w = n // 2  # integration window; lags up to n - w
    head = np.fft.rfft(frames[:, :w], 2 * n, axis=1)
    full = np.fft.rfft(frames, 2 * n, axis=1)
    ac = np.fft.irfft(np.conj(head) * full, axis=1)[:, : n - w]  # sum_j<w x[j] x[j + lag]
    sq = np.cumsum(np.concatenate([np.zeros((frames.shape[0], 1)), frames**2], axis=1), axis=1)
    lags = np.arange(n - w)
    e0 = sq[:, w:w + 1] - sq[:, :1]
    et = sq[:, lags + w] - sq[:, lags]
    d = e0 + et - 2 * ac
    d[:, 0] = 0
    cum = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(cum, EPS)
    lo, hi = max(2, int(sr / fmax)), min(n - w - 2, int(sr / fmin))
    seg = cmnd[:, lo:hi]
    below = seg < threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1), seg.argmin(axis=1))
    rows = np.arange(seg.shape[0])
    for _ in range(hi - lo):  # walk down to the local minimum
        nxt = np.minimum(first + 1, seg.shape[1] - 1)
        move = seg[rows, nxt] < seg[rows, first]
        if not move.any():
            break
        first = np.where(move, nxt, first)
    best = seg[rows, first]
    voiced = best < voicing
    return (sr / (first[voiced] + lo)).astype(np.float64)


def mfcc_mean(x: np.ndarray, sr: int, n_mfcc: int = 13, n_mels: int = 40, fmax: float = 8000.0) -> np.ndarray:
    """Mean MFCCs (c1..c13) over the loud frames: a timbre sketch of a voice. Over a few sentences, one voice
    stays within ~3 units of itself while the built-in voices that may be cast together are ≥ 8 apart."""
    from scipy.fft import dct  # noqa: PLC0415 - scipy comes with the optional speech extra

    n, hop = 1024, 256
    if x.size < n:
        return np.zeros(n_mfcc)
    idx = np.arange(n)[None, :] + hop * np.arange((x.size - n) // hop + 1)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(n), axis=1)) ** 2
    e = power.sum(axis=1)
    power = power[e > e.max() * 1e-3]
    freqs = np.fft.rfftfreq(n, 1 / sr)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(80), mel(min(fmax, sr / 2)), n_mels + 2) / 2595) - 1)
    bank = np.zeros((n_mels, freqs.size))
    for b in range(n_mels):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        bank[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    logmel = np.log(power @ bank.T + EPS)
    return dct(logmel, type=2, norm="ortho", axis=1)[:, 1:n_mfcc + 1].mean(axis=0)


@dataclass(frozen=True)
class Measures:
    sample_rate: int
    duration_s: float
    speech_s: float
    peak: float
    rms_dbfs: float
    clipped_fraction: float
    f0_median: float | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure(x: np.ndarray, sr: int, with_f0: bool = False) -> Measures:
    x = np.asarray(x, dtype=np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    clipped = float(np.mean(np.abs(x) >= 0.999)) if x.size else 0.0
    speech = trim_silence(x, sr, threshold_db=-35.0, keep_s=0.0)
    f0 = None
    if with_f0:
        track = f0_track(x, sr)
        f0 = float(np.median(track)) if track.size >= 5 else None
    return Measures(
        sample_rate=sr,
        duration_s=x.size / sr if sr else 0.0,
        speech_s=speech.size / sr if sr else 0.0,
        peak=peak,
        rms_dbfs=db(active_rms(x, sr)) if x.size else -200.0,
        clipped_fraction=clipped,
        f0_median=f0,
    )


def measure_clip(path: Path) -> dict:
    try:
        x, sr = read_audio(path)
    except Exception as exc:  # noqa: BLE001 - a missing or unreadable file is a finding, not a crash
        return {"file_ok": False, "file_error": f"{type(exc).__name__}: {exc}", "file_sample_rate": None,
                "file_duration_s": None, "rms_dbfs": None, "peak": None, "clipped_fraction": None}
    m = measure(x, sr)
    return {"file_ok": True, "file_error": None, "file_sample_rate": sr, "file_duration_s": round(m.duration_s, 4),
            "rms_dbfs": round(m.rms_dbfs, 2), "peak": round(m.peak, 4), "clipped_fraction": m.clipped_fraction}


def voice_features(paths: list[Path]) -> tuple[np.ndarray | None, float | None]:
    """(mean MFCCs, median F0 in Hz) of the concatenated clips of one speaker."""
    xs, sr = [], None
    for p in paths:
        try:
            x, sr = read_audio(p)
        except Exception:  # noqa: BLE001
            continue
        xs.append(x)
    if not xs or sr is None:
        return None, None
    x = np.concatenate(xs)
    track = f0_track(x, sr)
    return mfcc_mean(x, sr), (float(np.median(track)) if track.size >= 5 else None)


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
