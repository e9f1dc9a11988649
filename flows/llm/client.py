"""``LLMPool``: every LLM call of a run goes through here (OpenAI chat-completions protocol, any compatible server).

What it does per call: cache lookup (``CallCache``) → wait for a slot on the least-busy replica (AIMD limiter,
``limiter.py``) → ``POST /chat/completions`` on the replica's aiohttp session (:mod:`flows.llm.transport`, the
body as is) → classify the outcome → retry retryable failures with full-jitter exponential backoff (``Retry-After`` honoured, and the replica cools
down meanwhile) → store the completion → account tokens and latency.

The ``AsyncOpenAI`` client is not on this path: its retries had to be off anyway (its retry loop sleeps while
holding our concurrency slot, cannot move a retry to another replica, and hides 429s from the AIMD limiter), and
its request and response models cost 5x the CPU of the request itself, which at low latency bounds a build's
calls/s (:mod:`flows.llm.transport` says what replaced it). ``flows.llm.health`` still uses the client.

Failure kinds (``LLMCallError.kind``): ``rate_limit``, ``server`` (5xx), ``timeout``, ``connection`` (retried);
``length`` (finish_reason == "length": truncated output is a failure), ``invalid_json``, ``bad_request``, ``auth``,
``not_found`` (not retried); ``early_stop`` (the run's recent error rate passed ``error_rate_stop``).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, NoReturn

import jsonschema

from flows.llm.cache import CallCache, call_key
from flows.llm.transport import ChatTransport, EndpointError
from schemas.config.models import ModelsConfig, ModelSpec
from schemas.stats import percentile
from flows.llm.limiter import Endpoint, Router

log = logging.getLogger("emoforge.llm")

RETRYABLE = frozenset({"rate_limit", "server", "timeout", "connection"})


@dataclass
class ChatResult:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool
    model: str
    attempts: int = 0
    endpoint: str | None = None
    key: str = ""


class LLMCallError(Exception):
    """A call that failed for good (after retries where the kind is retryable)."""

    def __init__(self, kind: str, message: str, *, model: str = "", attempts: int = 0, status: int | None = None,
                 text: str | None = None, cached: bool = False):
        super().__init__(f"[{kind}] {model + ': ' if model else ''}{message}")
        self.kind = kind
        self.model = model
        self.attempts = attempts
        self.status = status
        self.text = text  # the (truncated / invalid) output when there was one
        self.cached = cached

    def __reduce__(self):  # picklable across process boundaries (Dask / process pools)
        msg = str(self)
        prefix = f"[{self.kind}] {self.model + ': ' if self.model else ''}"
        return (_rebuild_error, (type(self), self.kind, msg[len(prefix):] if msg.startswith(prefix) else msg,
                                 dict(model=self.model, attempts=self.attempts, status=self.status, text=self.text,
                                      cached=self.cached)))


def _rebuild_error(cls: type, kind: str, message: str, kw: dict) -> "LLMCallError":
    return cls(kind, message, **kw)


class EarlyStop(LLMCallError):
    """Raised by every call once the run's error rate passed the threshold."""


@dataclass
class ModelStats:
    requests: int = 0  # chat() invocations
    calls: int = 0  # completed server calls
    cached: int = 0
    retries: int = 0
    repairs: int = 0
    errors: Counter = field(default_factory=Counter)  # final failures by kind
    attempt_errors: Counter = field(default_factory=Counter)  # every failed attempt by kind
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    first_start: float | None = None
    last_end: float | None = None

    def record_success(self, prompt_tokens: int, completion_tokens: int, latency: float) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.latencies.append(latency)
        self.last_end = time.monotonic()

    def summary(self) -> dict[str, Any]:
        busy = (self.last_end - self.first_start) if self.first_start and self.last_end else 0.0
        return {
            "requests": self.requests,
            "calls": self.calls,
            "cached": self.cached,
            "retries": self.retries,
            "repairs": self.repairs,
            "errors": dict(self.errors),
            "attempt_errors": dict(self.attempt_errors),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_p50": percentile(self.latencies, 0.5, 4),
            "latency_p90": percentile(self.latencies, 0.9, 4),
            "latency_p99": percentile(self.latencies, 0.99, 4),
            "tokens_per_s": round(self.completion_tokens / busy, 2) if busy > 0 else None,
            "calls_per_s": round(self.calls / busy, 2) if busy > 0 else None,
        }


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        ra = headers.get("retry-after")
        if ra is None:
            return None
        try:
            return max(0.0, float(ra))
        except ValueError:
            dt = email.utils.parsedate_to_datetime(ra)
            return max(0.0, dt.timestamp() - time.time())
    except Exception:  # malformed header: ignore it
        return None


def _classify(exc: BaseException) -> tuple[str, int | None, float | None]:
    """(kind, http status, retry-after seconds) of an exception raised by the transport."""
    if isinstance(exc, EndpointError):
        retryable = exc.kind in ("rate_limit", "timeout", "server")
        return exc.kind, exc.status, _retry_after(exc.headers) if retryable else None
    if isinstance(exc, asyncio.TimeoutError):
        if any(isinstance(c, OSError) and not isinstance(c, TimeoutError) for c in _causes(exc)):
            return "connection", None, None
        return "timeout", None, None
    if isinstance(exc, (json.JSONDecodeError, ValueError, KeyError, IndexError, TypeError, AttributeError)):
        return "server", None, None  # malformed response body
    return "connection", None, None


def _causes(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc.__cause__ or exc.__context__
    while cur is not None and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```\s*$", re.S)


def parse_json_reply(text: str, schema: dict | None = None) -> tuple[dict | None, str]:
    """Parse a JSON object from a model reply (code fences and leading/trailing prose tolerated) and validate it
    against ``schema``. Returns (object, "") or (None, reason)."""
    s = _FENCE.sub("", text.strip())
    obj: Any = None
    try:
        obj = json.loads(s)
    except json.JSONDecodeError:
        start, end = s.find("{"), s.rfind("}")
        if start >= 0 and end > start:
            try:
                obj = json.loads(s[start : end + 1])
            except json.JSONDecodeError as exc:
                return None, f"not valid JSON ({exc.msg} at char {exc.pos})"
        else:
            return None, "no JSON object in the reply"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if schema:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path) or "<root>"
            return None, f"schema violation at {where}: {e.message[:200]}"
    return obj, ""


class LLMPool:
    """All LLM calls of one run. ``async with LLMPool(cfg, cache) as pool: await pool.chat(model, messages)``."""

    def __init__(self, config: ModelsConfig, cache: CallCache | None = None, *, stats: dict[str, ModelStats] | None = None,
                 seed: int | None = None):
        missing = config.without_endpoints()
        if missing:
            raise ValueError(
                f"models {missing} have no endpoints: embedded ones are started with "
                "flows.llm.embedded.embedded_servers(config, home); for vllm ones run `emoforge llm vllm-command` and "
                "use the models YAML it writes"
            )
        self.config = config
        self.cache = cache
        self._stats: dict[str, ModelStats] = stats if stats is not None else {}
        self._rng = random.Random(seed)
        self._routers: dict[str, Router] = {}
        self._outcomes: deque[bool] = deque(maxlen=config.error_window)
        self._stopped: str | None = None
        self._inflight: dict[str, asyncio.Future] = {}
        self._clients: list[ChatTransport] = []
        self._opened = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            return
        by_url: dict[tuple[str, float], ChatTransport] = {}
        for name, spec in self.config.models.items():
            self._stats.setdefault(name, ModelStats())
            eps = []
            for es in spec.endpoints:
                if es.api_key_env and es.api_key_env not in os.environ:
                    raise LLMCallError("auth", f"environment variable {es.api_key_env} (api_key_env of {es.base_url}) "
                                       "is not set", model=name)
                ceiling = es.max_concurrency or spec.max_concurrency
                ck = (es.base_url, spec.timeout_s)
                client = by_url.get(ck)
                if client is None:
                    # the key goes in per request (read from the environment at call time)
                    client = ChatTransport(es.base_url, spec.timeout_s, max_connections=max(100, 2 * ceiling))
                    by_url[ck] = client
                    self._clients.append(client)
                eps.append(Endpoint(url=es.base_url, ceiling=ceiling, policy=self.config.aimd,
                                    limit=float(min(ceiling, spec.initial_concurrency or ceiling)),
                                    client=client, api_key_env=es.api_key_env))
            self._routers[name] = Router(eps)
        self._opened = True

    async def __aenter__(self) -> "LLMPool":
        self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for r in self._routers.values():
            r.close()
        for c in self._clients:
            try:
                await c.aclose()
            except Exception:  # pragma: no cover - best effort on shutdown
                pass
        self._clients.clear()
        self._opened = False

    # -- early stop ------------------------------------------------------------------------------------------
    @property
    def stopped(self) -> str | None:
        """Why the run stopped early, or None."""
        return self._stopped

    def _outcome(self, ok: bool, kind: str = "") -> None:
        self._outcomes.append(ok)
        if ok or self._stopped:
            return
        n = len(self._outcomes)
        if n >= self.config.error_min_calls:
            rate = self._outcomes.count(False) / n
            if rate > self.config.error_rate_stop:
                self._stop(f"error rate {rate:.0%} over the last {n} calls passed error_rate_stop="
                           f"{self.config.error_rate_stop:.0%} (last error: {kind})")

    def _stop(self, reason: str) -> None:
        self._stopped = reason
        log.error("early stop: %s", reason)
        for name, router in self._routers.items():
            router.abort(EarlyStop("early_stop", reason, model=name))

    def _check_stop(self, model: str) -> None:
        if self._stopped:
            raise EarlyStop("early_stop", self._stopped, model=model)

    # -- calls -----------------------------------------------------------------------------------------------
    def _spec(self, model: str) -> ModelSpec:
        try:
            return self.config.models[model]
        except KeyError:
            raise LLMCallError("not_found", f"model {model!r} is not in the models config "
                               f"(known: {', '.join(self.config.models)})", model=model) from None

    def request_key(self, model: str, messages: list[dict], *, sampling: dict | None = None,
                    response_format: dict | None = None, template_version: str = "", max_tokens: int | None = None,
                    nonce: str | int | None = None) -> tuple[str, dict]:
        """(cache key, effective sampling) of a call, without making it."""
        spec = self._spec(model)
        eff = dict(spec.sampling)
        if sampling:
            eff.update(sampling)
        if max_tokens is not None:
            eff["max_tokens"] = max_tokens
        return call_key(spec.request_name, messages, eff, response_format, template_version, nonce), eff

    async def chat(self, model: str, messages: list[dict], *, sampling: dict | None = None,
                   response_format: dict | None = None, template_version: str = "", max_tokens: int | None = None,
                   nonce: str | int | None = None) -> ChatResult:
        """One chat completion. Cached calls return at once (``cached=True``); identical calls in flight at the same
        time share one request. ``nonce`` makes an otherwise identical call distinct (a deliberate re-sample).
        Raises ``LLMCallError``."""
        if not self._opened:
            self._open()
        self._spec(model)
        st = self._stats[model]
        st.requests += 1
        self._check_stop(model)
        key, eff = self.request_key(model, messages, sampling=sampling, response_format=response_format,
                                    template_version=template_version, max_tokens=max_tokens, nonce=nonce)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                st.cached += 1
                res = ChatResult(hit.text, hit.finish_reason, hit.prompt_tokens, hit.completion_tokens,
                                 hit.latency_s, True, model, 0, None, key)
                if res.finish_reason == "length":
                    raise LLMCallError("length", "output truncated at max_tokens (cached)", model=model,
                                       text=res.text, cached=True)
                return res
        while (shared := self._inflight.get(key)) is not None:
            try:
                res = await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled ourselves
                continue  # the call we shared was cancelled: make it ourselves
            st.cached += 1
            return ChatResult(**{**res.__dict__, "cached": True})
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            res = await self._call(model, messages, eff, response_format, template_version, key)
            fut.set_result(res)
            return res
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody may be sharing it
            raise
        except BaseException:
            fut.cancel()
            raise
        finally:
            del self._inflight[key]

    async def _call(self, model: str, messages: list[dict], eff: dict, response_format: dict | None,
                    template_version: str, key: str) -> ChatResult:
        spec = self.config.models[model]
        router = self._routers[model]
        st = self._stats[model]
        pol = self.config.retry
        body: dict[str, Any] = {"model": spec.request_name, "messages": messages, **eff}
        if response_format is not None:
            body["response_format"] = response_format
        last: LLMCallError | None = None
        last_cause = ("", "")
        for attempt in range(1, pol.max_attempts + 1):
            self._check_stop(model)
            ep = await router.acquire()
            if self._stopped:  # stopped while we waited for a slot
                router.release(ep)
                self._check_stop(model)
            started = time.monotonic()
            if st.first_start is None:
                st.first_start = started
            api_key = None
            retry_after = None
            try:
                if ep.api_key_env:
                    api_key = os.environ.get(ep.api_key_env)
                    if not api_key:
                        raise LLMCallError("auth", f"environment variable {ep.api_key_env} is not set", model=model)
                # the transport's timeout is per socket read; this one bounds the whole call
                async with asyncio.timeout(spec.timeout_s + 1.0):
                    reply = await ep.client.chat(body, api_key)
                text, finish = reply.text, reply.finish_reason
                ptok, ctok = reply.prompt_tokens, reply.completion_tokens
            except LLMCallError:
                router.release(ep)
                raise
            except asyncio.CancelledError:
                router.release(ep)
                raise
            except Exception as exc:
                kind, status, retry_after = _classify(exc)
                latency = time.monotonic() - started
                _after_failure(router, ep, kind, retry_after, started, pol.max_retry_after_s)
                st.attempt_errors[kind] += 1
                msg = _connection_cause(exc) if kind == "connection" else _short(exc)
                last_cause = (msg, ep.url)
                last = LLMCallError(kind, f"{msg} (attempt {attempt}/{pol.max_attempts}, {ep.url}, {latency:.2f}s)",
                                    model=model, attempts=attempt, status=status)
                if kind not in RETRYABLE:
                    break
                if attempt < pol.max_attempts:
                    st.retries += 1
                    delay = self._rng.uniform(0, min(pol.backoff_max_s, pol.backoff_base_s * 2 ** (attempt - 1)))
                    if retry_after:
                        delay = max(delay, min(retry_after, pol.max_retry_after_s))
                    log.debug("retry %s in %.2fs after %s", model, delay, kind)
                    await asyncio.sleep(delay)
                continue
            latency = time.monotonic() - started
            ep.on_success(started, latency, ctok)
            router.release(ep)  # hands the freed slot (and any the limit just gained) to waiting requests
            st.record_success(ptok, ctok, latency)
            if self.cache is not None:
                # committed (by the cache's writer thread, grouped with other calls) before the caller sees it
                await self.cache.put_async(key, model=spec.request_name, text=text, finish_reason=finish, prompt_tokens=ptok,
                               completion_tokens=ctok, latency_s=latency, template_version=template_version)
            if finish == "length":
                st.errors["length"] += 1
                self._outcome(True)  # the endpoint answered: a cut-off reply is content the caller judges, not an endpoint error
                raise LLMCallError("length", f"output truncated at max_tokens={eff.get('max_tokens')}",
                                   model=model, attempts=attempt, text=text)
            self._outcome(True)
            return ChatResult(text, finish, ptok, ctok, latency, False, model, attempt, ep.url, key)
        assert last is not None
        self._give_up(model, last, last_cause)

    def _give_up(self, model: str, last: LLMCallError, last_cause: tuple[str, str]) -> NoReturn:
        """A call that failed through its attempts: counted, and raised; a model never reached in this run stops
        the run (``EarlyStop``) naming the endpoint and the cause."""
        st = self._stats[model]
        st.errors[last.kind] += 1
        if last.kind == "connection" and st.calls == 0 and not self._stopped:
            # never reached since the run began, through every retry: more calls would only repeat that
            self._stop(f"cannot reach model {model!r} at {last_cause[1]}: {last_cause[0]}, {last.attempts} attempts, "
                       "and no call to it has succeeded in this run: check that the server is running and that "
                       "base_url in the models config is right")
            self._outcome(False, last.kind)
            raise EarlyStop("early_stop", self._stopped, model=model, attempts=last.attempts)
        self._outcome(False, last.kind)
        raise last

    async def chat_json(self, model: str, messages: list[dict], *, schema: dict, template_version: str,
                        sampling: dict | None = None, max_tokens: int | None = None, schema_name: str = "response",
                        nonce: str | int | None = None) -> tuple[dict, ChatResult]:
        """Structured output: ``response_format = json_schema``; the reply is parsed and validated against
        ``schema``; on invalid JSON one repair call shows the model its reply and the problem. Raises
        ``LLMCallError('invalid_json')`` when the repair fails too."""
        rf = {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema, "strict": True}}
        res = await self.chat(model, messages, sampling=sampling, response_format=rf,
                              template_version=template_version, max_tokens=max_tokens, nonce=nonce)
        obj, why = parse_json_reply(res.text, schema)
        if obj is not None:
            return obj, res
        self._stats[model].repairs += 1
        repair = list(messages) + [
            {"role": "assistant", "content": res.text},
            {"role": "user", "content": f"Your reply was not usable: {why}. Reply again with only one JSON object "
                                        "that matches the required schema, nothing else."},
        ]
        res2 = await self.chat(model, repair, sampling=sampling, response_format=rf,
                               template_version=f"{template_version}+repair", max_tokens=max_tokens, nonce=nonce)
        obj, why2 = parse_json_reply(res2.text, schema)
        if obj is not None:
            return obj, res2
        self._stats[model].errors["invalid_json"] += 1
        self._outcome(False, "invalid_json")
        raise LLMCallError("invalid_json", f"{why2} (after one repair attempt)", model=model, text=res2.text,
                           cached=res2.cached)

    # -- accounting ------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Per model: calls, cached, retries, errors by kind, tokens, latency p50/p90/p99, tokens/s, and per
        endpoint its current AIMD limit."""
        out: dict[str, Any] = {}
        for name, st in self._stats.items():
            d = st.summary()
            r = self._routers.get(name)
            if r is not None:
                d["endpoints"] = [ep.snapshot() for ep in r.endpoints]
                d["waiting"] = r.waiting
            out[name] = d
        return out


def _after_failure(router: Router, ep: Endpoint, kind: str, retry_after: float | None, started: float,
                   max_retry_after_s: float) -> None:
    """The replica's side of a failed attempt: AIMD cut on overload, a cool-down (Retry-After, or a replica that is
    down or keeps failing), and the slot released."""
    ep.failures += 1
    ep.consecutive_failures += 1
    if kind in ("rate_limit", "timeout"):
        ep.cut(started)
    if retry_after:
        router.cool_down(ep, min(retry_after, max_retry_after_s))
    elif len(router.endpoints) > 1 and ep.cooldown_until <= time.monotonic() and (
            kind == "connection" or (kind == "server" and ep.consecutive_failures >= 3)):
        # a replica that is down (or keeps failing) is left alone for a while, doubling up to 30 s,
        # so the other replicas take the traffic (with one replica, the retry backoff does the waiting)
        ep.cooldowns += 1
        router.cool_down(ep, min(30.0, 0.5 * 2 ** min(ep.cooldowns - 1, 6)))
    router.release(ep)


def _connection_cause(exc: BaseException) -> str:
    """What really failed when the transport could not talk to the server: the operating system's error
    ("connection refused") rather than the wrapper's text (the aiohttp transport calls a refusal a timeout)."""
    for cause in _causes(exc):
        cause = getattr(cause, "os_error", None) or cause  # aiohttp's ClientConnectorError wraps the OS's error
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            if isinstance(cause, ConnectionRefusedError):
                return f"connection refused ({cause.strerror or cause})"
            if isinstance(cause, ConnectionResetError):
                return f"connection reset by the server ({cause.strerror or cause})"
            return f"cannot connect: {type(cause).__name__}: {cause.strerror or cause}"
    return f"cannot connect: {_short(exc)}"


def _short(exc: BaseException) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s if len(s) < 300 else s[:300] + "..."
