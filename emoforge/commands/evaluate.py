"""`emoforge evaluate VERSION`: the release's transfer score on imported real ERC test sets (linear probe)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from emoforge.commands._common import HomeOpt, console, fail, open_home
from warehouse.embeddings import EmbedderMissing
from warehouse.evaluation import EvaluationError, ProbeOptions, evaluate_release
from warehouse.releases import ReleaseError
from warehouse.versions import VersionError


def evaluation_table(result: dict[str, Any]):
    """A rich table: per real test set, the release probe, the real-train ceiling and the majority baseline."""

    table = Table(title=f"release {result['version']}: linear probe on frozen MiniLM embeddings ({result['mapping']}, "
                        f"{result['train']['n']} train utterances)")
    for col in ("test set", "n", "scored by", "weighted-F1", "macro-F1", "accuracy"):
        table.add_column(col, justify="right" if col not in ("test set", "scored by") else "left")
    for name, s in result["sets"].items():
        rows = [("release probe", s["probe"]), (f"ceiling ({s['source']} train)", s["ceiling"]),
                (f"majority ({s['majority']['label']})", s["majority"])]
        for i, (who, sc) in enumerate(rows):
            cells = ["-", "-", "-"] if sc is None else [f"{sc['weighted_f1']:.4f}", f"{sc['macro_f1']:.4f}",
                                                        f"{sc['accuracy']:.4f}"]
            table.add_row(name if i == 0 else "", str(s["n"]) if i == 0 else "", who, *cells)
    own = result.get("release_test")
    if own:
        table.add_row("release test (in-domain)", str(own["n"]), "release probe", f"{own['weighted_f1']:.4f}",
                      f"{own['macro_f1']:.4f}", f"{own['accuracy']:.4f}")
    return table


def print_evaluation_summary(summary: dict[str, Any] | None) -> None:
    """One line per real test set after `publish` (nothing when the home has no imported test set)."""
    if not summary:
        return
    if "error" in summary:
        console.print(f"[yellow]not evaluated:[/] {summary['error']}", highlight=False)
        return
    for name, s in summary.items():
        if not isinstance(s, dict) or not s.get("probe"):
            continue
        ceiling = s["ceiling"]
        console.print(f"evaluation on {name} ({s['n']} utterances): weighted-F1 {s['probe']['weighted_f1']:.4f}, "
                      f"macro-F1 {s['probe']['macro_f1']:.4f} (ceiling "
                      + (f"{ceiling['weighted_f1']:.4f} / {ceiling['macro_f1']:.4f}" if ceiling else "-")
                      + f"; majority {s['majority']['weighted_f1']:.4f} / {s['majority']['macro_f1']:.4f})",
                      highlight=False)


def print_evaluation_delta(delta: dict[str, Any] | None) -> None:
    """The `diff` lines: how the probe's scores moved on every real test set both releases were scored on."""
    if not delta:
        return
    if "missing" in delta:
        sides = " and ".join(delta["missing"])
        typer.echo(f"evaluation: not available for {sides} (run `emoforge evaluate VERSION`)")
        return
    for name, d in delta.items():
        typer.echo(f"evaluation {name}: " + ", ".join(
            f"{k.replace('_', '-').replace('f1', 'F1')} {v['a']:.4f} -> {v['b']:.4f} ({v['delta']:+.4f})"
            for k, v in d.items()))


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        version: Annotated[str, typer.Argument(help="release version, e.g. 0.2.0")],
        home: HomeOpt = None,
        test_set: Annotated[Optional[list[str]], typer.Option(
            "--test-set", help="imported source to score on (repeatable; default: every imported test set)")] = None,
        seed: Annotated[int, typer.Option(help="seed of the classifier")] = 0,
        max_test: Annotated[Optional[int], typer.Option(help="cap on utterances per real test set (whole dialogues)")] = None,
        no_write: Annotated[bool, typer.Option("--no-write", help="do not write evaluation.json")] = False,
    ) -> None:
        """Score a release on real ERC test sets: a linear probe on frozen sentence embeddings, trained on the
        release's train split (erc7), next to the probe trained on the real data (ceiling) and the majority class.
        Writes <release>/evaluation.json (outside the manifest's checksums) and prints one JSON line."""
        path = open_home(home)

        opts = ProbeOptions(seed=seed, max_test=max_test, sets=tuple(test_set) if test_set else None)
        try:
            result = evaluate_release(path, version, opts, write=not no_write,
                                      log=lambda m: console.print(m, highlight=False))
        except (EvaluationError, ReleaseError, VersionError, EmbedderMissing) as exc:
            fail(str(exc))
        console.print(evaluation_table(result))
        t = result["timing"]
        console.print(f"{t['utterances_scored']} utterances in {t['seconds']} s ({t['embedded_now']} newly embedded)"
                      + ("" if no_write else "; written to evaluation.json in the release folder"),
                      highlight=False)
        print(json.dumps(result, sort_keys=True))
