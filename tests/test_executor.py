"""The executor's run control: cancellation and progress go through files in the run directory, so shards in
threads and in other processes (Dask workers) see the same state; no process global."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import pytest

from schemas.config.generation import GenerationConfig, JudgingConfig
from flows.executor import RunControl, shard_slices
from flows.generate import BuildInterrupted, ShardContext, run_shard
from flows.llm.client import LLMPool
from schemas.config.models import parse_models_config
from flows.llm.stub import StubConfig, StubServer
from flows.scenarios import GridSpec, build_scenarios
from schemas.taxonomy import load_taxonomy


def test_shard_slices_cover_every_item_once_in_order():
    items = list(range(10))
    sl = shard_slices(items, 4)
    assert sl == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="shard size"):
        shard_slices(items, 0)


def test_cancel_file_is_seen_by_another_process_copy_and_keeps_the_first_reason(home):
    control = RunControl(str(home), "run_x")
    other = pickle.loads(pickle.dumps(control))  # what a Dask worker receives
    assert other.cancelled() is None
    control.cancel("first")
    control.cancel("second")
    assert other.cancelled() == "first"


def test_a_running_shard_stops_within_a_second_of_the_cancel_and_reports_progress(home):
    tax = load_taxonomy("deepdialogue")
    scns = build_scenarios(tax, GridSpec(pairs=(("m1", "m1"),), min_turns=6, max_turns=6), 8)
    control = RunControl(str(home), "run_cancel")
    with StubServer(StubConfig(latency_s=0.3, seed=2)) as stub:
        mcfg = parse_models_config({"models": {m: {"endpoints": [{"base_url": stub.url}], "timeout_s": 10}
                                               for m in ("m1", "judge")}, "pairs": [["m1", "m1"]], "judges": ["judge"]})
        ctx = ShardContext(home=home, run_id=control.run_id, tax=tax, gen=GenerationConfig(), jud=JudgingConfig(),
                           judges=["judge"], models=["m1", "judge"], progress=control.shard_progress(0),
                           control=control)

        async def main():
            async with LLMPool(mcfg, None) as pool:
                ctx.progress.attach_pool(pool)
                return await run_shard(pool, scns, ctx)

        timer = threading.Timer(1.5, control.cancel, args=("test cancel",))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(BuildInterrupted, match="test cancel"):
            asyncio.run(main())
        took = time.monotonic() - t0
        timer.cancel()
    # 8 dialogues x 6 turns at 0.3 s a call would take > 2 s; the cancel at 1.5 s stopped it within a second
    assert took < 2.8, took
    snaps = control.progress_snapshots()
    assert len(snaps) == 1 and sum(snaps[0]["turns"].values()) > 0  # the shard's progress file, written at the end
    assert snaps[0]["models"]["m1"]["calls"] > 0
