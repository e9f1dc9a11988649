"""The LLM call cache: content-addressed keys, and a kill -9 in the middle of a run loses no completed call and
leaves no corrupt entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flows.llm.cache import CallCache, call_key
from flows.llm.stub import StubConfig, StubServer
from tests.stub_counts import settled_requests

ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = r"""
import asyncio, sys
from flows.llm.cache import CallCache
from flows.llm.client import LLMPool
from schemas.config.models import parse_models_config
url, home, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = parse_models_config({"models": {"m": {"endpoints": [{"base_url": url}], "max_concurrency": 8}}})
async def main():
    async with LLMPool(cfg, CallCache.for_home(home)) as pool:
        await asyncio.gather(*[pool.chat("m", [{"role": "user", "content": f"turn {i} emotion: happy"}],
                                         template_version="t1") for i in range(n)])
    print("DONE", flush=True)
asyncio.run(main())
"""


def test_key_covers_inputs_not_postprocessing():
    msgs = [{"role": "user", "content": "hi"}]
    base = call_key("m", msgs, {"temperature": 0.7, "max_tokens": 20}, None, "v1")
    assert base == call_key("m", msgs, {"max_tokens": 20, "temperature": 0.7}, None, "v1")  # order-free
    variants = [
        call_key("m2", msgs, {"temperature": 0.7, "max_tokens": 20}, None, "v1"),
        call_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0.7, "max_tokens": 20}, None, "v1"),
        call_key("m", msgs, {"temperature": 0.8, "max_tokens": 20}, None, "v1"),
        call_key("m", msgs, {"temperature": 0.7, "max_tokens": 20}, {"type": "json_object"}, "v1"),
        call_key("m", msgs, {"temperature": 0.7, "max_tokens": 20}, None, "v2"),
        call_key("m", msgs, {"temperature": 0.7, "max_tokens": 20}, None, "v1", nonce=2),
    ]
    assert len({base, *variants}) == 7


def test_put_get_and_checksum(home):
    c = CallCache.for_home(home)
    assert c.get("k") is None
    c.put("k", model="m", text="hello", finish_reason="stop", prompt_tokens=3, completion_tokens=1, latency_s=0.1)
    got = c.get("k")
    assert got is not None and got.text == "hello" and got.completion_tokens == 1
    assert c.counts()["entries"] == 1 and c.verify() == {"entries": 1, "bad": 0}
    # a tampered entry is treated as missing, not returned
    c._con().execute("UPDATE calls SET text = 'tampered' WHERE key = 'k'")
    assert c.get("k") is None and c.verify()["bad"] == 1


def test_kill9_mid_run_then_rerun_repeats_no_completed_call(home):
    n = 400
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with StubServer(StubConfig(latency_s=0.005)) as stub:
        proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, stub.url, str(home), str(n)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while stub.stats()["ok"] < 60 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        first_run = settled_requests(stub.stats)

        cache = CallCache.for_home(home)
        check = cache.verify()  # sqlite integrity_check + every entry's checksum
        assert check["bad"] == 0 and 0 < check["entries"] < n, check
        done_before = check["entries"]

        out = subprocess.run([sys.executable, "-c", WORKLOAD, stub.url, str(home), str(n)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert "DONE" in out.stdout, out.stderr[-2000:]
        rerun = stub.stats()["requests"] - first_run
    assert rerun == n - done_before, "the rerun must call exactly the calls not completed before the kill"
    assert CallCache.for_home(home).verify() == {"entries": n, "bad": 0}
