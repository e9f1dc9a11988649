"""Find and stop the processes a test session started, by an environment tag every one of them inherits, so even
one re-parented to PID 1 (its parent killed with -9) is found, and nothing of anyone else's is touched."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def tagged_processes(tag: str) -> list[int]:
    """PIDs other than this one whose environment holds ``tag`` (``NAME=value``) and that still run."""
    needle = tag.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def stop_tagged(tag: str, grace: float = 5.0) -> list[str]:
    """SIGTERM every tagged process, SIGKILL what is left after ``grace`` seconds; returns 'pid (parent P) cmdline'
    of each (parent 1: orphaned, its starter died without stopping it)."""
    # this process's multiprocessing resource tracker ends with it by design: not a leftover
    pids = [p for p in tagged_processes(tag)
            if not (_ppid(p) == os.getpid() and "multiprocessing.resource_tracker" in _cmdline(p))]
    described = [f"{pid} (parent {_ppid(pid)}) {_cmdline(pid)}" for pid in pids]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return described
