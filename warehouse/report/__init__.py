"""The release report: one HTML page with PNG plots, written to ``<release>/report/``.

:func:`write_report` (called by ``warehouse.publish.publish_release`` and by ``emoforge report VERSION``) reads the
release's Parquet files (and, given the home, the warehouse: every judge score, acceptance of all generated
dialogues, audio clip durations), computes the figures with :func:`release_stats`, and writes

``report/index.html``   the page (``templates/index.html.j2``, jinja2, all dialogue text escaped)
``report/*.png``        one plot per figure (matplotlib, Agg backend, no timestamps: same input, same bytes)
``report/stats.json``   every figure as data

Figures: split sizes, emotion distribution (final label and intended), the observed emotion-transition heatmap
next to the configured transition graph, turns per dialogue, words per turn, judge score distributions,
acceptance by model pair and by domain, difficulty histogram, audio durations (when the release has speech),
inter-annotator agreement (manifest key ``agreement``, when reviews exist), and, with
``compare_dailydialog=PATH``, the same statistics of DailyDialog side by side (:func:`dailydialog_stats`).

The report is written to a temporary folder next to ``report/`` and swapped in at the end, so a failure (a full
disk) leaves the previous report as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from warehouse.report.dailydialog import dailydialog_stats, read_dailydialog
from warehouse.report.data import REPORT_DIR, ReleaseData, ReportError, load_release, warehouse_figures
from warehouse.report.html import render_html
from warehouse.report.plots import plot_all
from warehouse.report.stats import emotion_sequences, release_stats
from warehouse.report.sections import extra_sections

__all__ = ["REPORT_DIR", "ReleaseData", "ReportError", "dailydialog_stats", "load_release", "read_dailydialog",
           "release_stats", "render_html", "warehouse_figures", "write_report"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_leftovers(final: Path) -> None:
    """Remove what a killed writer left next to ``final`` (``.<name>.tmp-<pid>``, ``.<name>.old-<pid>``); when the
    kill came between the two renames, the previous report is put back first."""
    for p in sorted(final.parent.glob(f".{final.name}.*-*")):
        m = re.fullmatch(rf"\.{re.escape(final.name)}\.(tmp|old)-(\d+)", p.name)
        if not m or _pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not final.exists():
            os.replace(p, final)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _erc7_sequences(data: ReleaseData) -> list[list[str]] | None:
    """The release's emotion sequences in erc7 classes (labels outside the taxonomy left out); None without a
    taxonomy that maps to erc7."""
    tax = data.taxonomy
    if tax is None or "erc7" not in tax.mappings:
        return None
    return [[tax.map_label(e, "erc7") for e in s if e in tax.emotion] for s in emotion_sequences(data).as_lists()]


def write_report(release_dir: Path, *, taxonomy=None, home: Path | None = None, manifest: dict | None = None,
                 compare_dailydialog: Path | None = None, out_dir: Path | None = None, tables=None,
                 figures=None) -> Path:
    """Write ``<release>/report/index.html`` + PNG plots + ``stats.json``; returns the HTML path.

    ``taxonomy``: a :class:`~schemas.taxonomy.Taxonomy`, a preset name or file, or ``None`` for the manifest's.
    ``home``: the emoforge home, for figures only the warehouse has (judges, acceptance, clip durations).
    ``manifest``: the release manifest when ``manifest.json`` is not written yet (publish builds the report first).
    ``compare_dailydialog``: a DailyDialog folder (``../shared/benchdata/dailydialog``) to compare with.
    ``out_dir``: write somewhere else than ``<release>/report`` (the release itself is never modified then).
    ``tables``: the tables the release's data files were written from (publish: ``release_files.ReleaseTables``),
    so the files are not read back. ``figures``: (dialogue ids, ``warehouse_figures`` of them) read beforehand.
    """
    release_dir = Path(release_dir)
    data = load_release(release_dir, taxonomy, home, manifest, tables, figures)
    dd = dailydialog_stats(Path(compare_dailydialog)) if compare_dailydialog else None
    stats = release_stats(data, dd)

    final = Path(out_dir) if out_dir else release_dir / REPORT_DIR
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _sweep_leftovers(final)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        plots = plot_all(stats, data.taxonomy, dd, tmp)
        page = render_html(stats, plots, data)
        extra_html, extra_data, extra_plots = extra_sections(release_dir, home, lambda: _erc7_sequences(data),
                                                             tmp)  # evaluation, dynamics vs real data
        page = page.replace("<h2>Sample dialogues</h2>", extra_html + "\n<h2>Sample dialogues</h2>", 1)
        plots.update(extra_plots)
        public = {k: v for k, v in stats.items() if k != "_values"} | extra_data
        public["plots"] = {k: v for k, v in plots.items() if v}
        (tmp / "stats.json").write_text(json.dumps(public, indent=2, sort_keys=True, default=str) + "\n")
        (tmp / "index.html").write_text(page, encoding="utf-8")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:
            if old.exists():
                os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReportError(f"cannot write the report to {final}: {exc.strerror or exc}"
                          + (" (disk full or file size limit reached)" if getattr(exc, "errno", None) in (27, 28) else "")
                          ) from None
    return final / "index.html"
