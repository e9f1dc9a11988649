"""Scheduled jobs against a REAL Prefect server on loopback: a deployment with an interval schedule gets a scheduled
run that completes (it publishes a release from a prepared home); prefect.yaml's deployments register in a process
work pool with their cron schedules; overlapping publishes into one home are serialised or refused cleanly."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from flows.schedules import JobBusy, job_lock, load_specs, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    base = tmp_path_factory.mktemp("prefect-server")
    proc, api = start_server(base / "server-home", timeout=180)
    try:
        yield api
    finally:
        stop_server(proc)


def _client_env(tmp: Path, api: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp / "client-prefect"), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "PREFECT_LOGGING_LEVEL": "INFO", "PYTHONPATH": str(ROOT)})
    return env


def _synthetic_home(home: Path, n: int = 30) -> Path:
    from flows.synthetic import load_synthetic
    from schemas.taxonomy import load_taxonomy
    from warehouse.store import Warehouse

    load_synthetic(Warehouse(home), load_taxonomy("deepdialogue"), n, seed=1)
    cfg = home.parent / "publish-synthetic.yaml"
    cfg.write_text("publish:\n  sources: [synthetic]\n")
    return cfg


def _post(api: str, path: str, body: dict) -> list | dict:
    r = httpx.post(f"{api}{path}", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def test_scheduled_publish_run_completes_on_a_real_server(prefect_api, tmp_path):
    home = tmp_path / "home"
    cfg = _synthetic_home(home)
    # one run: the interval's anchor is a few seconds ahead, the next one an hour later
    script = textwrap.dedent(f"""
        from datetime import datetime, timedelta, timezone
        from pathlib import Path
        from flows.schedules import DeploymentSpec, serve
        spec = DeploymentSpec(name="test-publish", entrypoint="flows/schedules.py:publish_flow", interval_s=3600,
                              anchor=datetime.now(timezone.utc) + timedelta(seconds=12),
                              parameters={{"config": {str(cfg)!r}}}, concurrency_limit=1)
        serve([spec], home=Path({str(home)!r}))
    """)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=_client_env(tmp_path, prefect_api),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        dep = None
        done = []
        while time.monotonic() < deadline and not done:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
            if dep is None:
                deps = _post(prefect_api, "/deployments/filter", {"deployments": {"name": {"any_": ["test-publish"]}}})
                dep = deps[0] if deps else None
                continue
            runs = _post(prefect_api, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}})
            failed = [r for r in runs if r["state_type"] in ("FAILED", "CRASHED")]
            assert not failed, (failed[0]["state"], (tmp_path / "serve.log").read_text()[-3000:])
            done = [r for r in runs if r["state_type"] == "COMPLETED"]
        assert done, f"no completed scheduled run in time; log:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()
    run = done[0]
    assert run["auto_scheduled"] is True  # made by the server's scheduler from the deployment's schedule
    assert run["parameters"]["home"] == str(home)
    assert dep["concurrency_limit"] == 1 or (dep.get("global_concurrency_limit") or {}).get("limit") == 1
    sched = dep["schedules"][0]["schedule"]
    assert sched["interval"] == 3600
    # the run really published: a verified release with its report, registered in the catalog
    from warehouse.releases import list_releases, verify_release
    from warehouse.store import Warehouse

    rels = list_releases(Warehouse(home))
    assert [r["version"] for r in rels][:1] == ["0.1.0"] and rels[0]["counts"]["dialogues"] == 30
    rel = Path(rels[0]["path"])
    assert verify_release(rel) == [] and (rel / "report" / "index.html").is_file()


def test_prefect_yaml_deployments_register_in_a_process_pool(prefect_api, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.schedules import deploy

    home = tmp_path / "home"
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        ids = deploy(load_specs(), pool="emoforge-test", home=home)
    specs = {s.name: s for s in load_specs()}
    assert len(ids) == len(specs) == 3
    pool = httpx.get(f"{prefect_api}/work_pools/emoforge-test", timeout=10).json()
    assert pool["type"] == "process"
    for dep_id in ids:
        dep = httpx.get(f"{prefect_api}/deployments/{dep_id}", timeout=10).json()
        spec = specs[dep["name"]]
        assert dep["work_pool_name"] == "emoforge-test"
        assert dep["entrypoint"] == spec.entrypoint
        assert dep["schedules"][0]["schedule"]["cron"] == spec.cron and dep["schedules"][0]["active"]
        assert dep["parameters"]["home"] == str(home)
        assert dep["job_variables"]["env"]["EMOFORGE_HOME"] == str(home)
        assert dep["concurrency_limit"] == 1 or (dep.get("global_concurrency_limit") or {}).get("limit") == 1
        assert dep["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"  # runs send heartbeats
    # the pool's unresponsive-run automation covers the three deployments
    autos = [a for a in httpx.post(f"{prefect_api}/automations/filter", json={}, timeout=10).json()
             if "emoforge-test" in a["name"]]
    assert len(autos) == 1 and autos[0]["enabled"]
    trig = autos[0]["trigger"]
    assert trig["posture"] == "Proactive" and trig["within"] == 90 and sorted(trig["after"]) == ["prefect.flow-run.Running", "prefect.flow-run.heartbeat"]
    assert sorted(trig["match_related"]["prefect.resource.id"]) == sorted(f"prefect.deployment.{i}" for i in ids)
    assert autos[0]["actions"][0]["state"] == "CRASHED"
    # deploying again (a subset, another window) updates the same deployments and the same automation
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        again = deploy(load_specs(only=["daily-publish"]), pool="emoforge-test", home=home, crashed_after_s=120)
    assert again[0] in ids
    autos = [a for a in httpx.post(f"{prefect_api}/automations/filter", json={}, timeout=10).json()
             if "emoforge-test" in a["name"]]
    assert len(autos) == 1 and autos[0]["trigger"]["within"] == 120
    assert len(autos[0]["trigger"]["match_related"]["prefect.resource.id"]) == 3  # the others stay covered
    with pytest.raises(ValueError, match="must exceed the runs' heartbeat interval"):
        with temporary_settings({PREFECT_API_URL: prefect_api}):
            deploy(load_specs(only=["daily-publish"]), pool="emoforge-test", home=home, crashed_after_s=20)


def test_deploy_says_clearly_when_the_crash_automation_cannot_be_made(prefect_api, tmp_path, monkeypatch):
    """Fault injection: the server refuses the automation; deploy names what was done and what is missing."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.schedules as schedules

    def refused(*args, **kwargs):
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(schedules, "ensure_crash_detection", refused)
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        with pytest.raises(schedules.ScheduleError, match=r"1 deployment\(s\) are registered.*--crashed-after 0"):
            schedules.deploy(load_specs(only=["daily-publish"]), pool="emoforge-fault", home=tmp_path / "home")
        assert schedules.deploy(load_specs(only=["daily-publish"]), pool="emoforge-fault", home=tmp_path / "home",
                                crashed_after_s=None)  # without the automation it deploys


# ---- overlapping runs (no server needed: the locks are in the home) ------------------------------------------------
def _publish_job(home: str, cfg: str, q) -> None:
    from flows.schedules import JobBusy, publish_job

    try:
        q.put(("ok", publish_job(home, cfg)))
    except JobBusy as exc:
        q.put(("busy", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        q.put(("error", f"{type(exc).__name__}: {exc}"))


def _publish_direct(home: str, cfg: str, q) -> None:
    from schemas.config import load_config
    from warehouse.publish import publish_release

    try:
        q.put(("ok", publish_release(home, load_config(cfg), version="5.0.0")))
    except Exception as exc:  # noqa: BLE001
        q.put(("error", f"{type(exc).__name__}: {exc}"))


def test_overlapping_publishes_do_not_corrupt_the_warehouse(tmp_path):
    home = tmp_path / "home"
    cfg = _synthetic_home(home, n=30)
    import warehouse.publish  # noqa: F401  (loaded once here; the forked processes inherit it)

    ctx = mp.get_context("fork")
    q = ctx.Queue()
    # while a publish job holds the home (as a long one would), another scheduled publish is refused at once
    with job_lock(home, "publish"):
        p = ctx.Process(target=_publish_job, args=(str(home), str(cfg), q))
        p.start()
        got = q.get(timeout=120)
        p.join(30)
    assert got[0] == "busy", got
    assert "another publish is running" in got[1] and "nothing was changed" in got[1]
    # now really concurrent: a scheduled publish and a manual one; the warehouse lock serialises them
    procs = [ctx.Process(target=_publish_job, args=(str(home), str(cfg), q)),
             ctx.Process(target=_publish_direct, args=(str(home), str(cfg), q))]
    for p in procs:
        p.start()
    got = [q.get(timeout=300) for _ in range(2)]
    for p in procs:
        p.join(30)
    assert sorted(g[0] for g in got) == ["ok", "ok"], got
    from warehouse.releases import list_releases, verify_release
    from warehouse.store import Warehouse

    rels = list_releases(Warehouse(home))
    versions = sorted(r["version"] for r in rels)
    assert "5.0.0" in versions and len(versions) in (1, 2)  # the job published too, or found nothing new after 5.0.0
    for r in rels:
        assert verify_release(Path(r["path"])) == []
        assert r["counts"]["dialogues"] == 30
    assert not [p for p in (home / "releases").iterdir() if p.name.startswith(".")]
    # a third scheduled publish finds nothing new and changes nothing
    from flows.schedules import publish_job

    again = publish_job(str(home), str(cfg))
    assert "nothing changed" in again["skipped"]
    assert sorted(r["version"] for r in list_releases(Warehouse(home))) == versions


def _hold(home: str, ready) -> None:
    with job_lock(home, "build"):
        ready.set()
        time.sleep(600)


def test_job_lock_is_released_when_its_holder_is_killed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(home), ready))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(JobBusy, match=rf"pid {proc.pid}"):
            with job_lock(home, "build"):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: the OS drops the lock with the process
        proc.join(10)
    with job_lock(home, "build"):
        pass


def test_a_build_job_closes_the_run_records_that_a_killed_worker_left_running(tmp_path):
    from datetime import datetime, timezone

    from flows.schedules import close_dead_runs
    from schemas.records import Run
    from warehouse.store import Warehouse

    home = tmp_path / "home"
    wh = Warehouse(home)
    now = datetime.now(timezone.utc)
    wh.upsert([Run(id="run_killed", command="build-job", started_at=now, metrics_json='{"n_scenarios": 24}'),
               Run(id="run_done", command="build-job", started_at=now, status="finished"),
               Run(id="run_manual", command="build", started_at=now)])
    assert close_dead_runs(home, "build-job") == ["run_killed"]
    rows = {r["id"]: r for r in wh.query("SELECT id, status, metrics_json FROM runs").to_pylist()}
    assert len(rows) == 3 and rows["run_killed"]["status"] == "failed"
    m = json.loads(rows["run_killed"]["metrics_json"])
    assert m["n_scenarios"] == 24 and "process died" in m["error"]
    assert rows["run_done"]["status"] == "finished" and rows["run_manual"]["status"] == "running"
    assert close_dead_runs(home, "build-job") == []  # nothing left to close
