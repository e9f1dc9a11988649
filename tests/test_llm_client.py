"""LLMPool against the fault-injecting stub: retries, Retry-After, timeouts, length, JSON repair, AIMD, cache,
early stop, replica balancing, secrets."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from flows.llm.cache import CallCache
from flows.llm.client import LLMCallError, LLMPool
from schemas.config.models import AimdPolicy, parse_models_config
from flows.llm.limiter import Endpoint
from flows.llm.stub import StubConfig, StubServer

MSG = [{"role": "user", "content": "Domain: cooking. Reply in one line. Emotion: frustrated"}]
SCHEMA = {
    "type": "object",
    "properties": {
        "coherence": {"type": "integer", "minimum": 1, "maximum": 5},
        "verdict": {"type": "string", "enum": ["accept", "reject", "uncertain"]},
        "rationale": {"type": "string"},
    },
    "required": ["coherence", "verdict", "rationale"],
    "additionalProperties": False,
}


def cfg_for(*urls: str, **model_kw) -> object:
    retry = model_kw.pop("retry", {"backoff_base_s": 0.01, "backoff_max_s": 0.05})
    top = {k: model_kw.pop(k) for k in list(model_kw) if k in ("error_rate_stop", "error_min_calls", "error_window", "aimd")}
    spec = {"endpoints": [{"base_url": u} for u in urls], "timeout_s": 5, **model_kw}
    return parse_models_config({"models": {"m": spec}, "retry": retry, **top})


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def stub():
    with StubServer(StubConfig(seed=1)) as s:
        yield s


def test_429_retry_after_is_honoured(stub):
    stub.configure(fault_schedule=["429", "ok"], retry_after_s=0.6)

    async def go():
        async with LLMPool(cfg_for(stub.url), None) as pool:
            t = time.monotonic()
            res = await pool.chat("m", MSG)
            return res, time.monotonic() - t, pool.stats()["m"]

    res, took, st = run(go())
    assert res.text and res.attempts == 2
    assert took >= 0.6, "the retry must wait for Retry-After, not only the (50 ms) backoff"
    assert st["attempt_errors"] == {"rate_limit": 1} and st["retries"] == 1 and st["errors"] == {}
    assert stub.stats()["outcomes"] == {"429": 1, "ok": 1}


def test_500_is_retried_then_gives_up(stub):
    stub.configure(fault_schedule=["500", "500", "ok"])

    async def go(max_attempts):
        cfg = cfg_for(stub.url, retry={"max_attempts": max_attempts, "backoff_base_s": 0.01})
        async with LLMPool(cfg, None) as pool:
            return await pool.chat("m", [{"role": "user", "content": f"attempts {max_attempts}"}])

    assert run(go(3)).attempts == 3
    with pytest.raises(LLMCallError) as ei:
        run(go(2))
    assert ei.value.kind == "server" and ei.value.status == 500 and ei.value.attempts == 2


def test_hang_times_out_and_is_retried(stub):
    stub.configure(fault_schedule=["hang", "ok"], hang_s=30)

    async def go(attempts):
        cfg = cfg_for(stub.url, timeout_s=0.5, retry={"max_attempts": attempts, "backoff_base_s": 0.01})
        async with LLMPool(cfg, None) as pool:
            t = time.monotonic()
            try:
                return await pool.chat("m", [{"role": "user", "content": f"a{attempts}"}]), time.monotonic() - t
            finally:
                assert pool.stats()["m"]["attempt_errors"] == {"timeout": 1}

    res, took = run(go(2))
    assert res.attempts == 2 and 0.5 <= took < 5
    with pytest.raises(LLMCallError) as ei:
        run(go(1))
    assert ei.value.kind == "timeout"


def test_length_is_a_failure_and_is_not_repeated(stub, home):
    stub.configure(fault_schedule=["length"])
    cache = CallCache.for_home(home)

    async def go():
        async with LLMPool(cfg_for(stub.url), cache) as pool:
            with pytest.raises(LLMCallError) as ei:
                await pool.chat("m", MSG)
            return ei.value, pool.stats()["m"]

    err, st = run(go())
    assert err.kind == "length" and err.text and not err.cached
    assert st["errors"] == {"length": 1} and stub.stats()["requests"] == 1  # not retried blindly
    err2, _ = run(go())  # a rerun replays the recorded truncation without calling again
    assert err2.kind == "length" and err2.cached and stub.stats()["requests"] == 1


def test_invalid_json_gets_one_repair(stub, home):
    # every distinct request body is answered with broken JSON the first time it is seen
    stub.configure(fault_schedule=["invalid_json"])
    cache = CallCache.for_home(home)

    async def go(msgs):
        async with LLMPool(cfg_for(stub.url), cache) as pool:
            try:
                return await pool.chat_json("m", msgs, schema=SCHEMA, template_version="judge-v1")
            finally:
                assert pool.stats()["m"]["repairs"] == 1

    with pytest.raises(LLMCallError) as ei:
        run(go(MSG))  # broken, and the repair (a new body) broken too
    assert ei.value.kind == "invalid_json" and stub.stats()["requests"] == 2

    MSG2 = [{"role": "user", "content": "Judge another dialogue."}]
    # record a broken first answer, then let the repair succeed
    rf = {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA, "strict": True}}

    async def broken_first():
        async with LLMPool(cfg_for(stub.url), cache) as pool:
            return await pool.chat("m", MSG2, response_format=rf, template_version="judge-v1")

    assert "oops" in run(broken_first()).text
    stub.configure(fault_schedule=None)
    obj, res = run(go(MSG2))
    assert set(obj) == {"coherence", "verdict", "rationale"} and 1 <= obj["coherence"] <= 5
    assert not res.cached and stub.stats()["requests"] == 4


def test_aimd_unit():
    ep = Endpoint(url="x", ceiling=16, policy=AimdPolicy(min_samples=5, latency_factor=3.0), limit=4.0)
    t0 = time.monotonic()
    for _ in range(40):
        ep.on_success(time.monotonic(), 0.1, 10)
    assert 8 < ep.limit <= 16  # additive increase, capped
    grown = ep.limit
    assert ep.cut(time.monotonic())
    assert ep.limit == pytest.approx(grown / 2)
    assert not ep.cut(t0), "a request that started before the last cut must not cut again"
    before = ep.limit
    for _ in range(40):  # latency per token rises 10x above its floor -> multiplicative decrease
        ep.on_success(time.monotonic(), 1.0, 10)
    assert ep.limit < before and ep.cuts >= 2


def test_aimd_shrinks_on_429_and_grows_on_success():
    with StubServer(StubConfig(latency_s=0.03, max_concurrency=4, retry_after_s=0.05)) as s:

        async def go(n):
            cfg = cfg_for(s.url, max_concurrency=32, retry={"max_attempts": 20, "backoff_base_s": 0.01,
                                                             "backoff_max_s": 0.1})
            async with LLMPool(cfg, None) as pool:
                out = await asyncio.gather(*[pool.chat("m", [{"role": "user", "content": f"q{i}"}]) for i in range(n)])
                return out, pool.stats()["m"]

        out, st = run(go(150))
        assert len(out) == 150
        ep = st["endpoints"][0]
        assert st["attempt_errors"].get("rate_limit", 0) > 0 and ep["cuts"] > 0
        assert ep["limit"] < 32, "429s must have cut the limit below its ceiling"

    with StubServer(StubConfig(latency_s=0.02)) as s:

        async def grow():
            cfg = cfg_for(s.url, max_concurrency=24, initial_concurrency=2)
            async with LLMPool(cfg, None) as pool:
                await asyncio.gather(*[pool.chat("m", [{"role": "user", "content": f"g{i}"}]) for i in range(300)])
                return pool.stats()["m"]["endpoints"][0], s.stats()["max_in_flight"]

        ep, max_in_flight = run(grow())
        assert ep["limit"] > 8, "successes must have grown the limit from 2"
        assert max_in_flight > 2


def test_cache_hit_repeats_no_call(stub, home):
    async def go(**kw):
        async with LLMPool(cfg_for(stub.url), CallCache.for_home(home)) as pool:
            return await pool.chat("m", MSG, template_version="t1", **kw)

    a = run(go())
    b = run(go())
    assert not a.cached and b.cached and a.text == b.text
    assert stub.stats()["requests"] == 1
    run(go(sampling={"temperature": 0.1}))  # sampling is part of the key
    run(go(nonce=1))  # a deliberate re-sample
    assert stub.stats()["requests"] == 3


def test_concurrent_identical_calls_share_one_request(stub):
    stub.configure(latency_s=0.2)

    async def go():
        async with LLMPool(cfg_for(stub.url), None) as pool:
            return await asyncio.gather(*[pool.chat("m", MSG) for _ in range(5)])

    res = run(go())
    assert len({r.text for r in res}) == 1 and stub.stats()["requests"] == 1


def test_early_stop_when_error_rate_passes_threshold(stub):
    stub.configure(p_500=1.0)

    async def go():
        cfg = cfg_for(stub.url, max_concurrency=2, retry={"max_attempts": 1}, error_rate_stop=0.5,
                      error_min_calls=10)
        async with LLMPool(cfg, None) as pool:
            res = await asyncio.gather(*[pool.chat("m", [{"role": "user", "content": f"x{i}"}]) for i in range(200)],
                                       return_exceptions=True)
            return res, pool.stopped

    res, stopped = run(go())
    kinds = [r.kind for r in res if isinstance(r, LLMCallError)]
    assert len(kinds) == 200 and "early_stop" in kinds and "server" in kinds
    assert stopped and "error rate" in stopped
    assert stub.stats()["requests"] < 20, "no more requests after the stop"


def test_replicas_are_balanced_and_a_dead_one_is_routed_around():
    with StubServer(StubConfig(latency_s=0.02)) as a, StubServer(StubConfig(latency_s=0.02)) as b:

        stats = {}

        async def go(urls, n):
            async with LLMPool(cfg_for(*urls, max_concurrency=8), None) as pool:
                try:
                    return await asyncio.gather(*[pool.chat("m", [{"role": "user", "content": f"r{i}"}])
                                                  for i in range(n)])
                finally:
                    stats.update(pool.stats()["m"])

        run(go([a.url, b.url], 200))
        na, nb = a.stats()["requests"], b.stats()["requests"]
        assert na + nb == 200 and abs(na - nb) <= 40, (na, nb)

        from flows.llm.embedded import free_port

        dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
        a.reset()
        out = run(go([dead, a.url], 30))
        assert len(out) == 30 and all(r.endpoint == a.url for r in out)
        # connection errors are classified as such and the dead replica cools down instead of taking every retry
        assert 1 <= stats["attempt_errors"].get("connection", 0) <= 10, stats["attempt_errors"]
        assert "timeout" not in stats["attempt_errors"]


def test_api_key_is_sent_but_never_logged_or_stored(home, monkeypatch, caplog):
    secret = "sk-emoforge-test-0123456789abcdef"
    monkeypatch.setenv("EMOFORGE_TEST_LLM_KEY", secret)
    with StubServer(StubConfig(api_key_env="EMOFORGE_TEST_LLM_KEY", fault_schedule=["500", "ok"])) as s:
        cfg = parse_models_config({"models": {"m": {"endpoints": [{"base_url": s.url, "api_key_env": "EMOFORGE_TEST_LLM_KEY"}]}},
                                   "retry": {"backoff_base_s": 0.01}})
        caplog.set_level(logging.DEBUG)
        for name in ("openai", "httpx", "httpx2", "emoforge.llm", "aiohttp"):
            logging.getLogger(name).setLevel(logging.DEBUG)

        async def go():
            async with LLMPool(cfg, CallCache.for_home(home)) as pool:
                res = await pool.chat("m", MSG)
                return res, repr(pool.stats()), repr(pool.config)

        res, stats_text, cfg_text = run(go())
        assert res.attempts == 2 and s.stats()["auth_failures"] == 0  # the key went out with each request
    assert caplog.records, "debug logging was on"
    assert secret not in caplog.text and secret not in stats_text and secret not in cfg_text
    for f in (home / "cache" / "llm").iterdir():
        assert secret.encode() not in f.read_bytes(), f

    monkeypatch.delenv("EMOFORGE_TEST_LLM_KEY")
    with pytest.raises(LLMCallError, match="EMOFORGE_TEST_LLM_KEY .*not set") as ei:
        run(LLMPool(cfg, None).__aenter__())
    assert ei.value.kind == "auth"


def test_unknown_model_is_a_clear_error(stub):
    async def go():
        async with LLMPool(cfg_for(stub.url), None) as pool:
            await pool.chat("nope", MSG)

    with pytest.raises(LLMCallError, match="'nope' is not in the models config"):
        run(go())
