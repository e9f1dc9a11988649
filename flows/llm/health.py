"""Health check of every endpoint in a models config: the server answers ``GET /models``, knows the model name we
send, and completes a one-token chat request. Used by ``emoforge llm check`` and before a run."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import httpx2  # the transport types of openai's DefaultAioHttpClient
from openai import AsyncOpenAI, DefaultAioHttpClient

from schemas.config.models import ModelsConfig


@dataclass
class EndpointHealth:
    model: str
    base_url: str
    ok: bool
    served: list[str]
    latency_s: float | None
    problem: str = ""


async def _check_one(model: str, served_name: str, base_url: str, api_key_env: str | None, timeout: float) -> EndpointHealth:
    key = "no-key"
    if api_key_env:
        key = os.environ.get(api_key_env, "")
        if not key:
            return EndpointHealth(model, base_url, False, [], None, f"environment variable {api_key_env} is not set")
    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout,
                         http_client=DefaultAioHttpClient(timeout=httpx2.Timeout(timeout, connect=min(5.0, timeout))))
    served: list[str] = []
    try:
        try:
            served = [m.id async for m in client.models.list()]
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return EndpointHealth(model, base_url, False, [], None, f"GET /models failed: {_short(exc)}")
        # llama.cpp accepts any model name when it serves one model; vLLM/others need the exact name
        if served and served_name not in served and len(served) > 1:
            return EndpointHealth(model, base_url, False, served, None,
                                  f"server does not serve {served_name!r} (it serves {', '.join(served)})")
        t = time.monotonic()
        try:
            resp = await client.chat.completions.create(model=served_name, max_tokens=1,
                                                        messages=[{"role": "user", "content": "Say OK."}])
        except Exception as exc:  # noqa: BLE001
            return EndpointHealth(model, base_url, False, served, None, f"chat completion failed: {_short(exc)}")
        if not resp.choices:
            return EndpointHealth(model, base_url, False, served, None, "chat completion returned no choices")
        return EndpointHealth(model, base_url, True, served, time.monotonic() - t)
    finally:
        await client.close()


def _short(exc: BaseException) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s[:240]


async def check_endpoints(config: ModelsConfig, timeout: float = 60.0) -> list[EndpointHealth]:
    jobs = []
    for name, spec in config.models.items():
        for ep in spec.endpoints:
            jobs.append(_check_one(name, spec.request_name, ep.base_url, ep.api_key_env, timeout))
    return list(await asyncio.gather(*jobs))
