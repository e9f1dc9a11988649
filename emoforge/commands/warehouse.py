"""Warehouse commands: publish, releases, pull, diff, sql, sample, compact."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import duckdb
import typer
from rich.table import Table

from emoforge.commands._common import Commands, HomeOpt, console, fail, open_home
from emoforge.commands.evaluate import print_evaluation_delta, print_evaluation_summary
from flows.schedules import storage_problem
from flows.speech.retry import resynthesise_failed
from flows.synthetic import load_synthetic
from schemas.config import ConfigError, load_config
from schemas.taxonomy import TaxonomyError, load_taxonomy
from warehouse import remote_sync
from warehouse.publish import PublishError, publish_release
from warehouse.releases import ReleaseError, diff_releases, list_releases, pull_release
from warehouse.remote import RemoteError, get_remote, remote_errors
from warehouse.store import Warehouse, WarehouseError
from warehouse.versions import VersionError

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="run configuration (YAML)")]


commands = Commands()


@commands.command()
def publish(
    home: HomeOpt = None,
    config: ConfigOpt = None,
    version: Annotated[Optional[str], typer.Option("--version", help="release version (default: next minor)")] = None,
    taxonomy: Annotated[Optional[str], typer.Option("--taxonomy", help="preset (deepdialogue, erc) or file")] = None,
    source: Annotated[Optional[list[str]], typer.Option("--source", help="dialogue sources to take (repeatable)")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="score the release on the imported "
                                           "real test sets (when there are any; see `emoforge evaluate`)")] = True,
) -> None:
    """Publish the accepted dialogues as a new immutable, validated release."""
    path = open_home(home)
    try:
        cfg = load_config(config, taxonomy=taxonomy)
        if source:
            cfg = cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"sources": list(source)})})
        retry = None
        if cfg.speech.enabled:
            retry = partial(resynthesise_failed, path, cfg=cfg.speech, progress=True)
        summary = publish_release(path, cfg, version=version, resynthesise=retry, evaluate=evaluate)
    except (ConfigError, TaxonomyError, PublishError, ReleaseError, VersionError) as exc:
        fail(str(exc))
    except (WarehouseError, OSError) as exc:

        fail(f"publish stopped: {storage_problem(exc) or exc}; releases published before are intact")
    console.print(f"published release {summary['version']} ({summary['n_dialogues']} dialogues, "
                  f"{summary['n_utterances']} utterances) at {summary['path']}")
    print_evaluation_summary(summary.get("evaluation"))
    q = summary.get("quarantine") or {}
    if q.get("quarantined"):
        console.print(f"[yellow]quarantined {q['quarantined']} of {q['selected']} dialogues ({q['share']:.1%}): "
                      f"{', '.join(f'{r} {n}' for r, n in q['by_reason'].items())}; see quarantine.json[/]",
                      highlight=False)
    typer.echo(summary["version"])


@commands.command()
def releases(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    remote: Annotated[Optional[str], typer.Option("--remote", help="list a remote's releases instead")] = None,
) -> None:
    """List the published releases (of this home, or of a remote)."""
    path = open_home(home)
    if remote:
        rows = _remote_call(path, remote, lambda r: _remote_sync().remote_releases(r))
        for r in rows:
            r["path"] = r["url"]
    else:
        rows = list_releases(Warehouse(path))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        console.print(f"no releases in {remote or path}")
        return

    table = Table("version", "created", "parent", "dialogues", "utterances", "path")
    for r in rows:
        table.add_row(r["version"], r["created"][:19], r["parent"] or "-", str(r["counts"]["dialogues"]),
                      str(r["counts"]["utterances"]), r["path"])
    console.print(table)


@commands.command()
def pull(
    version: Annotated[str, typer.Argument(help="release version, e.g. 0.2.0")],
    to: Annotated[Path, typer.Option("--to", help="destination directory (new or empty)")],
    home: HomeOpt = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="pull from this remote instead of the home")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Copy a release out of the warehouse (or download it from a remote) and verify every checksum."""
    path = open_home(home)
    try:
        if from_:
            dest = _remote_call(path, from_, lambda r: _remote_sync().pull_remote(r, version, to, progress=progress))
        else:
            dest = pull_release(path, version, to)
    except (ReleaseError, VersionError) as exc:
        fail(str(exc))
    console.print(f"release {version} copied to {dest}; all checksums verified")
    typer.echo(str(dest))


@commands.command()
def diff(
    a: Annotated[str, typer.Argument(help="older version")],
    b: Annotated[str, typer.Argument(help="newer version")],
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What was added/removed between two releases and how the distributions moved."""
    path = open_home(home)
    try:
        d = diff_releases(path, a, b)
    except (ReleaseError, VersionError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(d, indent=1))
        return
    typer.echo(f"{a} -> {b}: dialogues {d['dialogues']['a']} -> {d['dialogues']['b']} "
               f"(+{d['added']} / -{d['removed']}), relabelled utterances {d['relabelled_utterances']}, "
               f"changed split {d['changed_split']}")
    print_evaluation_delta(d.get("evaluation"))
    for section in ("splits", "emotions", "domains", "buckets"):
        moved = {k: v for k, v in d[section].items() if v["a"] != v["b"]}
        if not moved:
            continue
        typer.echo(f"{section}:")
        for k, v in sorted(moved.items(), key=lambda kv: -abs(kv[1]["delta_share"])):
            typer.echo(f"  {k:<16} {v['a']:>7} -> {v['b']:<7} share {v['share_a']:.3f} -> {v['share_b']:.3f} "
                       f"({v['delta_share']:+.3f})")


@commands.command()
def sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL over the tables (dialogues, turns, judgements, ...)")],
    home: HomeOpt = None,
    remote: Annotated[Optional[str], typer.Option(
        "--remote", help="query a remote release's Parquet in place (tables: utterances, dialogues)")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="with --remote: release (default: latest)")] = None,
) -> None:
    """Run a read-only SQL query over the warehouse tables (or over a release on a remote)."""
    path = open_home(home)
    try:
        if remote:
            table = _remote_call(path, remote, lambda r: _remote_query(r, version, query))
        else:
            table = Warehouse(path).query(query)
    except duckdb.Error as exc:
        fail(f"query failed: {exc}")
    typer.echo(table.to_pandas().to_string(max_rows=200))


@commands.command()
def sample(
    dialogues: Annotated[int, typer.Option("--dialogues", "-n", min=1)] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    taxonomy: Annotated[Optional[str], typer.Option("--taxonomy")] = None,
    home: HomeOpt = None,
) -> None:
    """Load template-made dialogues without any LLM (source 'synthetic': publish them with --source synthetic)."""
    path = open_home(home)
    try:
        tax = load_taxonomy(taxonomy)
    except TaxonomyError as exc:
        fail(str(exc))
    n = load_synthetic(Warehouse(path), tax, dialogues, seed)
    console.print(f"loaded {n} synthetic dialogues into {path}")


@commands.command()
def compact(home: HomeOpt = None) -> None:
    """Merge the store's small Parquet parts (waits for running writers)."""
    path = open_home(home)
    Warehouse(path).compact()
    console.print("compacted")


def register(app: typer.Typer) -> None:
    commands.register(app)


def _remote_sync():
    return remote_sync


def _remote_call(home: Path, name: str, fn):
    """Run ``fn(remote)``; a remote's, a release's or a version's error is printed for the user (no stack trace)."""

    try:
        remote = get_remote(home, name)
        with remote_errors(remote):
            return fn(remote)
    except (RemoteError, ReleaseError, VersionError) as exc:
        fail(str(exc))


def _remote_query(remote, version: str | None, query: str):
    con, _ = _remote_sync().remote_connection(remote, version)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        con.close()
