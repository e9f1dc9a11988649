"""The pool's HTTP path (flows/llm/transport.py) against a real aiohttp server on loopback that answers what the
stub never does: a 200 whose body is not a chat completion, a 403, a usage-less reply; and the body it sends."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web

from flows.llm.client import LLMCallError, LLMPool
from schemas.config.models import parse_models_config

MSG = [{"role": "user", "content": "Say “hi” — once"}]


def _pool(url: str) -> LLMPool:
    return LLMPool(parse_models_config({"models": {"m": {"endpoints": [{"base_url": url}], "timeout_s": 5}},
                                        "retry": {"backoff_base_s": 0.01, "backoff_max_s": 0.02, "max_attempts": 3}}))


async def _serve(handler, scenario):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        return await scenario(f"http://127.0.0.1:{sock.getsockname()[1]}/v1")
    finally:
        await runner.cleanup()


def test_malformed_reply_is_a_retried_server_error_and_a_good_reply_parses():
    seen: list[bytes] = []
    replies = [web.Response(text="<html>gateway</html>", content_type="text/html"),
               web.json_response({"choices": []}),
               web.json_response({"choices": [{"message": {"content": "hi"}, "finish_reason": None}]})]

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return replies[len(seen) - 1]

    async def scenario(url: str):
        async with _pool(url) as pool:
            return await pool.chat("m", MSG, max_tokens=8), pool.stats()["m"]

    res, stats = asyncio.run(_serve(handler, scenario))
    assert (res.text, res.finish_reason, res.prompt_tokens, res.completion_tokens) == ("hi", "stop", 0, 0)
    assert res.attempts == 3 and stats["attempt_errors"] == {"server": 2}, stats
    # the body as the openai client serialised it: compact, UTF-8, not ASCII-escaped
    assert seen[0] == json.dumps({"model": "m", "messages": MSG, "max_tokens": 8}, ensure_ascii=False,
                                 separators=(",", ":")).encode()


def test_forbidden_is_an_auth_error_that_is_not_retried_and_names_the_status():
    calls = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Authorization"))
        return web.json_response({"error": {"message": "key revoked"}}, status=403)

    async def scenario(url: str):
        async with _pool(url) as pool:
            await pool.chat("m", MSG)

    with pytest.raises(LLMCallError) as err:
        asyncio.run(_serve(handler, scenario))
    assert err.value.kind == "auth" and err.value.status == 403 and err.value.attempts == 1
    assert "HTTP 403" in str(err.value) and "key revoked" in str(err.value)
    assert calls == ["Bearer no-key"]  # no api_key_env: the placeholder an auth-less server sees
