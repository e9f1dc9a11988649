"""Judge calibration: run the configured LLM judge over human-rated dialogues and report rank correlations.

Data (``../shared/benchdata``): FED (dialogue and turn level), USR (TopicalChat, PersonaChat), GRADE (coherence),
and ESConv (good, test split) vs FailedESConv (rated low). For each set: Spearman's rho between the judge's overall
score (``flows.judge.judge_score``) and the mean human overall score, and per rubric criterion where the set has a
matching human rating (coherence, naturalness). For ESConv: AUC of the judge score, good vs failed. Finally a
threshold hint: the judge score that best separates the humans' top third from their bottom third (Youden's J),
to set ``judging.accept_at`` / ``reject_below``.

    .venv/bin/python bench/judge_calibration.py --quick            # a few items per set, under a minute or so
    .venv/bin/python bench/judge_calibration.py --n 100 --models models.yaml --judge my-judge

Ends with one JSON line. Judge calls go through the LLM cache in ``--home`` (a rerun costs nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from warehouse.agreement import spearman  # noqa: E402

BENCH = ROOT.parent / "shared" / "benchdata"
MAX_TURNS = 10
MAX_WORDS = 60


def _mean(xs) -> float | None:
    vals = [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return statistics.fmean(vals) if vals else None


def _clip(texts: list[str]) -> list[str]:
    out = [" ".join(t.split()[:MAX_WORDS]) for t in texts if t and t.strip()]
    return out[-MAX_TURNS:]


def _strip_speaker(line: str) -> str:
    for p in ("User:", "System:"):
        if line.startswith(p):
            return line[len(p):].strip()
    return line.strip()


def load_sets(bench: Path) -> dict[str, list[dict]]:
    """name -> items {id, texts, human: {overall, coherence?, naturalness?}}."""
    sets: dict[str, list[dict]] = {}
    fed = json.loads((bench / "dialog_quality/fed/fed_data.json").read_text())
    dial, turn = [], []
    for i, x in enumerate(fed):
        ctx = [_strip_speaker(s) for s in x["context"].split("\n")]
        a = x["annotations"]
        if "response" in x:
            turn.append({"id": f"fed-turn-{i}", "texts": _clip(ctx + [_strip_speaker(x["response"])]),
                         "human": {"overall": _mean(a.get("Overall", [])), "coherence": _mean(a.get("Relevant", [])),
                                   "naturalness": _mean(a.get("Fluent", []))}})
        else:
            dial.append({"id": f"fed-dialog-{i}", "texts": _clip(ctx),
                         "human": {"overall": _mean(a.get("Overall", [])), "coherence": _mean(a.get("Coherent", []))}})
    sets["fed-dialog"], sets["fed-turn"] = dial, turn
    for name, fname in (("usr-topicalchat", "tc_usr_data.json"), ("usr-personachat", "pc_usr_data.json")):
        items = []
        for i, x in enumerate(json.loads((bench / "dialog_quality/usr" / fname).read_text())):
            ctx = [s for s in x["context"].split("\n") if s.strip()]
            for j, r in enumerate(x["responses"]):
                items.append({"id": f"{name}-{i}-{j}", "texts": _clip(ctx + [r["response"]]),
                              "human": {"overall": _mean(r.get("Overall", [])), "coherence": _mean(r.get("Maintains Context", [])),
                                        "naturalness": _mean(r.get("Natural", []))}})
        sets[name] = items
    grade = []
    for i, x in enumerate(json.loads((bench / "dialog_quality/grade/human_judgement.json").read_text())):
        scores = json.loads(x["HumanScores"]) if isinstance(x["HumanScores"], str) else x["HumanScores"]
        m = _mean(scores)
        grade.append({"id": f"grade-{i}", "texts": _clip(x["Context"].split("|||") + [x["Response"]]),
                      "human": {"overall": m, "coherence": m}})
    sets["grade"] = grade
    esc = []
    for i, line in enumerate((bench / "esconv/test.jsonl").read_text().splitlines()):
        x = json.loads(line)
        esc.append({"id": f"esconv-good-{i}", "texts": _clip([t["text"] for t in x["dialog"]][:MAX_TURNS]), "human": {"overall": 1.0}})
    for i, x in enumerate(json.loads((bench / "esconv/FailedESConv.json").read_text())):
        esc.append({"id": f"esconv-failed-{i}", "texts": _clip([t["content"] for t in x["dialog"]][:MAX_TURNS]), "human": {"overall": 0.0}})
    sets["esconv-vs-failed"] = esc
    return {k: [it for it in v if it["human"]["overall"] is not None and len(it["texts"]) >= 2] for k, v in sets.items()}


def sample(items: list[dict], n: int, seed: int, balanced: bool = False) -> list[dict]:
    rng = random.Random(seed)
    if balanced:  # equal numbers of each human class (ESConv good / failed)
        groups: dict[float, list[dict]] = {}
        for it in items:
            groups.setdefault(it["human"]["overall"], []).append(it)
        per = max(1, n // len(groups))
        return [it for g in groups.values() for it in rng.sample(g, min(per, len(g)))]
    return rng.sample(items, min(n, len(items)))


def auc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def threshold_hint(pairs: list[tuple[float, float]]) -> dict | None:
    """Judge score that best separates the humans' top third from their bottom third (Youden's J)."""
    if len(pairs) < 6:
        return None
    hs = sorted(h for _, h in pairs)
    lo, hi = hs[len(hs) // 3], hs[(2 * len(hs)) // 3]
    good = [j for j, h in pairs if h >= hi and h > lo]
    bad = [j for j, h in pairs if h <= lo and h < hi]
    if not good or not bad:
        return None
    best = None
    for t in sorted({j for j, _ in pairs}):
        tpr = sum(g >= t for g in good) / len(good)
        fpr = sum(b >= t for b in bad) / len(bad)
        if best is None or tpr - fpr > best[1]:
            best = (t, tpr - fpr)
    return {"judge_score": round(best[0], 3), "youden_j": round(best[1], 3), "n_good": len(good), "n_bad": len(bad)}


async def judge_all(pool, judge: str, tax, items: list[dict], progress, budget_s: float | None = None) -> list[dict]:
    """Judge every item; items still running when ``budget_s`` runs out are cancelled and reported as such."""
    from schemas.config.generation import JudgingConfig
    from flows.judge import judge_score, llm_judgement
    from schemas.records import Scenario, text_hash

    cfg = JudgingConfig()
    domain = tax.domains[0].name

    async def one(it: dict) -> dict:
        n = len(it["texts"])
        scen = Scenario(id=f"calib-{it['id']}", domain=domain, model_a="human", model_b="human", n_turns=n,
                        emotions=["(not given: judge the other aspects)"] * n, seed=0, index=0, taxonomy=tax.name)
        try:
            j, _ = await llm_judgement(pool, judge, it["id"], scen, tax, it["texts"], text_hash(it["texts"]), cfg)
            out = {"ok": True, "score": judge_score(j), "coherence": j.coherence, "naturalness": j.naturalness}
        except Exception as exc:  # a judge that fails on an item is counted, not fatal
            out = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
        progress()
        return it | {"judge": out}

    tasks = [asyncio.ensure_future(one(it)) for it in items]
    done, pending = await asyncio.wait(tasks, timeout=budget_s)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return [t.result() if t in done else it | {"judge": {"ok": False, "error": "time budget ran out", "budget": True}}
            for t, it in zip(tasks, items)]


def _domain_taxonomy(tax):
    """The taxonomy with a neutral conversation domain first (the calibration sets are open chit-chat/support)."""
    from schemas.taxonomy import Domain

    extra = Domain(name="Open conversation", description="everyday chit-chat and emotional support between two people",
                   emotions=[tax.emotions[0].name])
    return tax.model_copy(update={"domains": [extra, *tax.domains]})


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 items per set, FED/GRADE/ESConv only (about a minute with the tiny embedded judge on an idle machine)")
    ap.add_argument("--n", type=int, default=60, help="items per set")
    ap.add_argument("--sets", nargs="*", help="subset of: fed-dialog fed-turn usr-topicalchat usr-personachat grade esconv-vs-failed")
    ap.add_argument("--models", type=Path, help="models config (default: the embedded default)")
    ap.add_argument("--judge", help="judge model name (default: the config's first judge)")
    ap.add_argument("--home", type=Path, default=ROOT / ".cache" / "bench-home", help="emoforge home (LLM cache)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop judging after this many seconds (unfinished items are reported; --quick: 30)")
    ap.add_argument("--bench-dir", type=Path, default=BENCH)
    a = ap.parse_args(argv)
    import signal

    # a kill (timeout, CI) unwinds normally, so the embedded llama.cpp servers are stopped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    from schemas.home import offline_env

    offline_env(a.home)
    if not a.bench_dir.is_dir():
        sys.exit(f"benchmark data not found at {a.bench_dir} (../shared/benchdata)")
    try:
        from flows.llm.cache import CallCache
        from flows.llm.client import LLMPool
        from schemas.config.models import load_models_config
    except ImportError as exc:
        sys.exit(f"the LLM layer (flows/llm) is not available: {exc}")
    from rich.progress import Progress

    from schemas.taxonomy import load_taxonomy

    n = 2 if a.quick else a.n
    budget = a.budget_s if a.budget_s is not None else (30.0 if a.quick else None)
    sets = load_sets(a.bench_dir)
    if a.quick and not a.sets:
        a.sets = ["fed-dialog", "grade", "esconv-vs-failed"]
    if a.sets:
        unknown = set(a.sets) - set(sets)
        if unknown:
            sys.exit(f"unknown set(s) {sorted(unknown)}; known: {sorted(sets)}")
        sets = {k: v for k, v in sets.items() if k in a.sets}
    chosen = {k: sample(v, n if k != "esconv-vs-failed" else 2 * n, a.seed, balanced=k == "esconv-vs-failed")
              for k, v in sets.items()}
    mcfg = load_models_config(a.models)
    judge = a.judge or (mcfg.judges[0] if mcfg.judges else next(iter(mcfg.models)))
    if judge not in mcfg.models:
        sys.exit(f"unknown judge {judge!r}; models: {', '.join(mcfg.models)}")
    # only the judge's server is needed
    mcfg = mcfg.model_copy(update={"models": {judge: mcfg.models[judge]}, "pairs": [(judge, judge)], "judges": [judge]})
    tax = _domain_taxonomy(load_taxonomy("deepdialogue"))
    a.home.mkdir(parents=True, exist_ok=True)
    items = [it | {"set": k} for k, v in chosen.items() for it in v]

    t0 = time.perf_counter()

    async def run(cfg) -> list[dict]:
        async with LLMPool(cfg, CallCache.for_home(a.home)) as pool:
            with Progress(transient=True) as prog:
                task = prog.add_task(f"judging with {judge}", total=len(items))
                return await judge_all(pool, judge, tax, items, lambda: prog.advance(task), budget)

    if mcfg.needs_embedded():
        from flows.llm.embedded import embedded_servers

        with embedded_servers(mcfg, a.home) as live:
            t_ready = time.perf_counter()
            results = asyncio.run(run(live))
    else:
        t_ready = time.perf_counter()
        results = asyncio.run(run(mcfg))
    elapsed = time.perf_counter() - t_ready

    report: dict = {"bench": "judge_calibration", "judge": judge, "quick": a.quick, "per_set": {},
                    "startup_s": round(t_ready - t0, 1), "judge_s": round(elapsed, 1)}
    all_pairs: list[tuple[float, float]] = []
    for name in chosen:
        rs = [r for r in results if r["set"] == name]
        ok = [r for r in rs if r["judge"]["ok"]]
        entry = {"n": len(rs), "judged": len(ok)}
        xs = [r["judge"]["score"] for r in ok]
        hs = [r["human"]["overall"] for r in ok]
        rho = spearman(xs, hs) if len(ok) >= 3 else None
        entry["spearman_overall"] = round(rho, 3) if rho is not None else None
        for crit in ("coherence", "naturalness"):
            pairs = [(r["judge"][crit], r["human"].get(crit)) for r in ok
                     if r["judge"].get(crit) is not None and r["human"].get(crit) is not None]
            if len(pairs) >= 3:
                v = spearman([p[0] for p in pairs], [p[1] for p in pairs])
                entry[f"spearman_{crit}"] = round(v, 3) if v is not None else None
        if name == "esconv-vs-failed":
            v = auc([r["judge"]["score"] for r in ok if r["human"]["overall"] == 1.0],
                    [r["judge"]["score"] for r in ok if r["human"]["overall"] == 0.0])
            entry["auc_good_vs_failed"] = round(v, 3) if v is not None else None
        else:
            all_pairs += list(zip(xs, [h / max(hs) if hs and max(hs) else h for h in hs]))
        errors = [r["judge"]["error"] for r in rs if not r["judge"]["ok"] and not r["judge"].get("budget")]
        if errors:
            entry["first_error"] = errors[0]
        report["per_set"][name] = entry
    report["items"] = len(results)
    report["judged"] = sum(r["judge"]["ok"] for r in results)
    report["out_of_time"] = sum(bool(r["judge"].get("budget")) for r in results)
    report["budget_s"] = budget
    report["items_per_s"] = round(len(results) / elapsed, 3) if elapsed > 0 else None
    report["threshold_hint"] = threshold_hint(all_pairs)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
