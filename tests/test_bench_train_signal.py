"""``bench/train.py`` stopped with SIGTERM (a scheduler's stop, ``timeout``) exits 143 and leaves nothing behind:
no child process (the Prefect API server its build starts) and no temporary home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from procs import _cmdline, stop_tagged, tagged_processes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sigterm_mid_run_exits_143_without_leftovers(tmp_path: Path, shared_dir: Path) -> None:
    tag = f"EMOFORGE_TEST_TAG=bench-sigterm-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own ephemeral server
    env |= {"TMPDIR": str(tmp_path), tag.split("=")[0]: tag.split("=")[1]}
    cmd = [sys.executable, str(ROOT / "bench" / "train.py"), "--quick", "--probe-only", "--dialogues", "6"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        children: list[int] = []
        while proc.poll() is None and time.monotonic() < deadline:  # until the build's Prefect server runs
            children = [p for p in tagged_processes(tag) if p != proc.pid
                        and "multiprocessing.resource_tracker" not in _cmdline(p)]
            if children:
                break
            time.sleep(0.5)
        assert children, proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no child in 600 s"
        assert list(tmp_path.glob("emoforge-bench-train-*"))
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
        deadline = time.monotonic() + 15  # an atexit hook stops the server; give it a moment to be reaped
        while tagged_processes(tag) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [_cmdline(p) for p in tagged_processes(tag)]
        assert not list(tmp_path.glob("emoforge-bench-train-*"))  # the temporary home is removed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_tagged(tag)
