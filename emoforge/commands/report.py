"""`emoforge report VERSION`: (re)generate the HTML + PNG report of a release, optionally next to DailyDialog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emoforge.commands._common import HomeOpt, console, fail, open_home
from schemas.config import ConfigError, load_config
from schemas.taxonomy import TaxonomyError
from warehouse.home_meta import resolve_config
from warehouse.releases import ReleaseError, resolve_release
from warehouse.report import ReportError, write_report
from warehouse.store import WarehouseError
from warehouse.versions import VersionError


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        version: Annotated[str, typer.Argument(help="release version, e.g. 0.1.0")],
        home: HomeOpt = None,
        compare_dailydialog: Annotated[Optional[Path], typer.Option(
            "--compare-dailydialog", help="DailyDialog folder (e.g. ../shared/benchdata/dailydialog) to compare with, "
            "side by side")] = None,
        out: Annotated[Optional[Path], typer.Option(
            "--out", help="output folder (default: <home>/reports/<version>[-vs-dailydialog])")] = None,
        taxonomy: Annotated[Optional[str], typer.Option(
            "--taxonomy", help="taxonomy preset or file (default: the one named in the release manifest)")] = None,
    ) -> None:
        """Write the report of a published release: HTML page, PNG plots, stats.json.

        Releases are immutable (their manifest lists the sha256 of report/ too), so the regenerated report goes
        to <home>/reports/<version>/ unless --out says otherwise; the copy published with the release stays as
        it was.
        """
        path = open_home(home)


        try:
            release = resolve_release(path, version)
            if taxonomy is not None:  # the home's taxonomy decides; a flag may only repeat it
                taxonomy = resolve_config(path, load_config(taxonomy=taxonomy), origin="report").taxonomy
        except (ReleaseError, VersionError, WarehouseError, ConfigError, TaxonomyError) as exc:
            fail(str(exc))
        if compare_dailydialog is not None and not compare_dailydialog.is_dir():
            fail(f"--compare-dailydialog {compare_dailydialog}: no such folder")
        target = out or path / "reports" / (release.name + ("-vs-dailydialog" if compare_dailydialog else ""))
        if target.resolve() == (release / "report").resolve() or release.resolve() in target.resolve().parents:
            fail(f"--out {target} is inside the immutable release {release}; choose a folder outside it")
        try:
            with console.status(f"writing the report of {release.name}"):
                html = write_report(release, taxonomy=taxonomy, home=path, compare_dailydialog=compare_dailydialog,
                                    out_dir=target)
        except (ReportError, TaxonomyError, WarehouseError) as exc:
            fail(str(exc))
        console.print(f"report of {release.name}: {html}")
        typer.echo(str(html))
