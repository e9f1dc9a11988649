"""``emoforge speak``: voice every accepted dialogue of a home; ``emoforge speech-table``: the prosody table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from emoforge.commands._common import HomeOpt, console, fail, open_home
from flows.speech.pipeline import ACCEPTED_SQL, SpeechError, synthesise_home
from flows.speech.prosody import ProsodyError, prosody_table, table_markdown
from schemas.config.speech import SpeechConfigError, load_speech_config
from schemas.expectations_audio import validate_audio
from schemas.taxonomy import TaxonomyError, load_taxonomy
from warehouse.store import Warehouse


def register(app: typer.Typer) -> None:
    @app.command("speak")
    def speak(
        home: HomeOpt = None,
        engine: Annotated[str, typer.Option(help="default (Piper + espeak-ng voices), espeak, or xtts")] = "default",
        workers: Annotated[int, typer.Option(min=1, max=64, help="parallel synthesis processes")] = 2,
        config: Annotated[Optional[Path], typer.Option("--config", help="YAML run config (its speech: section)")] = None,
        asr: Annotated[bool, typer.Option("--asr/--no-asr", help="ASR round trip (WER per clip)")] = True,
        check: Annotated[bool, typer.Option("--check/--no-check", help="run the audio checks afterwards")] = False,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    ) -> None:
        """Synthesise every accepted dialogue not yet voiced (resumes; finished clips are never redone)."""
        path = open_home(home)

        try:
            counts = synthesise_home(path, engine=engine, workers=workers, progress=progress, config=config,
                                     asr=asr)
        except (SpeechError, SpeechConfigError) as exc:
            fail(str(exc))
        console.print(f"[green]speech:[/] {counts['dialogues']} dialogue(s), {counts['synthesised']} clip(s) "
                      f"synthesised, {counts['reused']} reused, {counts['mixes_made']} mix(es) made, "
                      f"{counts['asr']} transcribed in {counts.get('seconds', 0)} s")
        typer.echo(json.dumps(counts))
        if check:
            wh = Warehouse(path)
            acc = f"SELECT dialogue_id FROM ({ACCEPTED_SQL})"
            clips = wh.query(f"SELECT * FROM clips WHERE dialogue_id IN ({acc})")
            turns = wh.query(f"SELECT * FROM turns WHERE dialogue_id IN ({acc})")
            res = validate_audio(clips, turns, load_speech_config(config).bounds, audio_root=path / "audio")
            console.print(res.summary(), highlight=False)
            if not res.success:
                raise typer.Exit(1)

    @app.command("speech-table")
    def speech_table(
        taxonomy: Annotated[str, typer.Option(help="preset name or taxonomy file")] = "deepdialogue",
        config: Annotated[Optional[Path], typer.Option("--config", help="YAML run config (its speech: section)")] = None,
    ) -> None:
        """Print the emotion → prosody table (Markdown) that synthesis uses."""

        try:
            cfg = load_speech_config(config)
            tax = load_taxonomy(taxonomy)
            typer.echo(table_markdown(prosody_table(tax, cfg.prosody, cfg.intensity), tax))
        except (SpeechConfigError, ProsodyError, TaxonomyError) as exc:
            fail(str(exc))
