"""An OpenAI-compatible stub server (aiohttp, loopback) for tests, benchmarks and fault drills.

It answers ``POST /v1/chat/completions`` with plausible dialogue turns (steered by an emotion it finds in the
prompt) or, for ``response_format: json_schema`` requests, with a JSON object generated from the schema. Faults are
injected with configurable probabilities: 429 with ``Retry-After``, 500, hangs past the client's timeout, truncated
answers (``finish_reason: length``), invalid JSON. A fault is a pure function of (seed, request body, how many times
this body was seen), so a run is reproducible whatever the order requests arrive in. Optionally answers 429 when
more than ``max_concurrency`` requests are in flight (a real rate limit for AIMD tests) and checks an API key.

Counts of what it received: ``GET /stats`` (and ``StubServer.stats()`` in process); ``POST /reset``;
``POST /config`` changes fault settings at run time.

Run it: in a thread (``with StubServer(StubConfig(...)) as stub: stub.url``), in a subprocess
(``with stub_process(StubConfig(...)) as url: ...``) or from a shell:
``python -m flows.llm.stub --port 8089 --p-429 0.1 --latency-s 0.05``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from aiohttp import web

FAULTS = ("429", "500", "hang", "length", "invalid_json", "json_fragment", "markup", "echo")
CONTENT_FAULTS = ("json_fragment", "markup", "echo")  # a 200 answer whose text is not a spoken line (chat only)


@dataclass
class StubConfig:
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    tokens_per_s: float | None = None  # adds completion_tokens / tokens_per_s to the latency
    p_429: float = 0.0
    p_500: float = 0.0
    p_hang: float = 0.0
    p_length: float = 0.0
    p_invalid_json: float = 0.0  # only json_schema / json_object requests
    # malformed content in a 200 answer to a plain chat request: a fragment of JSON, markup, the prompt echoed back
    p_json_fragment: float = 0.0
    p_markup: float = 0.0
    p_echo: float = 0.0
    retry_after_s: float = 0.5
    hang_s: float = 3600.0
    max_concurrency: int | None = None  # more in flight than this -> 429 with Retry-After
    api_key_env: str | None = None  # when set, requests must carry "Authorization: Bearer $<env>"
    seed: int = 0
    models: list[str] | None = None  # when set, other model names get 404
    # fate of the n-th occurrence of every request body ("ok" or a fault name), before the probabilities apply:
    # ["429", "ok"] -> each distinct request is first rate-limited, then answered
    fault_schedule: list[str] | None = None

    def __post_init__(self) -> None:
        bad = [f for f in (self.fault_schedule or []) if f not in FAULTS + ("ok",)]
        if bad:
            raise ValueError(f"fault_schedule: unknown fates {bad}; use ok or {', '.join(FAULTS)}")
        total = sum(self.fault_probs().values())
        if total > 1:
            raise ValueError(f"fault probabilities sum to {total:g} > 1")

    def fault_probs(self) -> dict[str, float]:
        return {"429": self.p_429, "500": self.p_500, "hang": self.p_hang, "length": self.p_length,
                "invalid_json": self.p_invalid_json, "json_fragment": self.p_json_fragment, "markup": self.p_markup,
                "echo": self.p_echo}


EMOTIONS = [
    "amused", "angry", "bored", "anxious", "confused", "curious", "disappointed", "embarrassed", "enthusiastic",
    "excited", "frustrated", "grateful", "happy", "hopeful", "nostalgic", "proud", "relieved", "sad", "surprised",
    "worried", "fearful", "neutral", "disgusted", "calm", "jealous", "lonely", "content",
]
_OPENERS = {
    "amused": ["Ha, that is actually pretty funny", "Oh, I can't help laughing at that"],
    "angry": ["This is completely unacceptable", "I am furious about how this went"],
    "bored": ["Honestly, this is getting a bit dull", "We have gone over this so many times"],
    "anxious": ["I keep worrying that something will go wrong", "My stomach is in knots about this"],
    "confused": ["Wait, I don't quite follow", "I'm lost, what do you mean exactly"],
    "curious": ["Oh, tell me more about that", "I wonder how that actually works"],
    "disappointed": ["I really expected more than this", "That is such a letdown"],
    "embarrassed": ["Oh no, I can't believe I did that", "That was so awkward of me"],
    "enthusiastic": ["I love this idea so much", "Let's do it, this is going to be great"],
    "excited": ["I can hardly wait for this", "This is amazing news"],
    "frustrated": ["Why does this keep happening", "I have tried everything and nothing works"],
    "grateful": ["Thank you so much for helping", "I really appreciate what you did"],
    "happy": ["This makes me so glad", "What a lovely thing to hear"],
    "hopeful": ["I think things might work out", "Maybe this time it will be different"],
    "nostalgic": ["This reminds me of the old days", "I miss how things used to be"],
    "proud": ["I worked hard and it paid off", "I am really proud of how this turned out"],
    "relieved": ["Phew, what a relief", "I'm so glad that is finally over"],
    "sad": ["That makes me feel really down", "I can't stop feeling sad about it"],
    "surprised": ["Wow, I did not see that coming", "Really? That is unexpected"],
    "worried": ["I'm worried this won't go well", "What if it all falls apart"],
    "fearful": ["I'm scared of what happens next", "This frightens me more than I admit"],
}
_MIDDLES = [
    "about the {d}", "with the whole {d} situation", "now that we talked about the {d}", "when it comes to the {d}",
    "after everything with the {d}", "regarding our {d} plans",
]
_CLOSERS = ["", "What do you think?", "Can we talk it through?", "I just needed to say it.", "Does that make sense?",
            "Let's see how it goes."]


def _emotion_of(text: str) -> str:
    m = re.search(r"(?i)\b(?:emotion|feeling|feel|sound|tone)\b[^A-Za-z]{0,4}(?:is\s+|of\s+|:\s*)?\"?([A-Za-z]+)", text)
    if m and m.group(1).lower() in EMOTIONS:
        return m.group(1).lower()
    low = text.lower()
    best = None
    for e in EMOTIONS:
        i = low.rfind(e)
        if i >= 0 and (best is None or i > best[0]):
            best = (i, e)
    return best[1] if best else "neutral"


def _domain_of(text: str) -> str:
    m = re.search(r"(?i)\b(?:domain|topic|about)\b\s*[:=]?\s*\"?([A-Za-z][A-Za-z \-&]{2,30})", text)
    if m:
        return " ".join(m.group(1).strip().split()[:3]).lower()
    return "plan"


def _turn_count(text: str) -> int:
    return len(re.findall(r"(?m)^\s*(?:\[?\d+\]?[.):]?\s*)?(?:speaker\s+)?(?:A|B)\s*(?:\([^)]*\))?\s*:", text, re.I))


def dialogue_turn(messages: list[dict], rng: random.Random) -> str:
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "assistant")
    last = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), prompt)
    emo = _emotion_of(last) if last else _emotion_of(prompt)
    dom = _domain_of(prompt)
    opener = rng.choice(_OPENERS.get(emo, ["I see what you mean", "Okay, let me think about it"]))
    mid = rng.choice(_MIDDLES).format(d=dom)
    return " ".join(x for x in (f"{opener} {mid}.", rng.choice(_CLOSERS)) if x)


def malformed_turn(fate: str, messages: list[dict], rng: random.Random) -> str:
    """What a misbehaving server answers instead of a spoken line (the faults seen in the wild, issue 11)."""
    if fate == "json_fragment":
        return rng.choice(['{"coherence": 5, "verdict": ', '{"text": "Sure, that sounds good."}', '[{"role": "assistant"'])
    if fate == "markup":
        return rng.choice(["<p>I think we should go.</p>", "**Speaker B:** That is great news!",
                           "```\nThat is great news.\n```", "## Reply\nThat is great news."])
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    user = next((str(m.get("content", "")) for m in messages if m.get("role") == "user"), "")
    return rng.choice([system.split(". ")[0] + ".", "My next line, My response to you asked if you are fine.",
                       " ".join(user.split()[-14:])])


def instance_from_schema(schema: dict, rng: random.Random, *, root: dict | None = None, n_items: int = 0,
                         depth: int = 0) -> Any:
    """A value that validates against a (reasonable subset of) JSON Schema: $ref/$defs, anyOf/oneOf/allOf, enum,
    const, object, array, string, integer, number, boolean, null."""
    root = root or schema
    if depth > 12:
        return None
    if "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return instance_from_schema(node, rng, root=root, n_items=n_items, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for comb in ("anyOf", "oneOf"):
        if comb in schema:
            opts = [o for o in schema[comb] if o.get("type") != "null"] or schema[comb]
            return instance_from_schema(opts[0], rng, root=root, n_items=n_items, depth=depth + 1)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(part)
        return instance_from_schema(merged, rng, root=root, n_items=n_items, depth=depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "string"
    if t == "object":
        props = schema.get("properties", {})
        return {k: instance_from_schema(v, rng, root=root, n_items=n_items, depth=depth + 1) for k, v in props.items()}
    if t == "array":
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, n_items or 3)))
        n = min(max(lo, n_items or max(lo, min(hi, 3))), hi)
        return [instance_from_schema(schema.get("items", {}), rng, root=root, n_items=n_items, depth=depth + 1)
                for _ in range(n)]
    if t == "integer":
        lo = schema.get("minimum")
        if lo is None:
            lo = schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else 0
        hi = schema.get("maximum")
        if hi is None:
            hi = schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else lo + 10
        return rng.randint(int(lo), max(int(lo), int(hi)))
    if t == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 1.0))
        return round(rng.uniform(lo, hi), 3)
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    words = rng.sample(["clear", "natural", "fits", "the", "emotion", "coherent", "turn", "tone", "reply", "mostly"], 5)
    s = " ".join(words).capitalize() + "."
    lo = int(schema.get("minLength", 0))
    hi = int(schema.get("maxLength", 10_000))
    s = (s + " ok" * lo)[: max(lo, min(len(s), hi))] if lo > len(s) else s[:hi]
    return s


class _State:
    def __init__(self, cfg: StubConfig):
        self.cfg = cfg
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.requests = 0
            self.outcomes: Counter = Counter()
            self.models: Counter = Counter()
            self.seen: Counter = Counter()  # body hash -> times seen
            self.in_flight = 0
            self.max_in_flight = 0
            self.completion_tokens = 0
            self.auth_failures = 0
            self.started = time.time()

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "requests": self.requests,
                "ok": self.outcomes.get("ok", 0),
                "outcomes": dict(self.outcomes),
                "models": dict(self.models),
                "unique_bodies": len(self.seen),
                "repeated_bodies": sum(1 for v in self.seen.values() if v > 1),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "completion_tokens": self.completion_tokens,
                "auth_failures": self.auth_failures,
                "config": dataclasses.asdict(self.cfg) | {"api_key_env": bool(self.cfg.api_key_env)},
            }


def _fate(cfg: StubConfig, body_hash: str, nth: int, json_req: bool) -> str:
    if cfg.fault_schedule and nth < len(cfg.fault_schedule):
        return cfg.fault_schedule[nth]
    h = hashlib.sha256(f"{cfg.seed}:{body_hash}:{nth}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    acc = 0.0
    for name, p in cfg.fault_probs().items():
        if (name == "invalid_json" and not json_req) or (name in CONTENT_FAULTS and json_req):
            continue
        acc += p
        if u < acc:
            return name
    return "ok"


def _error(status: int, message: str, etype: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": etype, "code": status}}, status=status,
                             headers=headers)


def _completion(fate: str, body: dict, messages: list, rf: dict, json_req: bool,
                rng: random.Random) -> tuple[str, int, str]:
    """The reply's text, its completion tokens (words) and finish reason for a request given its fate: a JSON
    object from the request's schema (cut short for ``invalid_json``), a malformed turn for a content fault, or a
    dialogue turn; cut at ``max_tokens`` (or halved for ``length``)."""
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    if json_req:
        schema = ((rf.get("json_schema") or {}).get("schema")) or {"type": "object"}
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        obj = instance_from_schema(schema, rng, n_items=_turn_count(prompt))
        text = json.dumps(obj)
        if fate == "invalid_json":
            text = text[: max(1, len(text) // 2)].rstrip("}") + ' "rationale": oops'
    elif fate in CONTENT_FAULTS:
        text = malformed_turn(fate, messages, rng)
    else:
        text = dialogue_turn(messages, rng)
    words = text.split()
    ctoks = len(words)
    finish = "stop"
    if fate == "length" or ctoks > max_tokens:
        keep = max(1, min(max_tokens, len(words) // 2 if fate == "length" else max_tokens))
        text = " ".join(words[:keep])
        ctoks = keep
        finish = "length"
    return text, ctoks, finish


def _chat_handler(state: _State):
    """``POST /v1/chat/completions``: counts the request, decides its fate, answers after the configured delay."""

    async def chat(request: web.Request) -> web.StreamResponse:
        cfg = state.cfg
        raw = await request.read()
        try:
            body = json.loads(raw)
            messages = body["messages"]
        except (ValueError, KeyError):
            return _error(400, "body must be JSON with 'messages'", "invalid_request_error")
        if cfg.api_key_env:
            want = os.environ.get(cfg.api_key_env, "")
            if request.headers.get("Authorization", "") != f"Bearer {want}" or not want:
                with state.lock:
                    state.auth_failures += 1
                return _error(401, "invalid API key", "authentication_error")
        model = str(body.get("model", ""))
        if cfg.models is not None and model not in cfg.models:
            return _error(404, f"model {model!r} not found", "not_found_error")
        bh = hashlib.sha256(raw).hexdigest()
        rf = body.get("response_format") or {}
        json_req = rf.get("type") in ("json_schema", "json_object")
        with state.lock:
            state.requests += 1
            state.models[model] += 1
            nth = state.seen[bh]
            state.seen[bh] += 1
            over = cfg.max_concurrency is not None and state.in_flight >= cfg.max_concurrency
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            fate = "429" if over else _fate(cfg, bh, nth, json_req)
            rng = random.Random(f"{cfg.seed}:{bh}:{nth}")
            if fate == "429":
                with state.lock:
                    state.outcomes["429"] += 1
                return _error(429, "rate limited (stub)", "rate_limit_error",
                              {"Retry-After": f"{cfg.retry_after_s:g}"})
            if fate == "500":
                with state.lock:
                    state.outcomes["500"] += 1
                return _error(500, "internal error (stub)", "server_error")
            if fate == "hang":
                with state.lock:
                    state.outcomes["hang"] += 1
                await asyncio.sleep(cfg.hang_s)
            text, ctoks, finish = _completion(fate, body, messages, rf, json_req, rng)
            delay = cfg.latency_s + (rng.uniform(0, cfg.latency_jitter_s) if cfg.latency_jitter_s else 0.0)
            if cfg.tokens_per_s:
                delay += ctoks / cfg.tokens_per_s
            if delay > 0:
                await asyncio.sleep(delay)
            ptoks = sum(len(str(m.get("content", "")).split()) for m in messages)
            with state.lock:
                state.outcomes["ok" if fate in ("ok", "hang") else fate] += 1
                state.completion_tokens += ctoks
            return web.json_response({
                "id": f"chatcmpl-stub-{bh[:12]}-{nth}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": ptoks, "completion_tokens": ctoks, "total_tokens": ptoks + ctoks},
            })
        finally:
            with state.lock:
                state.in_flight -= 1

    return chat


def make_app(state: _State) -> web.Application:
    chat = _chat_handler(state)

    async def models(request: web.Request) -> web.Response:
        names = state.cfg.models or ["stub"]
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model", "owned_by": "stub"}
                                                             for n in names]})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.snapshot())

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def config(request: web.Request) -> web.Response:
        changes = await request.json()
        known = {f.name for f in dataclasses.fields(StubConfig)}
        bad = sorted(set(changes) - known)
        if bad:
            return _error(400, f"unknown stub settings {bad}", "invalid_request_error")
        state.cfg = dataclasses.replace(state.cfg, **changes)
        return web.json_response(dataclasses.asdict(state.cfg))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/config", config)
    return app


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"stub server: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class StubServer:
    """The stub in a background thread with its own event loop: ``with StubServer(cfg) as s: s.url``."""

    def __init__(self, config: StubConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.state = _State(config or StubConfig())
        self.host = host
        self._sock = _bind(host, port)
        self.port = self._sock.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "StubServer":
        self._thread = threading.Thread(target=self._run, name=f"stub-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("stub server did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._serve())
        loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(make_app(self.state), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.SockSite(runner, self._sock)
        await site.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def stats(self) -> dict:
        return self.state.snapshot()

    def reset(self) -> None:
        self.state.reset()

    def configure(self, **changes: Any) -> None:
        self.state.cfg = dataclasses.replace(self.state.cfg, **changes)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def stub_process(config: StubConfig | None = None, port: int = 0, env: dict | None = None) -> Iterator[str]:
    """The stub in its own process (its CPU use stays out of the client's process); yields its /v1 base URL."""
    cfg = config or StubConfig()
    cmd = [sys.executable, "-m", "flows.llm.stub", "--port", str(port), "--config-json",
           json.dumps(dataclasses.asdict(cfg))]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    penv = dict(os.environ, **(env or {}))
    penv["PYTHONPATH"] = root + os.pathsep + penv.get("PYTHONPATH", "")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=penv, cwd=root)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"stub process did not start: {line}{err[-2000:]}")
        yield line.split()[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="OpenAI-compatible stub server with fault injection")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--config-json", default=None, help="StubConfig fields as JSON")
    for f in dataclasses.fields(StubConfig):
        if f.name in ("models", "fault_schedule"):
            continue
        typ = {"float": float, "int": int, "str": str}.get(str(f.type).split(" |")[0].strip(), str)
        ap.add_argument("--" + f.name.replace("_", "-"), type=typ, default=None)
    ns = ap.parse_args(argv)
    data = json.loads(ns.config_json) if ns.config_json else {}
    for f in dataclasses.fields(StubConfig):
        v = getattr(ns, f.name, None)
        if v is not None:
            data[f.name] = v
    cfg = StubConfig(**data)
    state = _State(cfg)

    async def serve() -> None:
        sock = _bind(ns.host, ns.port)
        port = sock.getsockname()[1]
        runner = web.AppRunner(make_app(state), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        print(f"READY http://{ns.host}:{port}/v1", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
