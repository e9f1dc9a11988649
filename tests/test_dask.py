"""Scale-out: `emoforge build` on a real local `distributed` cluster of 2 worker processes (prefect-dask) against the
OpenAI-compatible stub server; the shards' results land in the one warehouse, once each, and a rerun repeats no
call."""

from __future__ import annotations

import os
import re

import pytest

from flows.runners import RunnerSpecError, describe_task_runner, make_task_runner, parse_runner_spec


def test_runner_specs():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(make_task_runner(None), ThreadPoolTaskRunner)
    assert make_task_runner("threads:3")._max_workers == 3
    remote = make_task_runner("dask://10.1.2.3:8786")
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.1.2.3:8786"
    local = make_task_runner("dask-local:2")
    assert local.cluster_kwargs["n_workers"] == 2 and local.cluster_kwargs["dashboard_address"] is None
    assert parse_runner_spec("tcp://[::1]:8786") == ("dask", "tcp://[::1]:8786")
    assert describe_task_runner("dask-local:4") == "local Dask cluster of 4 worker processes"
    for bad, why in (("dask://nohost", "HOST:PORT"), ("dask-local:0", "between 1 and 256"), ("threads:x", "positive"),
                     ("spark://x:1", "unknown task runner")):
        with pytest.raises(RunnerSpecError, match=why):
            make_task_runner(bad)


def test_build_on_a_two_worker_dask_cluster(home, monkeypatch):
    import json

    from flows.build import BuildConfig, plan_scenarios, run_build, sections
    from flows.generate import dialogue_id
    from schemas.config.models import parse_models_config
    from flows.llm.stub import StubConfig, StubServer
    from schemas.records import Turn
    from schemas.taxonomy import load_taxonomy
    from warehouse.releases import verify_release
    from warehouse.store import Warehouse

    n = 12
    # one bad clip among ~50: at most this share may be quarantined (the default 5% is one dialogue in 20)
    cfg = BuildConfig.model_validate({"generation": {"shard_size": 3, "domains": ["Travel", "Food", "Music"]},
                                      "judging": {"accept_at": 1.0, "reject_below": 1.0, "max_spread": 4.0,
                                                  "min_safety": 1},
                                      "publish": {"max_quarantine_share": 0.25}})
    with StubServer(StubConfig(latency_s=0.002, seed=5)) as stub:
        ep = [{"base_url": stub.url}]
        mcfg = parse_models_config({
            "models": {m: {"endpoints": ep, "timeout_s": 10} for m in ("m1", "m2", "judge")},
            "pairs": [["m1", "m2"], ["m2", "m1"]], "judges": ["judge"]})
        scenarios = plan_scenarios(load_taxonomy(cfg.taxonomy), mcfg, sections(cfg)[0], 0, n)
        bad_dialogue = dialogue_id(scenarios[3])  # accepted by the stub (seed 5); [0..2] end uncertain
        # fault injection: the speech engine renders this turn as silence, whatever the voice (the retry fails too)
        monkeypatch.setenv("EMOFORGE_FAULT", f"silent-clip:{Turn.make_id(bad_dialogue, 1)}")
        summary = run_build(home, cfg, mcfg, n_dialogues=n, seed=0, publish=True, progress=False,
                            task_runner=make_task_runner("dask-local:2"))
        monkeypatch.delenv("EMOFORGE_FAULT")
        calls = stub.stats()["requests"]
        assert calls > 0
        wh = Warehouse(home)

        def state():
            d = wh.query("SELECT id, scenario_id, status, n_turns FROM dialogues ORDER BY id").to_pylist()
            t = wh.query("SELECT dialogue_id, count(*) AS n, count(DISTINCT idx) AS k FROM turns GROUP BY 1").to_pylist()
            j = wh.query("SELECT dialogue_id, judge_id, count(*) AS n FROM judgements WHERE kind = 'llm' "
                         "GROUP BY ALL HAVING count(*) > 1").to_pylist()
            return d, {r["dialogue_id"]: (r["n"], r["k"]) for r in t}, j

        rows, turns, dup_judgements = state()
        # every scenario once, every turn once, one judgement per (dialogue, judge)
        assert sorted(r["scenario_id"] for r in rows) == sorted(s.id for s in scenarios)
        for r in rows:
            assert r["status"] != "failed", r
            assert turns[r["id"]] == (r["n_turns"], r["n_turns"])
        assert dup_judgements == []
        # the shards ran in the cluster's worker processes: store parts are named <time>-<pid>-<rand>
        pids = {int(re.match(r"\d+-(\d+)-", p.name).group(1)) for p in (home / "store" / "turns").glob("*.parquet")}
        assert os.getpid() not in pids and len(pids) == 2, pids
        # the build published a release with its report
        rel = home / "releases" / summary["version"]
        assert verify_release(rel) == [] and (rel / "report" / "index.html").is_file()
        assert "report/index.html" in (rel / "README.md").read_text()
        # the dialogue with the bad clip was re-synthesised once, then left out and named; the rest published
        q = json.loads((rel / "manifest.json").read_text())["quarantine"]
        assert bad_dialogue in q["ids_by_reason"].get("audio:silent", []) and bad_dialogue in q["resynthesised"], q
        assert bad_dialogue in (rel / "README.md").read_text() and q["quarantined"] <= 3
        released = wh.query(f"SELECT dialogue_id FROM read_parquet('{rel}/data/dialogues/*.parquet')").to_pylist()
        assert bad_dialogue not in {r["dialogue_id"] for r in released}
        assert len(released) == q["selected"] - q["quarantined"]

        # a rerun (here on threads) finds everything the workers stored: no LLM call, nothing duplicated
        again = run_build(home, cfg, mcfg, n_dialogues=n, seed=0, publish=False, progress=False)
        assert stub.stats()["requests"] == calls
        assert again["metrics"]["gen_calls"] == 0 and again["metrics"]["reused_dialogues"] == n
        assert state()[0] == rows


def test_workers_see_the_home_under_another_path(tmp_path):
    """Hosts mount the shared home at their own paths: the scheduler uses one, the workers (EMOFORGE_WORKER_HOME)
    another (here a symlink); the shards land in the one home (a worker on another home: test_relocation)."""
    from flows.build import BuildConfig, run_build
    from schemas.config.models import parse_models_config
    from flows.llm.stub import StubConfig, StubServer
    from warehouse.store import Warehouse

    home = tmp_path / "scheduler-view" / "home"
    home.mkdir(parents=True)
    alias = tmp_path / "worker-mount" / "emoforge"
    alias.parent.mkdir()
    alias.symlink_to(home)
    cfg = BuildConfig.model_validate({"generation": {"shard_size": 2, "domains": ["Travel", "Food"]},
                                      "judging": {"accept_at": 1.0, "reject_below": 1.0, "max_spread": 4.0,
                                                  "min_safety": 1}})
    runner = make_task_runner("dask-local:2")
    runner.cluster_kwargs = {**runner.cluster_kwargs, "env": {"EMOFORGE_WORKER_HOME": str(alias)}}
    with StubServer(StubConfig(latency_s=0.002, seed=6)) as stub:
        ep = [{"base_url": stub.url}]
        mcfg = parse_models_config({"models": {m: {"endpoints": ep, "timeout_s": 10} for m in ("m1", "m2", "judge")},
                                    "pairs": [["m1", "m2"]], "judges": ["judge"]})
        summary = run_build(home, cfg, mcfg, n_dialogues=4, seed=0, publish=False, progress=False, task_runner=runner)
    assert summary["metrics"]["worker_homes"] == [str(alias)]  # every shard used the worker's own path
    assert summary["metrics"]["missing"] == 0 and Warehouse(home).count("dialogues") == 4
    pids = {int(re.match(r"\d+-(\d+)-", p.name).group(1)) for p in (home / "store" / "turns").glob("*.parquet")}
    assert os.getpid() not in pids  # written by the worker processes, through their path
