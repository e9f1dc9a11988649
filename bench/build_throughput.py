"""End-to-end build throughput and memory against the project's stub, side by side with the bare client.

    python bench/build_throughput.py [--quick] [--sizes 4000,16000] [--concurrency 64] [--latency-s 0.02]

In one run, against ONE stub server in its own process (fixed latency, no faults):
  bare      : the bare ``AsyncOpenAI`` loop at the build's total concurrency (models x --concurrency);
  build_<N> : the whole ``emoforge build`` path (scenarios, generation, checks, judging, warehouse writes; speech and
              publish off) for N dialogues, each size in a fresh process (its own peak RSS, ``ru_maxrss``) sharing
              one Prefect server, and a separate profiled run at the smallest size (cProfile of the main thread and
              of every shard thread, merged).
  bare_transport : the same loop on the pool's own HTTP path (``flows.llm.transport``, a plain aiohttp POST), so the
              pipeline's cost beyond its transport shows (``ratio_vs_bare_transport``, ``cpu_ratio_vs_bare_transport``).
Reports ``ratio_vs_bare`` (build calls/s at the largest size / bare calls/s; target >= 0.9), ``cpu_ratio_vs_bare``
(the bare loop's CPU per call / the build's, whole build process: on a loaded machine both sides are CPU-starved and
this is the steadier figure), wall time per stage (``phases_s``), calls/s, peak RSS
per size and ``rss_ratio`` (largest / smallest; the issue's ``rss_16k / rss_4k``, target <= 1.25), and the
profile's top items by own time. ``--quick`` uses 250 and 1000 dialogues. Ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("m1", "m2", "judge")
PAIRS = [["m1", "m1"], ["m2", "m2"], ["m1", "m2"], ["m2", "m1"]]


def models_yaml(url: str, concurrency: int) -> dict:
    ep = [{"base_url": url}]
    return {"models": {m: {"endpoints": ep, "max_concurrency": concurrency, "timeout_s": 30} for m in MODELS},
            "pairs": PAIRS, "judges": ["judge"]}


# ---- the child: one build in this process ------------------------------------------------------------------
PHASES = ("plan_scenarios", "load_stored", "run_shard_sync", "apply_near_duplicates", "merge_metrics", "record_run")


def _timed_phases(phases: dict) -> None:
    """Wall time per stage of the build (summed over shards), by wrapping the plain functions ``flows.build`` calls."""
    import flows.build as build
    from bench.stage_timing import time_calls

    time_calls([(build, name, name) for name in PHASES], phases)


def _profiled_shards(profiles: list) -> None:
    """Profile every shard (they run in task-runner threads, which the main thread's profiler does not see) by the
    CPU time of its own thread (``time.thread_time``), so waiting on the network or on a lock costs nothing."""
    import cProfile

    import flows.build as build

    real = build.run_shard_sync

    def profiled(*args, **kwargs):
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()
        try:
            return real(*args, **kwargs)
        finally:
            prof.disable()

    build.run_shard_sync = profiled


def _top(profiles: list, n: int = 15) -> list[dict]:
    import pstats

    st = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        st.add(p)
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]  # (cc, nc, tottime, cumtime, callers)
    return [{"fn": f"{Path(f).name}:{line}({name})", "calls": nc, "own_s": round(tt, 3), "cum_s": round(ct, 3)}
            for (f, line, name), (_cc, nc, tt, ct, _callers) in rows]


def child(args: argparse.Namespace) -> None:
    import cProfile
    import resource

    from flows.build import load_build_config, run_build
    from schemas.config.models import load_models_config

    profiles: list = []
    phases: dict = {}
    _timed_phases(phases)
    if args.profile:
        _profiled_shards(profiles)
        main_prof = cProfile.Profile(time.thread_time)
        profiles.append(main_prof)
        main_prof.enable()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    summary = run_build(Path(args.home), load_build_config(None), load_models_config(Path(args.models)),
                        n_dialogues=args.dialogues, seed=0, publish=False, progress=False, command="bench")
    wall = time.perf_counter() - t0
    if args.profile:
        main_prof.disable()
    m = summary["metrics"]
    calls = int(m.get("gen_calls", 0)) + int(m.get("judge_calls", 0))
    out = {"dialogues": args.dialogues, "calls": calls, "run_wall_s": round(wall, 2), "build_wall_s": m.get("wall_s"),
           "calls_per_s": round(calls / m["wall_s"], 1) if m.get("wall_s") else None,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "statuses": m.get("statuses"), "cpu_s": round(time.process_time() - cpu0, 2),
           "phases_s": {k: round(v, 3) for k, v in phases.items()}}
    if args.profile:
        out["profile_top"] = _top(profiles)
        if args.profile_out:  # the merged profile, for `python -m pstats FILE`
            import pstats

            st = pstats.Stats(profiles[0])
            for p in profiles[1:]:
                st.add(p)
            st.dump_stats(args.profile_out)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(home: Path, models: Path, n: int, env: dict, profile: bool = False, profile_out: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--home", str(home), "--models", str(models), "--dialogues", str(n)]
    if profile:
        cmd.append("--profile")
        if profile_out:
            cmd += ["--profile-out", str(Path(profile_out).resolve())]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"build of {n} dialogues failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


# ---- the bare client ---------------------------------------------------------------------------------------
async def bare_calls_per_s(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(calls/s, CPU ms of this process per call) of the bare loop."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    client = AsyncOpenAI(base_url=url, api_key="no-key", max_retries=0, http_client=DefaultAioHttpClient())
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        msgs = [{"role": "system", "content": "Domain: travel. You are speaker A."},
                {"role": "user", "content": f"Turn {i}. Reply in one line. Emotion: curious"}]
        async with sem:
            await client.chat.completions.create(model="m1", messages=msgs, max_tokens=64)

    await asyncio.gather(*[one(-1 - i) for i in range(min(200, n))])  # warm-up: connections
    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[one(i) for i in range(n)])
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    await client.close()
    return n / dt, 1000 * dcpu / n


async def bare_transport_calls_per_s(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(calls/s, CPU ms per call) of a bare loop over the pool's own HTTP path (``flows.llm.transport``): what the
    pipeline costs beyond its transport."""
    from flows.llm.transport import ChatTransport

    tr = ChatTransport(url, 30.0, max_connections=max(100, 2 * concurrency))
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        msgs = [{"role": "system", "content": "Domain: travel. You are speaker A."},
                {"role": "user", "content": f"Turn {i}. Reply in one line. Emotion: curious"}]
        async with sem:
            await tr.chat({"model": "m1", "messages": msgs, "max_tokens": 64})

    await asyncio.gather(*[one(-1 - i) for i in range(min(200, n))])
    t, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*[one(i) for i in range(n)])
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    await tr.aclose()
    return n / dt, 1000 * dcpu / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="250 and 1000 dialogues")
    ap.add_argument("--sizes", default=None, help="comma-separated dialogue counts (default 4000,16000)")
    ap.add_argument("--concurrency", type=int, default=64, help="max in flight per model (3 models)")
    ap.add_argument("--latency-s", type=float, default=0.02)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the run's homes (under the temporary directory) to inspect")
    ap.add_argument("--profile-out", default=None, help="also write the merged profile (pstats) to this file")
    ap.add_argument("--profile-size", type=int, default=None, help="dialogues of the profiled build (default: the smallest size)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    ap.add_argument("--dialogues", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sizes = sorted(int(s) for s in (args.sizes or ("250,1000" if args.quick else "4000,16000")).split(","))

    import yaml

    from schemas.home import offline_env
    from flows.llm.stub import StubConfig, stub_process
    from flows.schedules import start_server, stop_server

    tmp = Path(tempfile.mkdtemp(prefix="emoforge-bench-build-"))
    offline_env(tmp)
    total = args.concurrency * len(MODELS)
    res: dict = {"bench": "build_throughput", "quick": args.quick, "latency_s": args.latency_s,
                 "concurrency_per_model": args.concurrency, "total_concurrency": total, "cpus": os.cpu_count(),
                 "load_avg_1m": round(os.getloadavg()[0], 2)}
    server, api = start_server(tmp / "prefect", timeout=300)
    try:
        env = dict(os.environ, PREFECT_API_URL=api, PYTHONPATH=str(ROOT), PREFECT_LOGGING_LEVEL="WARNING")
        with stub_process(StubConfig(latency_s=args.latency_s, seed=5)) as url:
            models = tmp / "models.yaml"
            models.write_text(yaml.safe_dump(models_yaml(url, args.concurrency)))
            runs = {}
            for n in sizes:
                runs[n] = run_child(tmp / f"home-{n}", models, n, env)
                print(f"build {n}: {runs[n]}", file=sys.stderr, flush=True)
            bare_n = max(2000, min(runs[sizes[-1]]["calls"], 20000))
            bare_rate, bare_cpu = asyncio.run(bare_calls_per_s(url, bare_n, total))
            res["bare_calls_per_s"], res["bare_cpu_ms_per_call"] = round(bare_rate, 1), round(bare_cpu, 3)
            res["bare_calls"] = bare_n
            lean_rate, lean_cpu = asyncio.run(bare_transport_calls_per_s(url, bare_n, total))
            res["bare_transport_calls_per_s"], res["bare_transport_cpu_ms_per_call"] = round(lean_rate, 1), round(lean_cpu, 3)
            if not args.no_profile:
                n_prof = args.profile_size or sizes[0]
                prof = run_child(tmp / "home-profile", models, n_prof, env, profile=True, profile_out=args.profile_out)
                res["profile_dialogues"] = n_prof
                res["profile_calls_per_s"] = prof["calls_per_s"]
                res["profile_top"] = prof["profile_top"]
    finally:
        stop_server(server)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)  # homes, caches and the Prefect database of the run
    for n, r in runs.items():
        res[f"build_{n}"] = {k: r[k] for k in ("calls", "build_wall_s", "calls_per_s", "peak_rss_mb", "statuses", "cpu_s",
                                               "phases_s")}
    big, small = runs[sizes[-1]], runs[sizes[0]]
    res["calls_per_s"] = big["calls_per_s"]
    res["ratio_vs_bare"] = round(big["calls_per_s"] / res["bare_calls_per_s"], 3)
    # on a loaded machine the processes are CPU-starved: the client-side CPU per call is the steadier comparison
    res["cpu_ms_per_call"] = round(1000 * big["cpu_s"] / big["calls"], 3)
    res["cpu_ratio_vs_bare"] = round(res["bare_cpu_ms_per_call"] / res["cpu_ms_per_call"], 3)
    # the same with the bare loop on the pool's own transport: the pipeline's cost beyond its HTTP path
    res["ratio_vs_bare_transport"] = round(big["calls_per_s"] / res["bare_transport_calls_per_s"], 3)
    res["cpu_ratio_vs_bare_transport"] = round(res["bare_transport_cpu_ms_per_call"] / res["cpu_ms_per_call"], 3)
    res["rss_ratio"] = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    res["rss_sizes"] = [sizes[0], sizes[-1]]
    res["targets"] = {"ratio_vs_bare": ">= 0.9", "rss_ratio": "<= 1.25"}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
