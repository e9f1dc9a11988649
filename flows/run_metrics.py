"""A build's metrics: the shards' summaries merged with the final statuses on disk (after the near-duplicate gate):
statuses, acceptance by pair / pair type / domain, calls, retries and rejections by gate, per-model tokens and
latency percentiles, and how much judging overlapped generation. Written to ``runs/<run_id>/metrics.json`` and
the run record."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from flows.checks import NEAR_DUPLICATE
from flows.generate import dialogue_id
from schemas.stats import busy_share_before, histogram_percentile
from flows.scenarios import pair_type
from schemas.records import Scenario
from warehouse.store import Warehouse


_POOL_COUNTS = ("requests", "calls", "cached", "retries", "repairs", "prompt_tokens", "completion_tokens")
_SUMS = ("gen_calls", "judge_calls", "reused_dialogues", "reused_judgements", "judge_errors")
_COUNTERS = ("statuses", "retries", "gates", "judge_busy")


def fold_shards(acc: dict | None, sh: dict) -> dict:
    """One shard's summary folded into the running total (same shape; ``homes`` lists the worker homes), so the
    driver keeps one summary however many shards the run has."""
    if acc is None:
        acc = {"homes": [], "pool_stats": {}, "latencies": {}, "gen_end": None, "wall_s": 0.0}
    for k in _SUMS:
        acc[k] = acc.get(k, 0) + (sh.get(k) or 0)
    for k in _COUNTERS:
        acc[k] = dict(Counter(acc.get(k) or {}) + Counter(sh.get(k) or {}))
    for m, hist in (sh.get("latencies") or {}).items():
        acc["latencies"][m] = dict(Counter(acc["latencies"].get(m) or {}) + Counter(hist))
    for m, st in (sh.get("pool_stats") or {}).items():
        agg = acc["pool_stats"].setdefault(m, {"errors": {}, "attempt_errors": {}})
        for k in _POOL_COUNTS:
            agg[k] = agg.get(k, 0) + (st.get(k, 0) or 0)
        for k in ("errors", "attempt_errors"):
            agg[k] = dict(Counter(agg[k]) + Counter(st.get(k) or {}))
    if sh.get("gen_end") is not None:
        acc["gen_end"] = max(acc["gen_end"] or 0.0, sh["gen_end"])
    if sh.get("home") and sh["home"] not in acc["homes"]:
        acc["homes"].append(sh["home"])
    acc["wall_s"] = max(acc["wall_s"], sh.get("wall_s") or 0.0)
    return acc


def merge_metrics(shards: list[dict], home: Path, scenarios: Sequence[Scenario], wall_s: float,
                  near_dups: dict[str, str]) -> dict:
    models: dict[str, dict] = {}
    lat: dict[str, Counter] = defaultdict(Counter)
    for sh in shards:
        for m, s in (sh.get("pool_stats") or {}).items():
            agg = models.setdefault(m, Counter())
            for k in _POOL_COUNTS:
                agg[k] += s.get(k, 0) or 0
            for k, v in (s.get("errors") or {}).items():
                agg[f"errors.{k}"] += v
            for k, v in (s.get("attempt_errors") or {}).items():
                agg[f"attempt_errors.{k}"] += v
        for m, hist in (sh.get("latencies") or {}).items():
            lat[m].update(hist)
    per_model = {}
    for m, agg in models.items():
        d = {k: v for k, v in agg.items() if "." not in k}
        d["errors"] = {k.split(".", 1)[1]: v for k, v in agg.items() if k.startswith("errors.")}
        d["attempt_errors"] = {k.split(".", 1)[1]: v for k, v in agg.items() if k.startswith("attempt_errors.")}
        d["latency_p50"], d["latency_p90"], d["latency_p99"] = (histogram_percentile(lat[m], p, 4)
                                                            for p in (0.5, 0.9, 0.99))
        d["tokens_per_s_wall"] = round(d["completion_tokens"] / wall_s, 2) if wall_s > 0 else None
        per_model[m] = d
    # final statuses from disk (after the near-duplicate gate)
    wh = Warehouse(home)
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": [dialogue_id(s) for s in scenarios]}))
        rows = con.sql("SELECT id, domain, model_a, model_b, status FROM dialogues WHERE id IN (SELECT id FROM want)"
                       ).to_arrow_table().to_pylist()
    finally:
        con.close()

    def rate(group: dict[str, Counter]) -> dict:
        out = {}
        for k, c in sorted(group.items()):
            n = sum(c.values())
            out[k] = {"n": n, **dict(c), "acceptance": round(c["accepted"] / n, 4) if n else None}
        return out

    by_pair: dict[str, Counter] = defaultdict(Counter)
    by_domain: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    statuses: Counter = Counter()
    for r in rows:
        statuses[r["status"]] += 1
        by_pair[f"{r['model_a']}|{r['model_b']}"][r["status"]] += 1
        by_domain[r["domain"]][r["status"]] += 1
        by_type[pair_type(r["model_a"], r["model_b"])][r["status"]] += 1
    retries, gates = Counter(), Counter()
    for sh in shards:
        retries.update(sh.get("retries") or {})
        gates.update(sh.get("gates") or {})
    gates[NEAR_DUPLICATE] += len(near_dups)
    gen_ends = [sh["gen_end"] for sh in shards if sh.get("gen_end") is not None]
    judge_busy: Counter = Counter()
    for sh in shards:
        judge_busy.update(sh.get("judge_busy") or {})
    return {
        "n_scenarios": len(scenarios),
        "missing": len(scenarios) - len(rows),
        "statuses": dict(statuses),
        "acceptance": round(statuses["accepted"] / len(rows), 4) if rows else None,
        "gen_calls": sum(sh.get("gen_calls", 0) for sh in shards),
        "judge_calls": sum(sh.get("judge_calls", 0) for sh in shards),
        "reused_dialogues": sum(sh.get("reused_dialogues", 0) for sh in shards),
        "worker_homes": sorted({h for sh in shards for h in (sh.get("homes") or [sh.get("home")]) if h}),
        "reused_judgements": sum(sh.get("reused_judgements", 0) for sh in shards),
        "judge_errors": sum(sh.get("judge_errors", 0) for sh in shards),
        "turn_retries_by_gate": dict(retries),
        "rejections_by_gate": dict(gates),
        "near_duplicates": len(near_dups),
        "models": per_model,
        "acceptance_by_pair": rate(by_pair),
        "acceptance_by_pair_type": rate(by_type),
        "acceptance_by_domain": rate(by_domain),
        "judge_overlap_share": overlap_share(max(gen_ends) if gen_ends else None, judge_busy),
        "wall_s": round(wall_s, 2),
    }


def overlap_share(gen_end: float | None, judge_busy: dict[int, float]) -> float | None:
    """Share of the judging time that ran while some generation was still running (0 = strictly after):
    ``judge_busy`` by slot (:func:`schemas.stats.add_busy`), ``gen_end`` when the last generation ended."""
    return busy_share_before(judge_busy, gen_end)


__all__ = ["fold_shards", "merge_metrics", "overlap_share"]
