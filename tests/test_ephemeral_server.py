"""A build on Prefect's ephemeral API server (no PREFECT_API_URL) stopped the way a terminal or a scheduler stops
it — SIGTERM or Ctrl-C to its whole process group — ends within seconds and leaves no server behind; a build killed
with SIGKILL takes its server with it. Before ``flows.ephemeral_server`` the group signal stopped the server too and
the build was still retrying its crash report against it a minute later."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from flows.llm.stub import StubConfig, stub_process
from procs import _cmdline, stop_tagged, tagged_processes

ROOT = Path(__file__).resolve().parent.parent
EMOFORGE = str(Path(sys.executable).parent / "emoforge")


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background test runner passes SIGINT on as ignored


def _start(home: Path, models: Path, tag: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own ephemeral server
    env |= {"PYTHONPATH": str(ROOT), tag.split("=")[0]: tag.split("=")[1]}
    return subprocess.Popen([EMOFORGE, "build", "--dialogues", "40", "--models", str(models), "--home", str(home),
                             "--no-publish", "--quiet"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_interruptible)


def _server_of(proc: subprocess.Popen, tag: str, home: Path) -> int:
    """Waits until the build's ephemeral server runs and the build has stored some LLM calls."""
    deadline = time.monotonic() + 240
    db = home / "cache" / "llm" / "calls.sqlite"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the build ended early: {proc.stderr.read().decode()[-3000:]}")
        servers = [p for p in tagged_processes(tag) if "uvicorn" in _cmdline(p)]
        if servers and db.is_file() and db.stat().st_size > 0:
            return servers[0]
        time.sleep(0.2)
    raise AssertionError("no ephemeral server and no LLM call within 240 s")


def _gone(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]:
            return True
        time.sleep(0.2)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@contextlib.contextmanager
def _running_build(tmp_path: Path, seed: int) -> Iterator[tuple[subprocess.Popen, int]]:
    """A build against the stub on its own ephemeral server, once the server runs and calls are stored: (the build,
    its server's pid). Afterwards nothing tagged is left (asserted)."""
    tag = f"EMOFORGE_TEST_TAG=ephemeral-{uuid.uuid4().hex[:8]}"
    with stub_process(StubConfig(latency_s=0.3, seed=seed)) as url:
        models = tmp_path / "models.yaml"
        ep = [{"base_url": url}]
        models.write_text(yaml.safe_dump({
            "models": {m: {"endpoints": ep, "timeout_s": 20, "max_concurrency": 4} for m in ("m1", "judge")},
            "pairs": [["m1", "m1"]], "judges": ["judge"]}))
        proc = _start(tmp_path / "home", models, tag)
        try:
            yield proc, _server_of(proc, tag, tmp_path / "home")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            left = stop_tagged(tag)
        assert not left, left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_stops_the_build_and_its_server(tmp_path: Path, sig: int) -> None:
    with _running_build(tmp_path, seed=3) as (proc, server):
        assert os.getsid(server) != os.getsid(proc.pid)  # a session of its own: the group signal misses it
        os.killpg(proc.pid, sig)
        t0 = time.monotonic()
        proc.wait(timeout=90)
        assert time.monotonic() - t0 < 30, "the build took over 30 s to stop"
        assert proc.returncode != 0
        assert _gone([server], 15), f"the ephemeral server is still running: {_cmdline(server)}"


@pytest.mark.slow
def test_a_build_killed_with_sigkill_takes_its_server_with_it(tmp_path: Path) -> None:
    with _running_build(tmp_path, seed=4) as (proc, server):
        proc.kill()  # the build alone: its server is in another session
        proc.wait(timeout=30)
        assert _gone([server], 15), f"the ephemeral server outlived its killed build: {_cmdline(server)}"
