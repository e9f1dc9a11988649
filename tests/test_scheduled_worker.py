"""The scheduled path for real, as docs/operations.md tells a user to run it: `emoforge prefect-server`, `emoforge
deploy`, `prefect worker start --pool ...`, and the `nightly-build` deployment triggered through the API (no waiting
for the cron) against the project's OpenAI-compatible stub (a separate process).

1. the first run completes and publishes a release;
2. a second, bigger run is killed mid-way with SIGKILL: the worker and the flow-run process it spawned (the machine
   dying); the deployment's unresponsive-run automation (`emoforge deploy`) marks the silent run Crashed, which frees
   the deployment's concurrency slot;
3. a fresh worker runs the next trigger, queued meanwhile: it resumes from the LLM call cache (every request the
   stub gets is a new cache entry: no completed call is sent again) and publishes, nothing duplicated.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest
import yaml

from flows.llm.stub import StubConfig, stub_process
from schemas.procs import free_port
from tests.stub_counts import settled_requests
from tests.test_build_resume import _entries  # LLM cache entries of a home
from warehouse.releases import list_releases, verify_release
from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POOL = "emoforge-sched-test"
CRASHED_AFTER_S = 45  # the automation's window (the runs send a heartbeat every 30 s)
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

pytestmark = pytest.mark.slow


# ---- helpers ------------------------------------------------------------------------------------------------------
class Procs:
    """The processes this test starts, each in its own session; every one is killed (with its group) at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.started.append((name, proc))
        return proc

    def log(self, name: str, n: int = 4000) -> str:
        try:
            return (self.tmp / f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"---- {name}.log\n{self.log(name, 2500)}" for name, _ in self.started)

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            kill_tree(proc.pid, signal.SIGTERM if proc.poll() is None else signal.SIGKILL)
        for _, proc in self.started:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid, signal.SIGKILL)
                proc.wait(10)


def kill_tree(pid: int, sig: int) -> list[psutil.Process]:
    """Send ``sig`` to ``pid``, its process group and every descendant (a flow run may sit in its own session)."""
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for p in tree:
        try:
            os.killpg(os.getpgid(p.pid), sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    return tree


def _get(api: str, path: str):
    r = httpx.get(f"{api}{path}", timeout=30)
    r.raise_for_status()
    return r.json()


def _post(api: str, path: str, body: dict):
    r = httpx.post(f"{api}{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _wait(what: str, check, timeout: float, procs: Procs, alive: list[subprocess.Popen] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        for p in alive:
            assert p.poll() is None, f"{p.args[:3]} exited while waiting for {what}\n{procs.logs()}"
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{procs.logs()}")


def _run_state(api: str, run_id: str) -> dict:
    return _get(api, f"/flow_runs/{run_id}")


def _wait_final(api: str, run_id: str, timeout: float, procs: Procs, alive) -> dict:
    def final():
        r = _run_state(api, run_id)
        return r["state_type"] in FINAL and r

    try:
        return _wait(f"flow run {run_id} to finish", final, timeout, procs, alive)
    except BaseException as exc:
        raise AssertionError(f"{exc}\n{_run_report(api, run_id)}") from None


def _run_report(api: str, run_id: str) -> str:
    """The run's state and its last log lines on the server (for a failure message)."""
    try:
        state = _run_state(api, run_id)["state"]
        logs = _post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 30,
                                          "sort": "TIMESTAMP_DESC"})
    except httpx.HTTPError as exc:
        return f"(no report: {exc})"
    return f"state {state}\n" + "\n".join(f"{x['level']} {x['message'][:600]}" for x in reversed(logs))


def _trigger(api: str, dep_id: str, params: dict) -> str:
    return _post(api, f"/deployments/{dep_id}/create_flow_run", {"parameters": params})["id"]


def _release_ids(rel: dict) -> list[str]:
    files = sorted(str(f) for f in (Path(rel["path"]) / "data" / "dialogues").glob("*.parquet"))
    return [r[0] for r in duckdb.sql(f"SELECT dialogue_id FROM read_parquet({files})").fetchall()]


# ---- the test -------------------------------------------------------------------------------------------------------
def test_nightly_build_on_a_worker_publishes_then_resumes_after_kill_9(tmp_path):
    home = tmp_path / "home"
    procs = Procs(tmp_path)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base = dict(os.environ, PYTHONPATH=str(ROOT))
    base.pop("EMOFORGE_HOME", None)
    # the server keeps its database in the home (no PREFECT_HOME of the test session); a run that waits for the
    # deployment's slot is retried every 2 s instead of 30 (a server setting, not the product's)
    server_env = {k: v for k, v in base.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    server_env["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] = "2"
    client_env = dict(base, PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "client-prefect"),
                      PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="2")
    t: dict[str, float] = {}  # seconds per phase, printed at the end (pytest -s)
    t0 = time.monotonic()
    try:
        with stub_process(StubConfig(latency_s=0.01, seed=3)) as url:
            stub_root = url.rsplit("/v1", 1)[0]
            models = tmp_path / "models.yaml"
            ep = [{"base_url": url}]
            models.write_text(yaml.safe_dump({
                "models": {m: {"endpoints": ep, "timeout_s": 30, "max_concurrency": 4} for m in ("m1", "m2", "judge")},
                "pairs": [["m1", "m1"], ["m2", "m2"], ["m1", "m2"], ["m2", "m1"]], "judges": ["judge"]}))
            # the stub's judge gives random scores: lenient thresholds so that its dialogues get accepted; no speech
            config = tmp_path / "config.yaml"
            config.write_text(yaml.safe_dump({
                "generation": {"shard_size": 4}, "speech": {"enabled": False},
                "judging": {"accept_at": 1.0, "reject_below": 1.0, "max_spread": 4.0, "min_safety": 1}}))

            # the server, the deployments, a worker: the commands of docs/operations.md
            server = procs.start("server", [str(BIN / "emoforge"), "prefect-server", "--home", str(home),
                                            "--port", str(port)], server_env)
            _wait("the Prefect server", lambda: _healthy(api), 240, procs, [server])
            t["server start"] = time.monotonic() - t0
            deploy = subprocess.run(
                [str(BIN / "emoforge"), "deploy", "--home", str(home), "--api", api, "--pool", POOL,
                 "--only", "nightly-build", "--crashed-after", str(CRASHED_AFTER_S)],
                cwd=ROOT, env=client_env, capture_output=True, text=True, timeout=240)
            assert deploy.returncode == 0, deploy.stdout + deploy.stderr
            t["deploy"] = time.monotonic() - t0
            dep = _get(api, "/deployments/name/scheduled-build/nightly-build")
            assert dep["work_pool_name"] == POOL and dep["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
            assert dep["job_variables"]["env"]["EMOFORGE_HOME"] == str(home)
            automations = _post(api, "/automations/filter", {})
            assert any(POOL in a["name"] and a["enabled"] for a in automations), automations
            worker = procs.start("worker1", [str(BIN / "prefect"), "worker", "start", "--pool", POOL], client_env)

            # 1. a run triggered through the API completes and publishes
            # (as docs/operations.md: `prefect deployment run`; the later triggers go through the REST API)
            cli = subprocess.run(
                [str(BIN / "prefect"), "deployment", "run", "scheduled-build/nightly-build", "--param",
                 f"config={config}", "--param", f"models={models}", "--param", "dialogues=8"],
                cwd=ROOT, env=client_env, capture_output=True, text=True, timeout=240)
            assert cli.returncode == 0, cli.stdout + cli.stderr
            run1 = re.search(r"UUID: ([0-9a-f-]{36})", cli.stdout).group(1)
            assert _run_state(api, run1)["parameters"]["dialogues"] == 8
            r1 = _wait_final(api, run1, 300, procs, [server, worker])
            t["run 1 completed"] = time.monotonic() - t0
            assert r1["state_type"] == "COMPLETED", (_run_report(api, run1), procs.logs())
            rels = list_releases(Warehouse(home))
            assert len(rels) == 1 and verify_release(Path(rels[0]["path"])) == []
            assert rels[0]["counts"]["dialogues"] == Warehouse(home).count("dialogues", "status = 'accepted'") > 0

            # 2. a bigger run on a slow endpoint, killed mid-way with the worker and its flow-run process
            httpx.post(f"{stub_root}/config", json={"latency_s": 0.4}, timeout=10).raise_for_status()
            before = _entries(home)
            params = {"config": str(config), "models": str(models), "dialogues": 24, "seed": 1}
            run2 = _trigger(api, dep["id"], params)
            _wait("run 2 to be mid-way", lambda: _entries(home) >= before + 30, 240, procs, [server, worker])
            flow_procs = [p for p in psutil.Process(worker.pid).children(recursive=True)
                          if _environ(p).get("PREFECT__FLOW_RUN_ID") == run2]
            assert flow_procs, "the worker runs no process for run 2"
            print("\nworker", worker.pid, "sid", os.getsid(worker.pid), "spawned for run 2:",
                  [(p.pid, os.getsid(p.pid), " ".join(p.cmdline())[:80]) for p in flow_procs])
            tree = kill_tree(worker.pid, signal.SIGKILL)  # the machine dies: worker and flow run at once
            psutil.wait_procs(tree, timeout=30)
            assert not [p for p in flow_procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            t["run 2 until killed"] = time.monotonic() - t0
            at_kill = _entries(home)
            sent_before = settled_requests(lambda: httpx.get(f"{stub_root}/stats", timeout=10).json())
            assert _run_state(api, run2)["state_type"] == "RUNNING"  # the server cannot know yet
            accepted_now = Warehouse(home).count("dialogues", "status <> 'generated'")
            assert accepted_now < Warehouse(home).count("scenarios")  # really mid-way

            # 3. the next trigger waits for the slot; a fresh worker; the silent run is marked Crashed, the next resumes
            httpx.post(f"{stub_root}/config", json={"latency_s": 0.01}, timeout=10).raise_for_status()
            run3 = _trigger(api, dep["id"], params)
            worker2 = procs.start("worker2", [str(BIN / "prefect"), "worker", "start", "--pool", POOL], client_env)
            r2 = _wait_final(api, run2, CRASHED_AFTER_S + 120, procs, [server, worker2])
            t["run 2 marked crashed"] = time.monotonic() - t0
            assert r2["state_type"] == "CRASHED", r2["state"]
            assert "heartbeat" in (r2["state"]["message"] or "")
            r3 = _wait_final(api, run3, 300, procs, [server, worker2])
            t["run 3 completed"] = time.monotonic() - t0
            assert r3["state_type"] == "COMPLETED", (_run_report(api, run3), procs.logs())
            rerun_requests = httpx.get(f"{stub_root}/stats", timeout=10).json()["requests"] - sent_before
        after = _entries(home)
        # every call of the resumed run was new: nothing completed before the kill reached the endpoint again
        assert 0 < rerun_requests == after - at_kill, (rerun_requests, after, at_kill)
        wh = Warehouse(home)
        rels = list_releases(wh)
        assert len(rels) == 2, [r["version"] for r in rels]  # the killed run published nothing
        ids = _release_ids(rels[-1])
        assert len(ids) == len(set(ids)) == rels[-1]["counts"]["dialogues"]
        assert len(ids) == wh.count("dialogues", "status = 'accepted'")
        assert wh.count("dialogues", "status IN ('pending', 'generated')") == 0
        assert verify_release(Path(rels[-1]["path"])) == []
        runs = wh.query("SELECT status, metrics_json FROM runs ORDER BY started_at").to_pylist()
        assert [r["status"] for r in runs] == ["finished", "failed", "finished"]  # the killed run's record closed
        assert "process died" in json.loads(runs[1]["metrics_json"])["error"]
        last = runs[-1]
        m = json.loads(last["metrics_json"])
        assert last["status"] == "finished" and m["missing"] == 0 and sum(m["statuses"].values()) == 24
        # what run 2 finished was taken from the warehouse or the cache, not asked again
        assert m["reused_dialogues"] + sum(v["cached"] for v in m["models"].values()) > 0
    finally:
        procs.stop_all()
        print("\nscheduled-path timings (s since start):", {k: round(v, 1) for k, v in t.items()})


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _environ(p: psutil.Process) -> dict[str, str]:
    try:
        return p.environ()
    except psutil.Error:
        return {}
