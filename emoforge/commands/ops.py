"""Operations: a local Prefect server, the scheduled deployments (work pool or serve), run metrics.

``emoforge prefect-server``  run ``prefect server start`` on loopback with its database in the home (foreground)
``emoforge deploy``          the process work pool + the deployments of prefect.yaml (``--worker`` then runs one)
``emoforge serve``           register the deployments and run their schedules in this process (no pool/worker)
``emoforge metrics``         tokens, calls, retries, latency per model; acceptance per pair/domain (DuckDB views)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import duckdb
import typer
from rich.table import Table

from emoforge.commands._common import Commands, HomeOpt, console, fail, open_home
from flows.schedules import PREFECT_YAML, ScheduleError, load_specs, run_server, server_healthy
from flows.schedules import deploy as do_deploy
from flows.schedules import serve as do_serve
from flows.unresponsive import DEFAULT_CRASHED_AFTER_S, check_window
from warehouse import metrics as m
from warehouse.store import WarehouseError

DEFAULT_API = "http://127.0.0.1:4200/api"
# columns shown in the terminal by default (--json or --all give every column)
COMPACT = {
    "model_metrics": ["model", "runs", "calls", "cached", "retries", "errors", "prompt_tokens", "completion_tokens",
                      "latency_p50_s", "latency_p90_s", "latency_p99_s", "tokens_per_s"],
    "acceptance_by_pair": ["model_a", "model_b", "dialogues", "accepted", "rejected", "uncertain", "failed", "acceptance"],
    "acceptance_by_domain": ["domain", "dialogues", "accepted", "rejected", "uncertain", "failed", "acceptance"],
    "run_summary": ["run_id", "command", "status", "started_at", "duration_s", "calls", "tokens", "dialogues",
                    "accepted"],
}
ApiOpt = Annotated[Optional[str], typer.Option(
    "--api", help=f"Prefect API URL (default: $PREFECT_API_URL, else {DEFAULT_API})")]
OnlyOpt = Annotated[Optional[list[str]], typer.Option(
    "--only", help="deploy only these deployments of prefect.yaml (repeatable)")]
YamlOpt = Annotated[Optional[Path], typer.Option("--prefect-yaml", help="deployments file (default: the checkout's prefect.yaml)")]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _api(api: str | None) -> str:
    url = (api or os.environ.get("PREFECT_API_URL") or DEFAULT_API).rstrip("/")

    if not server_healthy(url):
        fail(f"no Prefect server answers at {url}: start one with `emoforge prefect-server` (or "
             "`prefect server start`), or pass --api / export PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    return url


def _specs(prefect_yaml: Path | None, only: list[str] | None):
    try:
        return load_specs(prefect_yaml or PREFECT_YAML, only)
    except ScheduleError as exc:
        fail(str(exc))


commands = Commands()


@commands.command("prefect-server")
def prefect_server(
    home: HomeOpt = None,
    port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1")] = 4200,
    host: Annotated[str, typer.Option("--host", help="listen address (loopback by default)")] = "127.0.0.1",
) -> None:
    """Run a Prefect server (no UI telemetry, database under <home>/.prefect) until interrupted."""

    path = open_home(home)
    prefect_home = Path(os.environ.get("PREFECT_HOME") or path / ".prefect")
    try:
        code = run_server(prefect_home, host=host, port=port, on_ready=lambda url: console.print(
            f"Prefect API: {url}  — in other shells: export PREFECT_API_URL={url}", highlight=False))
    except ScheduleError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@commands.command()
def deploy(
    home: HomeOpt = None,
    api: ApiOpt = None,
    pool: Annotated[str, typer.Option("--pool", help="process work pool (created when missing)")] = "emoforge",
    only: OnlyOpt = None,
    prefect_yaml: YamlOpt = None,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="then run a worker of the pool here")] = False,
    crashed_after: Annotated[float, typer.Option(
        "--crashed-after", help="seconds without a heartbeat before a run (its worker died) is marked Crashed, "
        f"freeing the deployment for the next run; 0: no such automation (default {DEFAULT_CRASHED_AFTER_S})")
    ] = DEFAULT_CRASHED_AFTER_S,
) -> None:
    """Create the work pool and the scheduled deployments of prefect.yaml on the Prefect server, and the
    automation that marks a run whose worker died as Crashed."""
    path = open_home(home)
    url = _api(api)

    specs = _specs(prefect_yaml, only)
    if crashed_after:
        try:
            check_window(crashed_after)
        except ValueError as exc:
            fail(f"--crashed-after: {exc}; 0 switches the automation off")
    try:
        ids = do_deploy(specs, pool=pool, home=path, crashed_after_s=crashed_after or None)
    except ScheduleError as exc:
        fail(str(exc))
    for spec, dep_id in zip(specs, ids):
        when = spec.cron or (f"every {spec.interval_s:g}s" if spec.interval_s else "no schedule")
        console.print(f"deployed {spec.name} ({spec.entrypoint}, {when}{', paused' if spec.paused else ''}) "
                      f"-> {dep_id}", highlight=False)
    if crashed_after:
        console.print(f"a run silent for {crashed_after:g}s (no heartbeat: its worker died) is marked Crashed",
                      highlight=False)
    console.print(f"work pool {pool!r} on {url}; runs need a worker: prefect worker start --pool {pool}",
                  highlight=False)
    if worker:
        env = dict(os.environ, EMOFORGE_HOME=str(path))
        try:
            raise typer.Exit(subprocess.call([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                              "--type", "process"], env=env))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


@commands.command()
def serve(
    home: HomeOpt = None,
    api: ApiOpt = None,
    only: OnlyOpt = None,
    prefect_yaml: YamlOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="flow runs at a time")] = None,
) -> None:
    """Register the deployments and run their scheduled runs from this process until interrupted."""
    path = open_home(home)
    _api(api)

    try:
        do_serve(_specs(prefect_yaml, only), home=path, limit=limit)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@commands.command()
def metrics(
    home: HomeOpt = None,
    view: Annotated[Optional[list[str]], typer.Option(
        "--view", help="view(s) to show (default: model_metrics, acceptance_by_pair, run_summary)")] = None,
    sql: Annotated[Optional[str], typer.Option("--sql", help="run this SQL (the metric views are defined)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows")] = False,
    all_columns: Annotated[bool, typer.Option("--all", help="every column (default: the main ones)")] = False,
    install: Annotated[bool, typer.Option(
        "--install", help="also define the views inside <home>/catalog.duckdb for plain duckdb")] = False,
) -> None:
    """Run metrics as DuckDB views: tokens, calls, retries, errors, latency p50/p90/p99 per model;
    acceptance per model pair, domain and run; judge verdicts."""
    path = open_home(home)
    try:
        if install:
            made = m.install_catalog_views(path)
            console.print(f"views in {path / 'catalog.duckdb'}: {', '.join(made)}", highlight=False)
        con = m.connect(path)
    except WarehouseError as exc:
        fail(str(exc))
    try:
        if sql:
            try:
                tables = {"result": con.sql(sql).to_arrow_table()}
            except duckdb.Error as exc:
                fail(f"SQL error: {exc}")
        else:
            names = view or ["model_metrics", "acceptance_by_pair", "run_summary"]
            unknown = sorted(set(names) - set(m.VIEWS))
            if unknown:
                fail(f"unknown view(s) {unknown}; available: {', '.join(m.VIEWS)}")
            tables = {n: con.sql(f"SELECT * FROM {n}").to_arrow_table() for n in names}
    finally:
        con.close()
    if as_json:
        typer.echo(json.dumps({k: t.to_pylist() for k, t in tables.items()}, default=str, indent=1))
        return

    out = console.__class__()  # stdout
    for name, t in tables.items():
        cols = t.column_names if all_columns or name not in COMPACT else [c for c in COMPACT[name] if c in t.column_names]
        table = Table(*cols, title=name, title_justify="left")
        for row in t.select(cols).to_pylist():
            table.add_row(*(_cell(v) for v in row.values()))
        out.print(table)


def register(app: typer.Typer) -> None:
    commands.register(app)
