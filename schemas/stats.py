"""Summary statistics with one definition: the percentile (linear interpolation between closest ranks, numpy's
default) and the quantile summary the report, the build metrics and the LLM client print."""

from __future__ import annotations

import math
import statistics
from typing import Iterable


def percentile(values: Iterable[float], p: float, ndigits: int | None = None) -> float | None:
    """The ``p``-quantile (0..1) of ``values``, interpolated linearly between closest ranks; None when empty."""
    vs = sorted(float(v) for v in values)
    if not vs:
        return None
    k = (len(vs) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    out = vs[lo] + (vs[hi] - vs[lo]) * (k - lo)
    return round(out, ndigits) if ndigits is not None else out


def quantiles(values: Iterable[float]) -> dict[str, float | None]:
    """n, mean, median, p10, p90, min and max of ``values`` (None for each when empty)."""
    vs = sorted(float(v) for v in values)
    if not vs:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    return {"n": len(vs), "mean": round(statistics.fmean(vs), 4), "median": percentile(vs, 0.5),
            "p10": percentile(vs, 0.1), "p90": percentile(vs, 0.9), "min": vs[0], "max": vs[-1]}
