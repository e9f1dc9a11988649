"""Warehouse commands: publish, releases, pull, diff, sql, sample, compact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from emoforge.commands._common import HomeOpt, console, fail, open_home
from emoforge.commands.evaluate import print_evaluation_delta, print_evaluation_summary

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="run configuration (YAML)")]


def register(app: typer.Typer) -> None:
    @app.command()
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
        from emoforge.config import ConfigError, load_config
        from schemas.taxonomy import TaxonomyError
        from warehouse.publish import PublishError, publish_release
        from warehouse.releases import ReleaseError
        from warehouse.store import WarehouseError
        from warehouse.versions import VersionError

        try:
            cfg = load_config(config, taxonomy=taxonomy)
            if source:
                cfg = cfg.model_copy(update={"publish": cfg.publish.model_copy(update={"sources": list(source)})})
            summary = publish_release(path, cfg, version=version, evaluate=evaluate)
        except (ConfigError, TaxonomyError, PublishError, ReleaseError, VersionError) as exc:
            fail(str(exc))
        except (WarehouseError, OSError) as exc:
            from flows.schedules import storage_problem

            fail(f"publish stopped: {storage_problem(exc) or exc}; releases published before are intact")
        console.print(f"published release {summary['version']} ({summary['n_dialogues']} dialogues, "
                      f"{summary['n_utterances']} utterances) at {summary['path']}")
        print_evaluation_summary(summary.get("evaluation"))
        typer.echo(summary["version"])

    @app.command()
    def releases(
        home: HomeOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
    ) -> None:
        """List the published releases."""
        path = open_home(home)
        from warehouse.releases import list_releases
        from warehouse.store import Warehouse

        rows = list_releases(Warehouse(path))
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        if not rows:
            console.print(f"no releases in {path}")
            return
        from rich.table import Table

        table = Table("version", "created", "parent", "dialogues", "utterances", "path")
        for r in rows:
            table.add_row(r["version"], r["created"][:19], r["parent"] or "-", str(r["counts"]["dialogues"]),
                          str(r["counts"]["utterances"]), r["path"])
        console.print(table)

    @app.command()
    def pull(
        version: Annotated[str, typer.Argument(help="release version, e.g. 0.2.0")],
        to: Annotated[Path, typer.Option("--to", help="destination directory (new or empty)")],
        home: HomeOpt = None,
    ) -> None:
        """Copy a release out of the warehouse and verify every checksum."""
        path = open_home(home)
        from warehouse.releases import ReleaseError, pull_release
        from warehouse.versions import VersionError

        try:
            dest = pull_release(path, version, to)
        except (ReleaseError, VersionError) as exc:
            fail(str(exc))
        console.print(f"release {version} copied to {dest}; all checksums verified")
        typer.echo(str(dest))

    @app.command()
    def diff(
        a: Annotated[str, typer.Argument(help="older version")],
        b: Annotated[str, typer.Argument(help="newer version")],
        home: HomeOpt = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """What was added/removed between two releases and how the distributions moved."""
        path = open_home(home)
        from warehouse.releases import ReleaseError, diff_releases
        from warehouse.versions import VersionError

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

    @app.command()
    def sql(
        query: Annotated[str, typer.Argument(help="DuckDB SQL over the tables (dialogues, turns, judgements, ...)")],
        home: HomeOpt = None,
    ) -> None:
        """Run a read-only SQL query over the warehouse tables."""
        path = open_home(home)
        import duckdb

        from warehouse.store import Warehouse

        try:
            table = Warehouse(path).query(query)
        except duckdb.Error as exc:
            fail(f"query failed: {exc}")
        typer.echo(table.to_pandas().to_string(max_rows=200))

    @app.command()
    def sample(
        dialogues: Annotated[int, typer.Option("--dialogues", "-n", min=1)] = 200,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        taxonomy: Annotated[Optional[str], typer.Option("--taxonomy")] = None,
        home: HomeOpt = None,
    ) -> None:
        """Load template-made dialogues without any LLM (source 'synthetic': publish them with --source synthetic)."""
        path = open_home(home)
        from flows.synthetic import load_synthetic
        from schemas.taxonomy import TaxonomyError, load_taxonomy
        from warehouse.store import Warehouse

        try:
            tax = load_taxonomy(taxonomy)
        except TaxonomyError as exc:
            fail(str(exc))
        n = load_synthetic(Warehouse(path), tax, dialogues, seed)
        console.print(f"loaded {n} synthetic dialogues into {path}")

    @app.command()
    def compact(home: HomeOpt = None) -> None:
        """Merge the store's small Parquet parts (waits for running writers)."""
        path = open_home(home)
        from warehouse.store import Warehouse

        Warehouse(path).compact()
        console.print("compacted")
