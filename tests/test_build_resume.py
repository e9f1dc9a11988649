"""Interrupting a running `emoforge build` (a subprocess): Ctrl-C stops it promptly, and after kill -9 the same
build again repeats no completed call.

Counted at the stub (a separate process): after the kill, every call the rerun sends must be a new cache entry,
i.e. requests(rerun) == entries(after) - entries(at kill). A completed call sent again would break the equality.
The subprocesses use this test process's Prefect server (real Prefect, started once) to spare a start-up each.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from flows.build import BuildConfig, run_build
from schemas.config.models import load_models_config
from flows.llm.stub import StubConfig, stub_process
from warehouse.store import Warehouse
from tests.stub_counts import settled_requests

ROOT = Path(__file__).resolve().parent.parent
EMOFORGE = str(Path(sys.executable).parent / "emoforge")
N = 40


def _entries(home: Path) -> int:
    db = home / "cache" / "llm" / "calls.sqlite"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT count(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _interruptible() -> None:
    """In the child before exec: Ctrl-C's default disposition. A test runner started in the background of a
    non-interactive shell ignores SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt
    handler, so the build would never see the Ctrl-C this test sends (a user's terminal delivers it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_build(home: Path, models: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [EMOFORGE, "build", "--dialogues", str(N), "--models", str(models), "--home", str(home), "--no-publish", "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible,
    )


def _wait_for_entries(proc: subprocess.Popen, home: Path, n: int) -> None:
    deadline = time.monotonic() + 240
    while _entries(home) < n:
        if proc.poll() is not None:
            raise AssertionError(f"build ended before the interruption: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "the build made no progress"
        time.sleep(0.1)


def test_ctrl_c_then_kill_9_then_rerun_repeats_no_completed_call(home, tmp_path, prefect_api_url):
    api = prefect_api_url
    with stub_process(StubConfig(latency_s=0.4, seed=1)) as url:
        root = url.rsplit("/v1", 1)[0]
        models = tmp_path / "models.yaml"
        ep = [{"base_url": url}]
        models.write_text(yaml.safe_dump({
            "models": {m: {"endpoints": ep, "timeout_s": 20, "max_concurrency": 4} for m in ("m1", "m2", "judge")},
            "pairs": [["m1", "m1"], ["m2", "m2"], ["m1", "m2"], ["m2", "m1"]],
            "judges": ["judge"],
        }))
        env = dict(os.environ, PREFECT_API_URL=api, PYTHONPATH=str(ROOT))

        # 1. Ctrl-C: the build stops within seconds, exits non-zero, the run is recorded as failed
        proc = _start_build(home, models, env)
        _wait_for_entries(proc, home, 20)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("Ctrl-C did not stop the build within 60 s")
        assert proc.returncode != 0
        assert time.monotonic() - t0 < 30
        runs = Warehouse(home).query("SELECT status, metrics_json FROM runs").to_pylist()
        assert [r["status"] for r in runs] == ["failed"]
        assert "error" in json.loads(runs[0]["metrics_json"])

        # 2. kill -9 midway through the resumed build
        proc = _start_build(home, models, env)
        try:
            _wait_for_entries(proc, home, _entries(home) + 40)
            time.sleep(0.5)  # some dialogues finished and flushed, others mid-turn with calls in flight
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        at_kill = _entries(home)
        sent_before = settled_requests(lambda: httpx.get(f"{root}/stats").json())
        wh = Warehouse(home)
        written = wh.count("dialogues", "status <> 'generated'") if "dialogues" in wh.tables() else 0
        assert 0 < at_kill and written < N  # really killed midway

        # 3. the same build again (in this process): finishes, and sends only calls that never completed
        summary = run_build(home, BuildConfig(), load_models_config(models), n_dialogues=N, seed=0, publish=False,
                            progress=False)
        stats = httpx.get(f"{root}/stats").json()
    rerun_requests = stats["requests"] - sent_before
    after = _entries(home)
    assert rerun_requests == after - at_kill, (rerun_requests, after, at_kill)
    m = summary["metrics"]
    assert m["missing"] == 0 and sum(m["statuses"].values()) == N
    assert sum(v["cached"] for v in m["models"].values()) + m["reused_dialogues"] > 0
    assert Warehouse(home).count("dialogues", "status IN ('pending', 'generated')") == 0
