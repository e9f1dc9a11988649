"""`emoforge build` against the OpenAI-compatible stub: faults, no lost or duplicated scenario, thresholds
re-decided from stored judgements without any new call."""

from __future__ import annotations

import json

import pytest

from flows.build import BuildConfig, plan_scenarios, run_build, sections
from flows.judge import decide, judgement_id
from schemas.config.models import parse_models_config
from flows.llm.stub import StubConfig, StubServer
from schemas.records import Judgement
from schemas.taxonomy import load_taxonomy
from warehouse.store import Warehouse

N = 40


def stub_models(url: str, timeout_s: float = 1.0, max_concurrency: int = 32) -> dict:
    ep = [{"base_url": url}]
    return {
        "models": {m: {"endpoints": ep, "timeout_s": timeout_s, "max_concurrency": max_concurrency}
                   for m in ("m1", "m2", "judge")},
        "pairs": [["m1", "m1"], ["m2", "m2"], ["m1", "m2"], ["m2", "m1"]],
        "judges": ["judge"],
        "retry": {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retry_after_s": 0.05},
        "error_rate_stop": 0.95,
    }


def _final_state(home, scenarios):
    wh = Warehouse(home)
    d = wh.query("SELECT id, scenario_id, status, status_reason, decided_by, n_turns, text_hash FROM dialogues").to_pylist()
    t = wh.query("SELECT dialogue_id, count(*) AS n, count(DISTINCT idx) AS k FROM turns GROUP BY 1").to_pylist()
    return d, {r["dialogue_id"]: (r["n"], r["k"]) for r in t}


def test_faulty_stub_build_then_new_thresholds_repeat_no_call(home):
    faults = StubConfig(latency_s=0.005, p_429=0.08, p_500=0.08, p_hang=0.08, p_length=0.08, p_invalid_json=0.1,
                        retry_after_s=0.05, hang_s=2.5, seed=3)
    cfg = BuildConfig()
    with StubServer(faults) as stub:
        mcfg = parse_models_config(stub_models(stub.url))
        summary = run_build(home, cfg, mcfg, n_dialogues=N, seed=0, publish=False, progress=False)
        st = stub.stats()
        faulty = sum(st["outcomes"].get(k, 0) for k in ("429", "500", "hang", "length", "invalid_json"))
        assert faulty / st["requests"] >= 0.30, st["outcomes"]

        scenarios = plan_scenarios(load_taxonomy(cfg.taxonomy), mcfg, sections(cfg)[0], 0, N)
        rows, turns = _final_state(home, scenarios)
        # none lost, none duplicated: exactly one dialogue per scenario
        assert sorted(r["scenario_id"] for r in rows) == sorted(s.id for s in scenarios)
        assert len({r["id"] for r in rows}) == N
        by_scn = {s.id: s for s in scenarios}
        for r in rows:
            assert r["status"] in ("accepted", "rejected", "uncertain", "failed"), r
            if r["status"] == "failed":
                assert r["status_reason"], r
            else:
                assert r["decided_by"] in ("checks", "judge")
                assert turns[r["id"]] == (by_scn[r["scenario_id"]].n_turns,) * 2
        m = summary["metrics"]
        assert m["missing"] == 0 and sum(m["statuses"].values()) == N
        assert sum(v["retries"] for v in m["models"].values()) > 0  # the faults really were retried
        run = Warehouse(home).query(f"SELECT status, metrics_json FROM runs WHERE id = '{summary['run_id']}'").to_pylist()[0]
        assert run["status"] == "finished" and json.loads(run["metrics_json"])["models"]["judge"]["latency_p50"] is not None

        # changing only the judge thresholds: no generation (or any) call, decisions re-taken from stored judgements
        before = stub.stats()["requests"]
        lenient = BuildConfig.model_validate({"judging": {"accept_at": 1.0, "reject_below": 1.0, "max_spread": 4.0,
                                                          "min_safety": 1}})
        s2 = run_build(home, lenient, mcfg, n_dialogues=N, seed=0, publish=False, progress=False)
        assert stub.stats()["requests"] == before
        assert sum(v["calls"] for v in s2["metrics"]["models"].values()) == 0  # generation failures: from the cache
        assert s2["metrics"]["reused_dialogues"] == sum(1 for r in rows if r["text_hash"])
        rows2, _ = _final_state(home, scenarios)

    status2 = {r["id"]: r for r in rows2}
    wh = Warehouse(home)
    js = [Judgement.model_validate({k: v for k, v in r.items() if k in Judgement.model_fields})
          for r in wh.query("SELECT * FROM judgements").to_pylist()]
    jud = sections(lenient)[1]
    checked = 0
    for r in rows:
        new = status2[r["id"]]
        if r["status"] == "failed" and not r["text_hash"]:
            assert new["status"] == "failed"  # generation failure stays failed (its calls are cached)
            continue
        mine = {j.id: j for j in js if j.dialogue_id == r["id"]}
        chk = mine[judgement_id(r["id"], "checks", r["text_hash"])]
        llm = [j for j in mine.values() if j.kind == "llm"]
        if new["decided_by"] == "judge":
            assert new["status"] == decide(chk, llm, jud).status
            checked += 1
        if r["status"] == "uncertain" and all(j.verdict != "reject" for j in llm):
            assert new["status"] == "accepted"  # every score >= 1, spread <= 4: the lenient thresholds accept
    assert checked > 0
    assert sum(1 for r in rows2 if r["status"] == "accepted") > sum(1 for r in rows if r["status"] == "accepted")


def test_error_rate_stops_the_run_early(home):
    from flows.generate import BuildAborted

    cfg = BuildConfig.model_validate({"generation": {"max_error_rate": 0.3, "error_min_dialogues": 5,
                                                     "max_call_failures": 1}})
    with StubServer(StubConfig(p_500=1.0)) as stub:
        m = stub_models(stub.url, max_concurrency=2)
        m["retry"]["max_attempts"] = 1
        mcfg = parse_models_config(m)
        with pytest.raises(BuildAborted, match="stopped early"):
            run_build(home, cfg, mcfg, n_dialogues=N, seed=0, publish=False, progress=False)
        sent = stub.stats()["requests"]
    assert sent < N  # stopped long before every scenario was tried
    run = Warehouse(home).query("SELECT status, metrics_json FROM runs").to_pylist()[0]
    assert run["status"] == "failed" and "stopped early" in json.loads(run["metrics_json"])["error"]


def test_a_build_is_one_flow_run_with_a_task_run_per_stage(home, prefect_api_url):
    """Every stage of a build is a task run of the one `emoforge-build` flow run (queried from the Prefect API)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterFlowRunId

    cfg = BuildConfig.model_validate({"generation": {"shard_size": 4},
                                      "judging": {"accept_at": 1.0, "reject_below": 1.0, "max_spread": 4.0,
                                                  "min_safety": 1}})
    with StubServer(StubConfig(latency_s=0.002, seed=5)) as stub:
        summary = run_build(home, cfg, parse_models_config(stub_models(stub.url, timeout_s=10)), n_dialogues=10,
                            seed=0, publish=True, progress=False)
    run_id = summary["run_id"]

    async def query():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_id])))
            tasks = await client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in runs])))
            flows = {(await client.read_flow(r.flow_id)).name for r in runs}
            return runs, tasks, flows

    runs, tasks, flows = asyncio.run(query())
    assert len(runs) == 1 and flows == {"emoforge-build"} and runs[0].state.is_completed()
    names = [t.name.rsplit("-", 1)[0] for t in tasks]  # Prefect appends "-<suffix>" to a task run's name
    stages = {"plan-scenarios", "record-run-start", "generate-and-judge-shard", "near-duplicates", "run-metrics",
              "speech", "publish", "record-run"}
    assert stages <= set(names), sorted(names)
    assert names.count("generate-and-judge-shard") == 3  # 10 scenarios in slices of 4
    assert all(t.state.is_completed() for t in tasks), [(t.name, t.state.type) for t in tasks]
    # the decision's score is stored on the dialogue (the one definition, flows.judge)
    rows = Warehouse(home).query("SELECT status, decided_by, judge_score FROM dialogues").to_pylist()
    judged = [r for r in rows if r["decided_by"] == "judge"]
    assert judged and all(r["judge_score"] is not None and 1 <= r["judge_score"] <= 5 for r in judged)
