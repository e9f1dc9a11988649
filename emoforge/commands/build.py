"""``emoforge build`` (scenarios -> generation -> checks -> judges -> publish) and ``emoforge scenarios``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from emoforge.commands._common import Commands, HomeOpt, console, fail, open_home
from emoforge.commands.evaluate import print_evaluation_summary
from flows.build import BuildError, load_build_config, plan_scenarios, run_build, sections
from flows.generate import BuildAborted
from flows.runners import RunnerSpecError, make_task_runner
from flows.scenarios import ScenarioError, summarise
from schemas.config import ConfigError
from schemas.config.models import ModelsConfigError, load_models_config
from schemas.taxonomy import TaxonomyError, load_taxonomy
from warehouse.home_meta import resolve_config
from warehouse.store import Warehouse
from warehouse.transitions import TransitionsError

DialoguesOpt = Annotated[Optional[int], typer.Option("--dialogues", "-n", help="how many dialogues: a balanced, deterministic subset of the grid (default: the whole grid)")]
ModelsOpt = Annotated[Optional[Path], typer.Option("--models", help="models YAML (models, endpoints, pairs, judges); default: embedded llama.cpp models")]
SeedOpt = Annotated[int, typer.Option("--seed", help="scenario seed")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="run config YAML (taxonomy, generation, judging, publish)")]


def _load(config: Path | None, models: Path | None):
    try:
        cfg = load_build_config(config)
        mcfg = load_models_config(models)
        tax = load_taxonomy(cfg.taxonomy)
    except (ConfigError, ModelsConfigError, TaxonomyError) as exc:
        raise fail(str(exc))
    return cfg, mcfg, tax


commands = Commands()


@commands.command("build")
def build(
    dialogues: DialoguesOpt = None,
    models: ModelsOpt = None,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    version: Annotated[Optional[str], typer.Option("--version", help="release version (default: next minor)")] = None,
    runner: Annotated[Optional[str], typer.Option("--runner", help="task runner: threads, threads:N, dask://HOST:PORT, dask-local:N")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="publish a release at the end")] = True,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="live progress on stderr")] = True,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="score the release on the imported "
                                           "real test sets, when there are any (`emoforge evaluate`)")] = True,
) -> None:
    """Generate, check, judge and publish dialogues; prints the published version as the last line."""
    h = open_home(home)
    cfg, mcfg, tax = _load(config, models)

    task_runner = None
    if runner:
        try:
            task_runner = make_task_runner(runner)
        except RunnerSpecError as exc:
            raise fail(str(exc))
    try:
        summary = run_build(h, cfg, mcfg, n_dialogues=dialogues, seed=seed, version=version, publish=publish,
                            task_runner=task_runner, progress=progress, command="build", tax=tax,
                            evaluate=evaluate)
    except (ScenarioError, BuildAborted, BuildError) as exc:
        raise fail(str(exc), code=1)
    except Exception as exc:  # noqa: BLE001 - named errors of the stages below (publish, embedded servers)
        name = type(exc).__name__
        if name in ("PublishError", "GateFailed", "ReleaseError", "HomeSettingsConflict", "EmbeddedError",
                    "EmbeddedServerError", "WarehouseError", "VersionError", "LLMCallError", "EarlyStop",
                    "TransitionsError", "HomeMismatch"):
            raise fail(f"{name}: {exc}", code=1)
        raise
    m = summary.get("metrics", {})
    st = m.get("statuses", {})
    console.print(
        f"run {summary['run_id']}: {m.get('n_scenarios', 0)} scenarios -> accepted {st.get('accepted', 0)}, "
        f"rejected {st.get('rejected', 0)}, uncertain {st.get('uncertain', 0)}, failed {st.get('failed', 0)}; "
        f"{m.get('gen_calls', 0)} generation + {m.get('judge_calls', 0)} judge requests in {m.get('wall_s', 0)}s"
        f" (metrics: {h / 'runs' / summary['run_id'] / 'metrics.json'})",
        highlight=False, soft_wrap=True,
    )
    if publish and summary.get("unpublished"):
        console.print(f"not published: {summary['unpublished']}", highlight=False, soft_wrap=True)
        print(summary["run_id"], flush=True)
    elif publish:
        console.print(f"published {summary['version']} ({summary.get('n_dialogues')} dialogues) at {summary['path']}",
                      highlight=False, soft_wrap=True)
        print_evaluation_summary(summary.get("evaluation"))
        print(summary["version"], flush=True)
    else:
        print(summary["run_id"], flush=True)


@commands.command("scenarios")
def scenarios(
    dialogues: DialoguesOpt = None,
    models: ModelsOpt = None,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    home: HomeOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print the plan; write nothing")] = False,
    show: Annotated[int, typer.Option("--show", help="print the first K scenarios")] = 5,
) -> None:
    """The scenario grid (domains x pairs x per-cell), or the balanced subset --dialogues N takes."""
    h = open_home(home)
    cfg, mcfg, tax = _load(config, models)

    try:  # the home's taxonomy and word cap, as the build would take them
        cfg = resolve_config(h, cfg, origin="scenarios")
        tax = load_taxonomy(cfg.taxonomy)
    except ConfigError as exc:
        raise fail(str(exc))

    gen, _ = sections(cfg)
    try:
        plan = plan_scenarios(tax, mcfg, gen, seed, dialogues, h)
    except (ScenarioError, TransitionsError) as exc:
        raise fail(str(exc))
    summary = summarise(plan)
    for s in plan[:show]:
        console.print(f"{s.index:>6} {s.domain:<16} {s.model_a} x {s.model_b}  {s.n_turns} turns: {' > '.join(s.emotions)}",
                      highlight=False, soft_wrap=True)
    if not dry_run:
        Warehouse(h).upsert(plan)
        summary["written"] = len(plan)
    print(json.dumps(summary))


def register(app: typer.Typer) -> None:
    commands.register(app)
