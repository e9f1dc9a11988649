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


def test_a_running_shard_stops_soon_after_the_cancel_and_reports_progress(home):
    tax = load_taxonomy("deepdialogue")
    scns = build_scenarios(tax, GridSpec(pairs=(("m1", "m1"),), min_turns=6, max_turns=6), 8)
    control = RunControl(str(home), "run_cancel")
    with StubServer(StubConfig(latency_s=1.0, seed=2)) as stub:
        mcfg = parse_models_config({"models": {m: {"endpoints": [{"base_url": stub.url}], "timeout_s": 10}
                                               for m in ("m1", "judge")}, "pairs": [["m1", "m1"]], "judges": ["judge"]})
        ctx = ShardContext(home=home, run_id=control.run_id, tax=tax, gen=GenerationConfig(), jud=JudgingConfig(),
                           judges=["judge"], models=["m1", "judge"], progress=control.shard_progress(0),
                           control=control)

        async def main():
            async with LLMPool(mcfg, None) as pool:
                ctx.progress.attach_pool(pool)
                return await run_shard(pool, scns, ctx)

        cancelled_at: list[float] = []

        def cancel():
            cancelled_at.append(time.monotonic())
            control.cancel("test cancel")

        timer = threading.Timer(1.5, cancel)
        timer.start()
        with pytest.raises(BuildInterrupted, match="test cancel"):
            asyncio.run(main())
        stopped = time.monotonic()
        timer.cancel()
    # 6 turns at 1 s a call take > 6 s per dialogue; the shard stopped soon after the cancel (a loaded CI box adds
    # scheduling delay, hence the margin), long before the turns could have finished
    assert cancelled_at and stopped - cancelled_at[0] < 2.5, stopped - cancelled_at[0]
    snaps = control.progress_snapshots()
    assert len(snaps) == 1 and sum(snaps[0]["turns"].values()) > 0  # the shard's progress file, written at the end
    assert snaps[0]["models"]["m1"]["calls"] > 0


def test_stage_cache_key_covers_prompt_schema_model_and_sampling_not_parse():
    """The one LLM stage shape: the call's key changes with the inputs, the schema, the model and the sampling,
    and not with the parser (a new parser repeats no call)."""
    import dataclasses

    from flows.prompts import JUDGE_STAGE, JudgeRow, judge_answer_model

    tax = load_taxonomy("deepdialogue")
    scn = build_scenarios(tax, GridSpec(pairs=(("m1", "m1"),), min_turns=3, max_turns=3), 1)[0]
    cfg = parse_models_config({"models": {m: {"endpoints": [{"base_url": "http://127.0.0.1:9/v1"}]}
                                          for m in ("m1", "m2")}, "pairs": [["m1", "m1"]]})
    pool = LLMPool(cfg, None)

    def key(stage, row, model="m1", sampling=None):
        schema = stage.schema(row)
        rf = {"type": "json_schema", "json_schema": {"name": stage.name, "schema": schema, "strict": True}}
        return pool.request_key(model, stage.prompt(row), sampling=sampling, response_format=rf,
                                template_version=stage.version(row))[0]

    row = JudgeRow(scn, tax, ("Hello there!", "Hi, how are you?", "Fine, thanks."))
    base = key(JUDGE_STAGE, row)
    other_parse = dataclasses.replace(JUDGE_STAGE, parse=lambda r, d: d)
    assert key(other_parse, row) == base
    assert key(JUDGE_STAGE, JudgeRow(scn, tax, row.texts[:2] + ("Great.",))) != base  # inputs
    assert key(JUDGE_STAGE, row, model="m2") != base
    assert key(JUDGE_STAGE, row, sampling={"temperature": 0.1}) != base
    assert key(dataclasses.replace(JUDGE_STAGE, response_format=lambda r: judge_answer_model(4)), row) != base
