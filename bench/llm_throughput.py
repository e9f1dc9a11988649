"""LLM throughput, every figure a ratio measured in this run.

1. calls/s through ``LLMPool`` (AIMD limiter, retries machinery, SQLite call cache on) ÷ calls/s of a bare
   ``AsyncOpenAI`` loop (same concurrency, no cache) against the same stub server running in its own process.
   The bare loop is run with the default httpx transport and with the aiohttp transport; the ratio is taken
   against the faster of the two. Rounds interleaved (order rotated), the three clients warm throughout; the
   median of the per-round ratios is reported with its interquartile range.
2. embedded llama.cpp (SmolLM2-135M): generated tokens/s through ``LLMPool`` with parallel requests (the server's
   parallel slots batch them) ÷ single-stream tokens/s of the same server.
3. ``overlap_ratio``: generation+judging wall time ÷ the longer of the two alone — measured by the generation
   stage's ``bench/build_overlap.py`` (run here as a subprocess; null when it is absent or fails).

    .venv/bin/python bench/llm_throughput.py [--quick] [--skip-client] [--skip-embedded] [--skip-overlap]

Ends with one JSON line: calls_per_s, ratio_vs_bare_client, embedded_ratio_vs_single_stream, overlap_ratio, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from schemas.home import offline_env  # noqa: E402

# the generation/judging stage measures its overlap in its own script (one JSON line with "overlap_ratio");
# this bench runs it and carries the figure in its own JSON line
OVERLAP_BENCH = "bench/build_overlap.py"


def _messages(i: int, tag: str = "") -> list[dict]:
    return [{"role": "system", "content": "Domain: travel. You are speaker A."},
            {"role": "user", "content": f"Turn {i}{tag}. Reply in one line. Emotion: curious"}]


class _Bare:
    """A bare ``AsyncOpenAI`` loop (no cache, no limiter beyond a semaphore) over one transport."""

    def __init__(self, url: str, concurrency: int, transport: str):
        from openai import AsyncOpenAI, DefaultAioHttpClient

        kw = {"http_client": DefaultAioHttpClient()} if transport == "aiohttp" else {}
        self.client = AsyncOpenAI(base_url=url, api_key="no-key", max_retries=0, **kw)
        self.sem = asyncio.Semaphore(concurrency)

    async def one(self, i: int, tag: str) -> None:
        async with self.sem:
            await self.client.chat.completions.create(model="stub", messages=_messages(i, tag), max_tokens=64)

    async def close(self) -> None:
        await self.client.close()


async def _rate(call, n: int, tag: str) -> float:
    t = time.perf_counter()
    await asyncio.gather(*[call(i, tag) for i in range(n)])
    return n / (time.perf_counter() - t)


async def _client_rounds(url: str, n: int, rounds: int, concurrency: int, cache_dir: str) -> dict:
    """``rounds`` rounds of n calls each through the two bare loops and the pool, the three kept open (warm) for the
    whole run; the order rotates each round, so that a burst of load from other jobs does not always hit the same
    one. Each round gives one ratio pool ÷ the faster bare loop of that round; the median is reported."""
    from flows.llm.cache import CallCache
    from flows.llm.client import LLMPool
    from schemas.config.models import parse_models_config

    cfg = parse_models_config({"models": {"stub": {"endpoints": [{"base_url": url}], "max_concurrency": concurrency,
                                                   "sampling": {"max_tokens": 64}}}})
    bare = {t: _Bare(url, concurrency, t) for t in ("httpx", "aiohttp")}
    rates: dict[str, list[float]] = {"httpx": [], "aiohttp": [], "pool": []}
    async with LLMPool(cfg, CallCache(cache_dir)) as pool:

        async def pool_one(i: int, tag: str) -> None:
            await pool.chat("stub", _messages(i, tag), template_version="bench")

        calls = {"httpx": bare["httpx"].one, "aiohttp": bare["aiohttp"].one, "pool": pool_one}
        for name, call in calls.items():  # warm-up: connections, imports, the cache file (not measured)
            await _rate(call, min(100, n), f"warm-{name}")
        order = list(calls)
        for r in range(rounds):
            for name in order[r % 3:] + order[:r % 3]:
                rates[name].append(await _rate(calls[name], n, f"r{r}"))
        st = pool.stats()["stub"]
    for b in bare.values():
        await b.close()
    return {"rates": rates, "stats": st}


def bench_client(quick: bool, concurrency: int) -> dict:
    from flows.llm.stub import StubConfig, stub_process

    # quick: 15 rounds of 200 calls (was 3 of 600, whose single ratios ranged 0.54-1.56 on a loaded machine)
    n, rounds = (200, 15) if quick else (1000, 15)
    with stub_process(StubConfig(latency_s=0.0)) as url, tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(_client_rounds(url, n, rounds, concurrency, f"{tmp}/cache"))
    rates, st = out["rates"], out["stats"]
    ratios = [p / max(h, a) for p, h, a in zip(rates["pool"], rates["httpx"], rates["aiohttp"])]
    med = statistics.median
    q = statistics.quantiles(ratios, n=4)
    return {
        "calls_per_s": round(med(rates["pool"]), 1),
        "bare_httpx_calls_per_s": round(med(rates["httpx"]), 1),
        "bare_aiohttp_calls_per_s": round(med(rates["aiohttp"]), 1),
        "ratio_vs_bare_client": round(med(ratios), 3),
        "ratio_vs_bare_client_iqr": [round(q[0], 3), round(q[2], 3)],
        "ratio_vs_bare_client_rounds": [round(x, 3) for x in ratios],
        "ratio_vs_bare_default_client": round(med(rates["pool"]) / med(rates["httpx"]), 3),
        "client_calls": n,
        "client_rounds": rounds,
        "client_concurrency": concurrency,
        "pool_final_limit": st["endpoints"][0]["limit"],
        "pool_latency_p50_s": st["latency_p50"],
    }


async def _embedded_rate(cfg, model: str, concurrency: int, seconds: float, max_tokens: int, tag: str,
                         min_done: int = 1) -> tuple[float, int]:
    """Completion tokens/s through LLMPool with `concurrency` requests in flight, over a fixed time box (only
    completed requests count)."""
    from flows.llm.client import LLMCallError, LLMPool

    spec = cfg.models[model]
    spec.max_concurrency = concurrency
    spec.initial_concurrency = concurrency
    async with LLMPool(cfg, None) as pool:
        counter = iter(range(10**9))

        async def worker() -> None:
            while True:
                i = next(counter)
                msgs = [{"role": "user", "content": f"Write one sentence about topic number {i} ({tag})."}]
                try:
                    await pool.chat(model, msgs, max_tokens=max_tokens, sampling={"temperature": 0.7})
                except LLMCallError as exc:
                    if exc.kind != "length":
                        raise

        # a fixed time box; requests still running at its end are cancelled and do not count
        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        t = time.perf_counter()
        # the time box, stretched (up to 6x) until at least `min_done` requests completed on a busy machine
        while True:
            await asyncio.sleep(0.1)
            dt = time.perf_counter() - t
            if dt >= seconds * 6 or (dt >= seconds and pool.stats()[model]["calls"] >= min_done):
                break
        for task in tasks:
            task.cancel()
        res = await asyncio.gather(*tasks, return_exceptions=True)
        for r in res:
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                raise r
        st = pool.stats()[model]
    return st["completion_tokens"] / dt, st["calls"]


def bench_embedded(quick: bool, home: Path) -> dict:
    from schemas.config.models import parse_models_config
    from flows.llm.embedded import embedded_servers

    parallel = 4
    cfg = parse_models_config({"models": {"smollm2-135m": {"embedded": "smollm2-135m"}},
                               "embedded_parallel": parallel, "embedded_ctx_per_slot": 512})
    seconds = 8.0 if quick else 40.0
    with embedded_servers(cfg, home) as live:
        asyncio.run(_embedded_rate(live, "smollm2-135m", 1, 3.0, 8, "warm"))
        single, n1 = asyncio.run(_embedded_rate(live, "smollm2-135m", 1, seconds, 16, "single", 2))
        time.sleep(1.0)  # let a request cancelled at the end of the time box leave the server
        multi, n2 = asyncio.run(_embedded_rate(live, "smollm2-135m", parallel, seconds, 16, "parallel", parallel))
    return {
        "embedded_single_stream_tokens_per_s": round(single, 1),
        "embedded_parallel_tokens_per_s": round(multi, 1),
        "embedded_ratio_vs_single_stream": round(multi / single, 3) if single else None,
        "embedded_requests": [n1, n2],
        "embedded_parallel_slots": parallel,
    }


def overlap_figure(quick: bool) -> dict:
    """Run the generation stage's own overlap bench (``OVERLAP_BENCH``) and take its ``overlap_ratio``."""

    script = ROOT / OVERLAP_BENCH
    if not script.is_file():
        return {"overlap_ratio": None}
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"overlap bench failed ({proc.returncode}): {proc.stderr[-1500:]}", file=sys.stderr)
        return {"overlap_ratio": None}
    data = json.loads(lines[-1])
    return {"overlap_ratio": data.get("overlap_ratio"),
            "overlap_detail": {k: v for k, v in data.items() if k != "overlap_ratio"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="under a minute")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--skip-client", action="store_true")
    ap.add_argument("--skip-overlap", action="store_true")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="emoforge-bench-") as tmp:
        home = Path(tmp) / "home"
        offline_env(home)
        t0 = time.perf_counter()
        result: dict = {"bench": "llm_throughput", "quick": ns.quick}
        if not ns.skip_client:
            result.update(bench_client(ns.quick, ns.concurrency))
            print(f"client: {result}", file=sys.stderr)
        if not ns.skip_embedded:
            result.update(bench_embedded(ns.quick, home))
        else:
            result["embedded_ratio_vs_single_stream"] = None
        result.update({"overlap_ratio": None} if ns.skip_overlap else overlap_figure(ns.quick))
        result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
