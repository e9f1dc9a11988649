"""Overlap of generation and judging inside a build shard, against the stub (no cache, no Prefect start-up).

Measured in one process, same stub, same scenarios:
  gen_s     : every dialogue generated (all in flight at once), no judging
  judge_s   : the same dialogues judged (all in flight at once), no generation
  both_s    : the real shard pipeline (flows.generate.run_shard): generation with judging overlapped
  overlap_ratio = both_s / max(gen_s, judge_s)   (1.0 = judging completely hidden; target <= 1.15)

Prints one JSON line. ``--quick`` keeps it under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dialogues", type=int, default=None)
    ap.add_argument("--latency-s", type=float, default=1.0)
    ap.add_argument("--tokens-per-s", type=float, default=400.0, help="stub decode speed per request")
    ap.add_argument("--concurrency", type=int, default=64, help="per model endpoint ceiling")
    args = ap.parse_args()
    n = args.dialogues or (96 if args.quick else 400)

    from schemas.home import offline_env

    tmp = Path(tempfile.mkdtemp(prefix="emoforge-bench-overlap-"))
    offline_env(tmp)
    from schemas.config.generation import GenerationConfig, JudgingConfig
    from flows.generate import ShardContext, dialogue_id, generate_dialogue, run_shard
    from flows.judge import llm_judgement
    from flows.llm.client import LLMPool
    from schemas.config.models import parse_models_config
    from flows.llm.stub import StubConfig, stub_process
    from flows.scenarios import GridSpec, build_scenarios
    from schemas.records import text_hash
    from schemas.taxonomy import load_taxonomy

    tax = load_taxonomy("deepdialogue")
    pairs = (("m1", "m1"), ("m2", "m2"), ("m1", "m2"), ("m2", "m1"))
    scns = build_scenarios(tax, GridSpec(pairs=pairs, min_turns=3, max_turns=8), n)
    gen, jud = GenerationConfig(), JudgingConfig()

    with stub_process(StubConfig(latency_s=args.latency_s, tokens_per_s=args.tokens_per_s, seed=5)) as url:
        ep = [{"base_url": url}]
        mcfg = parse_models_config({
            "models": {m: {"endpoints": ep, "max_concurrency": args.concurrency, "timeout_s": 30}
                       for m in ("m1", "m2", "judge")},
            "pairs": [list(p) for p in pairs], "judges": ["judge"],
        })

        async def gen_only():
            async with LLMPool(mcfg, None) as pool:
                t = time.perf_counter()
                outs = await asyncio.gather(*(generate_dialogue(pool, s, tax, gen) for s in scns))
                return time.perf_counter() - t, outs

        async def judge_only(outs):
            async with LLMPool(mcfg, None) as pool:
                t = time.perf_counter()
                ok = [o for o in outs if o.ok]
                await asyncio.gather(*(llm_judgement(pool, "judge", dialogue_id(o.scenario), o.scenario, tax, o.texts,
                                                     text_hash(o.texts), jud) for o in ok), return_exceptions=True)
                return time.perf_counter() - t, len(ok)

        async def both(home: Path, subset=None):
            ctx = ShardContext(home=home, run_id="bench", tax=tax, gen=gen, jud=jud, judges=["judge"],
                               models=list(mcfg.models))
            async with LLMPool(mcfg, None) as pool:
                t = time.perf_counter()
                summary = await run_shard(pool, subset or scns, ctx)
                return time.perf_counter() - t, summary

        # warm-up: imports, the warehouse writer, connections (not measured)
        asyncio.run(both(tmp / "warmup", scns[:4]))
        gen_s, outs = asyncio.run(gen_only())
        judge_s, n_judged = asyncio.run(judge_only(outs))
        both_s, summary = asyncio.run(both(tmp / "home"))

    print(json.dumps({
        "bench": "build_overlap", "dialogues": n, "judged": n_judged, "gen_s": round(gen_s, 3),
        "judge_s": round(judge_s, 3), "both_s": round(both_s, 3),
        "overlap_ratio": round(both_s / max(gen_s, judge_s), 3),
        "serial_ratio": round(both_s / (gen_s + judge_s), 3),
        "judge_overlap_share": _share(summary),
        "statuses": dict(summary.statuses),
    }))


def _share(summary) -> float | None:
    from flows.build import overlap_share

    return overlap_share(summary.gen_end, summary.judge_busy)


if __name__ == "__main__":
    main()
