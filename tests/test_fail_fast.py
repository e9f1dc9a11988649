"""Failing fast and clearly: a build whose endpoint refuses connections (a real closed port on loopback) stops after
the first call's retries, naming the endpoint and the cause; a refusal is never reported as a timeout; an endpoint
that answered before and then goes down is retried as usual (no early stop)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from schemas.procs import free_port
from flows.build import BuildAborted, BuildConfig, run_build
from flows.llm.client import LLMCallError, LLMPool
from schemas.config.models import parse_models_config
from flows.llm.stub import StubConfig, StubServer
from warehouse.store import Warehouse


def _closed_port() -> int:
    port = free_port("127.0.0.1")
    with socket.socket() as s:  # nobody listens there: a connect is refused at once
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


def _models(url: str) -> dict:
    ep = [{"base_url": url}]
    return {"models": {m: {"endpoints": ep, "timeout_s": 5} for m in ("m1", "judge")},
            "pairs": [["m1", "m1"]], "judges": ["judge"],
            "retry": {"backoff_base_s": 0.05, "backoff_max_s": 0.2}}


def test_build_against_a_refusing_endpoint_stops_early_and_names_it(home):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.monotonic()
    with pytest.raises(BuildAborted) as err:
        run_build(home, BuildConfig(), parse_models_config(_models(url)), n_dialogues=8, seed=0, publish=False,
                  progress=False)
    took = time.monotonic() - started
    msg = str(err.value)
    assert url in msg and "connection refused" in msg and "m1" in msg, msg
    assert "timed out" not in msg.lower() and "Timeout" not in msg
    assert took < 120, took  # Prefect start-up included; the calls themselves stop after one call's retries
    # nothing recorded a refused connection as a dialogue failure with a misleading reason
    rows = Warehouse(home).query("SELECT status_reason FROM dialogues").to_pylist()
    assert not any("timed out" in (r["status_reason"] or "").lower() for r in rows), rows


def test_a_refusal_after_the_endpoint_answered_is_a_retried_connection_error():
    async def go(stub: StubServer) -> LLMCallError:
        cfg = parse_models_config({"models": {"m": {"endpoints": [{"base_url": stub.url}], "timeout_s": 5}},
                                   "retry": {"max_attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.02}})
        async with LLMPool(cfg) as pool:
            await pool.chat("m", [{"role": "user", "content": "hello"}])
            stub.stop()
            with pytest.raises(LLMCallError) as err:
                await pool.chat("m", [{"role": "user", "content": "hello again"}])
            assert pool.stopped is None  # it worked before: a restart may be under way, not a wrong address
            return err.value

    stub = StubServer(StubConfig(latency_s=0.001)).start()
    try:
        exc = asyncio.run(go(stub))
    finally:
        with contextlib.suppress(RuntimeError):  # stopped already
            stub.stop()
    assert exc.kind == "connection" and exc.attempts == 3
    assert "connection refused" in str(exc) and "timed out" not in str(exc).lower(), str(exc)
