"""Summary statistics with one definition: the percentile (linear interpolation between closest ranks, numpy's
default) and the quantile summary the report, the build metrics and the LLM client print."""

from __future__ import annotations

import math
import statistics
from typing import Iterable

import numpy as np


def percentile(values: Iterable[float], p: float, ndigits: int | None = None) -> float | None:
    """The ``p``-quantile (0..1) of ``values``, interpolated linearly between closest ranks; None when empty."""
    vs = _sorted(values)
    if not vs.size:
        return None
    out = _percentile_sorted(vs, p)
    return round(out, ndigits) if ndigits is not None else out


def _sorted(values: Iterable[float]) -> np.ndarray:
    """``values`` as sorted float64 (a NumPy array is taken as it is: a release's columns have 10^5 values)."""
    if isinstance(values, np.ndarray):
        return np.sort(values.astype(np.float64, copy=False))
    return np.sort(np.fromiter((float(v) for v in values), dtype=np.float64))


def _percentile_sorted(vs: np.ndarray, p: float) -> float:
    k = (len(vs) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return float(vs[lo] + (vs[hi] - vs[lo]) * (k - lo))


def quantiles(values: Iterable[float]) -> dict[str, float | None]:
    """n, mean, median, p10, p90, min and max of ``values`` (None for each when empty)."""
    vs = _sorted(values)
    if not vs.size:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    return {"n": int(vs.size), "mean": round(statistics.fmean(vs), 4), "median": _percentile_sorted(vs, 0.5),
            "p10": _percentile_sorted(vs, 0.1), "p90": _percentile_sorted(vs, 0.9), "min": float(vs[0]),
            "max": float(vs[-1])}


# ---- bounded summaries (a build's shards report these instead of one value per call or per dialogue) -----------
HIST_FLOOR = 1e-4  # values below this (seconds) share the first bucket
HIST_BASE = 1.02  # relative bucket width: a percentile read from the histogram is within 1 % of the exact one


def log_histogram(values: Iterable[float]) -> dict[int, int]:
    """Counts of ``values`` in logarithmic buckets (``HIST_BASE`` apart from ``HIST_FLOOR``): mergeable by adding
    counts, and a few hundred entries at most whatever the number of values."""
    out: dict[int, int] = {}
    scale = math.log(HIST_BASE)
    for v in values:
        k = max(0, int(math.log(max(float(v), HIST_FLOOR) / HIST_FLOOR) / scale))
        out[k] = out.get(k, 0) + 1
    return out


def histogram_percentile(hist: dict[int, int], p: float, ndigits: int | None = None) -> float | None:
    """The ``p``-quantile of the values summarised by :func:`log_histogram` (the geometric middle of the bucket that
    holds the nearest rank); None when empty."""
    n = sum(hist.values())
    if not n:
        return None
    rank = min(n - 1, max(0, round((n - 1) * p)))
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen > rank:
            out = HIST_FLOOR * HIST_BASE ** (k + 0.5)
            return round(out, ndigits) if ndigits is not None else out
    return None  # pragma: no cover - the loop always reaches the rank


def add_busy(slots: dict[int, float], start: float, end: float, width: float = 1.0) -> None:
    """Add the busy interval [start, end) to ``slots`` (slot index -> busy seconds in that ``width``-second slot)."""
    k = math.floor(start / width)
    while start < end:
        slot_end = (k + 1) * width
        slots[k] = slots.get(k, 0.0) + min(end, slot_end) - start
        start, k = slot_end, k + 1


def busy_share_before(slots: dict[int, float], until: float | None, width: float = 1.0) -> float | None:
    """Share of the busy time in ``slots`` (:func:`add_busy`) that lies before ``until`` (busy time spread evenly
    within a slot); None when nothing was busy."""
    total = sum(slots.values())
    if until is None or total <= 0:
        return None
    before = sum(b * min(1.0, max(0.0, (until - k * width) / width)) for k, b in slots.items())
    return round(before / total, 4)
