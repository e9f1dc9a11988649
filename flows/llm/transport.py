"""The pool's HTTP path to one OpenAI-compatible endpoint: ``POST <base_url>/chat/completions`` on one aiohttp
session, the body JSON-encoded once, the reply parsed into the fields the pool uses.

Why not the ``AsyncOpenAI`` client's ``post``: per call it builds an httpx request (URL parsing, header merging,
idempotency key), wraps the aiohttp response in an httpx one and constructs a ``ChatCompletion`` model field by
field — about 1.0 ms of CPU per call against 0.2 ms for the same request here (measured side by side against the
project's stub, see docs/benchmarks.md), and at 20 ms latency on a 2-core machine the client side's CPU is what
bounds a build's calls/s. The openai client's retries were off anyway (the pool retries); what it did besides is
done here: bearer auth, the connect/read timeouts, and the failure classes (:class:`EndpointError` carries the
pool's failure kind, the HTTP status and ``Retry-After``). Nothing here logs headers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2  # openai's HTTP types: its SSL context, so https endpoints verify as they did through the client

PLACEHOLDER_KEY = "no-key"  # what an auth-less server (llama.cpp, the stub) sees when no api_key_env is set


class EndpointError(Exception):
    """A failed request: ``kind`` is the pool's failure kind (``rate_limit``, ``timeout``, ``server``, ``auth``,
    ``not_found``, ``bad_request``, ``connection``), with the HTTP status and the reply's ``Retry-After`` headers."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, headers: Any = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.headers = headers


def status_kind(status: int) -> str:
    """The pool's failure kind of an HTTP error status."""
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    if status == 409 or status >= 500:
        return "server"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return "bad_request"


@dataclass
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def parse_completion(raw: bytes) -> Completion:
    """The first choice and the usage of a chat-completions reply. Raises :class:`EndpointError` (``server``) on a
    body that is not one."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion((choice.get("message") or {}).get("content") or "", choice.get("finish_reason") or "stop",
                          int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise EndpointError("server", f"malformed chat-completions reply ({type(exc).__name__}: {exc}): "
                            f"{raw[:200]!r}") from exc


_SSL: Any = None


def _ssl_context() -> Any:
    """The openai client's SSL context (certifi's CA bundle, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured), built
    once: a TLS endpoint is verified exactly as it was through ``DefaultAioHttpClient``."""
    global _SSL
    if _SSL is None:
        _SSL = httpx2.create_ssl_context(verify=True, trust_env=True)
    return _SSL


class ChatTransport:
    """One endpoint's connection pool (created in the running event loop on first use; ``aclose`` ends it)."""

    def __init__(self, base_url: str, timeout_s: float, *, max_connections: int = 100):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout_s), sock_read=timeout_s)
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # a connection per request in flight (aiohttp's own default would cap at 100)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ssl=_ssl_context()),
                timeout=self.timeout, trust_env=False)
        return self._session

    async def chat(self, body: dict, api_key: str | None = None) -> Completion:
        """POST ``body``; the parsed completion, or :class:`EndpointError` / a timeout."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": f"Bearer {api_key or PLACEHOLDER_KEY}"}
        # byte for byte what the openai client sent (its ``openapi_dumps``): a server that keys anything on the
        # body (the stub's seeded replies) answers as before
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        try:
            async with self._open().post(self.url, data=data, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise EndpointError(status_kind(resp.status), f"HTTP {resp.status} from {self.url}: "
                                        f"{raw[:300].decode('utf-8', 'replace')}", status=resp.status,
                                        headers=resp.headers)
        except (EndpointError, asyncio.TimeoutError):
            raise  # a socket timeout (aiohttp's ServerTimeoutError) is an asyncio.TimeoutError: the pool's "timeout"
        except aiohttp.ClientError as exc:  # refused, reset, disconnected, a broken payload
            raise EndpointError("connection", f"{type(exc).__name__}: {exc}") from exc
        return parse_completion(raw)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


__all__ = ["ChatTransport", "Completion", "EndpointError", "PLACEHOLDER_KEY", "parse_completion", "status_kind"]
