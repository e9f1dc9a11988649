"""`emoforge gates check FILE.jsonl`: the build's quality gates on dialogues from a file, without any LLM."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from emoforge.commands._common import HomeOpt, console, fail, open_home
from flows.emotion_judge import judge_for_home
from flows.gates import check_file
from schemas.taxonomy import TaxonomyError, load_taxonomy


def register(app: typer.Typer) -> None:
    gates = typer.Typer(help="Quality gates: what an utterance is, and whether a dialogue would be kept.",
                        no_args_is_help=True)
    app.add_typer(gates, name="gates")

    @gates.command("check")
    def check(
        file: Annotated[Path, typer.Argument(help="JSON Lines: one dialogue a line, "
                                             '{"id", "domain", "turns": [{"speaker", "text", "emotion"}]}')],
        home: HomeOpt = None,
        taxonomy: Annotated[str, typer.Option("--taxonomy", help="taxonomy preset or file of the target emotions")] = "deepdialogue",
        word_cap: Annotated[int, typer.Option("--word-cap", min=1, help="words per turn (the build's default: 25)")] = 25,
        no_judge: Annotated[bool, typer.Option("--no-judge", help="checks only, no classifier emotion judge")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object: results, bad lines, counts")] = False,
    ) -> None:
        """Print each dialogue's decision (accepted / rejected / uncertain) and its reasons, from the deterministic
        checks (defect catalogue) and the classifier emotion judge: the same code the build runs when its LLM
        judges are tiny. A malformed line is reported with its line number and the rest is still checked; the
        exit code is non-zero only when the file cannot be used at all."""
        path = open_home(home)

        try:
            tax = load_taxonomy(taxonomy)
        except TaxonomyError as exc:
            fail(str(exc))
        if not file.is_file():
            fail(f"{file}: no such file")
        try:
            with console.status(f"checking {file.name}"):
                results, bad = check_file(file, tax, word_cap, None if no_judge else (lambda: judge_for_home(path)))
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{file}: cannot be read ({exc})")
        counts = Counter(r.status for r in results)
        if as_json:
            typer.echo(json.dumps({"file": str(file), "results": [r.to_dict() for r in results],
                                   "bad_lines": [{"line": n, "error": e} for n, e in bad],
                                   "counts": dict(counts)}, ensure_ascii=False))
        else:
            for r in results:
                score = "" if r.score is None else f" score {r.score:.2f}"
                typer.echo(f"line {r.line}  {r.id}  {r.status}{score}  {r.reason}")
                for f in r.failures:
                    typer.echo(f"    {f}")
            for n, e in bad:
                console.print(f"[yellow]line {n}: skipped: {e}[/]", highlight=False)
            summary = ", ".join(f"{counts[s]} {s}" for s in ("accepted", "uncertain", "rejected") if counts[s])
            console.print(f"{len(results)} dialogue(s) checked ({summary or 'none'}); {len(bad)} bad line(s)",
                          highlight=False)
        if not results:
            fail(f"{file}: no usable dialogue" + (f" (line {bad[0][0]}: {bad[0][1]})" if bad else " (empty file)"))
