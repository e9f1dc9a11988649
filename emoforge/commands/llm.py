"""``emoforge llm ...``: embedded llama.cpp servers, ``vllm serve`` launch lines, endpoint health checks."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from emoforge.commands._common import HomeOpt, console, fail, open_home
from flows.llm.embedded import EmbeddedServerError, embedded_servers
from flows.llm.health import check_endpoints
from flows.llm.vllm import plan_vllm
from schemas.config.models import ModelsConfigError, dump_models_config, load_models_config

ModelsOpt = Annotated[Optional[Path], typer.Option("--models", help="models YAML (default: the embedded models)")]
out = Console()


def _load(models: Path | None):
    try:
        return load_models_config(models)
    except ModelsConfigError as exc:
        fail(str(exc))


def _wait_forever() -> None:
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


llm = typer.Typer(help="LLM endpoints: embedded llama.cpp servers, vLLM launch lines, health checks.",
                  no_args_is_help=True)


@llm.command("serve-embedded")
def serve_embedded(
    home: HomeOpt = None,
    models: ModelsOpt = None,
    port: Annotated[Optional[int], typer.Option(help="port of the first server; the next ones count up")] = None,
) -> None:
    """Start the embedded llama.cpp servers in the foreground and print their endpoints (Ctrl-C stops them)."""

    h = open_home(home)
    cfg = _load(models)
    keys = sorted({cfg.models[m].embedded for m in cfg.needs_embedded()})
    if not keys:
        fail("no model in this config needs an embedded server (they all have endpoints)")
    ports = {k: port + i for i, k in enumerate(keys)} if port else None
    try:
        with embedded_servers(cfg, h, ports=ports, progress=lambda m: console.print(f"[dim]{m}[/]")) as live:
            t = Table(title="embedded models")
            for col in ("model", "embedded", "endpoint"):
                t.add_column(col)
            for name, spec in live.models.items():
                t.add_row(name, spec.embedded or "", spec.endpoints[0].base_url)
            console.print(t)
            typer.echo("# models config for these servers (use with --models while they run):")
            typer.echo(dump_models_config(live), nl=False)
            console.print("[green]serving[/] - Ctrl-C to stop")
            _wait_forever()
    except EmbeddedServerError as exc:
        fail(str(exc))
    console.print("stopped")

@llm.command("vllm-command")
def vllm_command(
    models: Annotated[Path, typer.Option("--models", help="models YAML with a `vllm:` section per model")],
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="host name clients use to reach the GPU host")] = "127.0.0.1",
    bind: Annotated[str, typer.Option(help="address vLLM listens on")] = "0.0.0.0",
    gpus: Annotated[Optional[str], typer.Option(help="GPU ids to hand out, e.g. 0,1,2,3")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="env var with the key vLLM requires and clients send")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the resulting models YAML here")] = None,
    launch: Annotated[bool, typer.Option(help="start the servers here and wait until healthy (Ctrl-C stops)")] = False,
) -> None:
    """Print the `vllm serve` command line of every replica (ports and GPUs assigned) and the models YAML that
    points at them; with --launch, run them here."""

    cfg = _load(models)
    try:
        launches, new = plan_vllm(cfg, host=host, bind=bind, gpus=gpus.split(",") if gpus else None,
                                  api_key_env=api_key_env)
    except ValueError as exc:
        fail(str(exc))
    if not launches:
        fail(f"no model in {models} has a `vllm:` section (model: <hf id>, replicas, tensor_parallel_size, port)")
    if api_key_env and api_key_env not in os.environ:
        console.print(f"[yellow]warning:[/] {api_key_env} is not set here; set it on the GPU host and the clients")
    typer.echo("# vLLM servers, one line per replica")
    for ln in launches:
        typer.echo(ln.shell())
    yaml_text = dump_models_config(new)
    typer.echo("\n# models config for these endpoints")
    typer.echo(yaml_text)
    if output:
        output.write_text(yaml_text)
        console.print(f"wrote {output}")
    if not launch:
        return

    if shutil.which("vllm") is None:
        fail("`vllm` is not on PATH here; install vLLM on the GPU host (pip install vllm) and run this there")
    h = open_home(home)
    logs = h / "logs" / "vllm"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for ln in launches:
            env = {**os.environ, **ln.env}
            if ln.api_key_env:  # through the environment, not argv (visible in ps)
                env["VLLM_API_KEY"] = os.environ.get(ln.api_key_env, "")
            with (logs / f"{ln.model}-{ln.port}.log").open("ab") as logf:
                procs.append((ln, subprocess.Popen(ln.argv, env=env, stdout=logf, stderr=subprocess.STDOUT)))
        for ln, p in procs:
            deadline = time.monotonic() + 1800
            while True:
                if p.poll() is not None:
                    fail(f"vllm for {ln.model} (port {ln.port}) exited with {p.returncode}; see {logs}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{ln.port}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    fail(f"vllm for {ln.model} (port {ln.port}) not healthy after 30 min; see {logs}")
                time.sleep(2)
            console.print(f"[green]ready[/] {ln.model} replica {ln.replica + 1} on port {ln.port}")
        _wait_forever()
    finally:
        for _, p in procs:
            p.terminate()
        for _, p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

@llm.command("check")
def check(
    models: ModelsOpt = None,
    home: HomeOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds per request")] = 120.0,
) -> None:
    """Health-check every endpoint (GET /models and a one-token chat). Embedded models are started for the
    check and stopped after it. Exit code 1 when any endpoint fails."""

    h = open_home(home)
    cfg = _load(models)
    try:
        with embedded_servers(cfg, h, progress=lambda m: console.print(f"[dim]{m}[/]")) as live:
            results = asyncio.run(check_endpoints(live, timeout))
    except EmbeddedServerError as exc:
        fail(str(exc))
    t = Table(title="LLM endpoints")
    for col in ("model", "endpoint", "status", "latency", "detail"):
        t.add_column(col)
    for r in results:
        t.add_row(r.model, r.base_url, "[green]ok[/]" if r.ok else "[red]FAIL[/]",
                  f"{r.latency_s:.2f}s" if r.latency_s is not None else "", r.problem or ", ".join(r.served)[:60])
    out.print(t)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(llm, name="llm")
