"""The suite leaves no process behind: a child whose parent was killed with -9 (re-parented to PID 1, as an
ephemeral Prefect server of a killed build is) is still found by the session's tag and stopped; nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from tests.procs import stop_tagged, tagged_processes

ORPHANING_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_an_orphaned_grandchild_is_found_and_stopped():
    tag_value = uuid.uuid4().hex
    env = dict(os.environ, EMOFORGE_TEST_SESSION=tag_value)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # another tag: not ours
    parent = subprocess.Popen([sys.executable, "-c", ORPHANING_PARENT], env=env, stdout=subprocess.PIPE, text=True)
    try:
        orphan = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and int(open(f"/proc/{orphan}/stat").read().rsplit(")", 1)[1].split()[1]) == parent.pid:
            time.sleep(0.05)
        assert tagged_processes(f"EMOFORGE_TEST_SESSION={tag_value}") == [orphan]
        stopped = stop_tagged(f"EMOFORGE_TEST_SESSION={tag_value}", grace=2)
        assert len(stopped) == 1 and stopped[0].startswith(f"{orphan} (parent ") and "time.sleep(300)" in stopped[0]
        assert tagged_processes(f"EMOFORGE_TEST_SESSION={tag_value}") == []
        assert bystander.poll() is None  # untouched
    finally:
        bystander.kill()
        bystander.wait(10)
        parent.kill()
