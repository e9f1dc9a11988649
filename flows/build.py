"""``emoforge build`` as ONE Prefect flow run (``emoforge-build``), every stage a task of it:

    plan-scenarios -> record-run-start -> generate-and-judge-shard (one per slice, on threads or Dask; a failed shard
    runs cancel-run) -> near-duplicates -> run-metrics -> speech -> publish (validation inside) -> record-run

The tasks are thin; the work is in plain functions (:mod:`flows.scenarios`, :mod:`flows.generate`,
:mod:`flows.dedup`, :mod:`flows.run_metrics`, :mod:`flows.speech`, :func:`warehouse.publish.publish_release`).
Sharding, cancellation and progress belong to :mod:`flows.executor`. The taxonomy is loaded once (or handed in
by the caller) and the scenarios planned once; each shard task gets its slice.

Resume: every completed LLM call is in the call cache (``<home>/cache/llm``) and every finished dialogue, turn
and judgement is written to the warehouse within seconds of finishing. A rerun of the same command reads what
is on disk: generated dialogues are not generated again, stored judgements are not asked again, decisions are
re-taken from stored judgements with the current thresholds, and whatever was in flight when the process died
is redone from the cache (only calls that had not completed reach a model).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from rich.console import Console

from schemas.config import Config, load_config
from schemas.home import code_version
from schemas.config.generation import GenerationConfig, JudgingConfig
from flows.dedup import apply_near_duplicates
from flows.executor import RunControl, run_shards, shard_slices
from flows.generate import BuildAborted, ShardContext, run_shard
from flows.judge import judges_decide
from flows.llm.cache import CallCache
from flows.llm.client import LLMPool
from schemas.config.models import ModelsConfig
from flows.llm.embedded import embedded_servers
from flows.progress import BuildProgress
from flows.resume import load_stored
from flows.run_metrics import fold_shards, merge_metrics, overlap_share
from flows.scenarios import GridSpec, build_scenarios
from flows.speech import synthesise_home
from flows.speech.retry import resynthesise_failed
from schemas.records import Run, Scenario, content_id, utcnow
from schemas.stats import log_histogram
from schemas.taxonomy import Taxonomy, load_taxonomy
from warehouse.home_meta import remember
from warehouse.locations import home_id
from warehouse.publish import PublishError, publish_release
from warehouse.transitions import path_model
from warehouse.store import Warehouse

log = logging.getLogger("emoforge.build")

# the run config carries the build's sections (``generation``, ``judging``) next to taxonomy/publish/speech
BuildConfig = Config
load_build_config = load_config

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


class BuildError(RuntimeError):
    pass


def sections(config: Config) -> tuple[GenerationConfig, JudgingConfig]:
    """The ``generation`` and ``judging`` sections of a config."""
    return config.generation, config.judging


def grid_spec(models_cfg: Any, gen: GenerationConfig, seed: int, tax: Taxonomy | None = None,
              home: Path | None = None) -> GridSpec:
    return GridSpec(
        pairs=tuple(tuple(p) for p in models_cfg.pairs), domains=tuple(gen.domains) if gen.domains else None,
        per_cell=gen.per_cell, min_turns=gen.min_turns, max_turns=gen.max_turns, seed=seed, word_cap=gen.word_cap,
        path_model=path_model(home, tax, gen.transitions) if tax is not None else None,
    )


def plan_scenarios(tax: Taxonomy, models_cfg: Any, gen: GenerationConfig, seed: int, n: int | None,
                   home: Path | None = None) -> list[Scenario]:
    return build_scenarios(tax, grid_spec(models_cfg, gen, seed, tax, home), n)


# ---- one shard (plain; the task below runs it in a thread or on a Dask worker) --------------------------------
def run_shard_sync(control: RunControl, index: int, scenarios: list[Scenario], tax: Taxonomy, config: Config,
                   models_cfg: ModelsConfig) -> dict:
    """Generate (or reuse) and judge one slice of the planned scenarios; returns the shard's summary."""
    control = control.on_worker()
    gen, jud = sections(config)
    stored, judgements = load_stored(Path(control.home), scenarios)
    ctx = ShardContext(
        home=Path(control.home), run_id=control.run_id, tax=tax, gen=gen, jud=jud, judges=list(models_cfg.judges),
        models=list(models_cfg.models), stored=stored, stored_judgements=judgements,
        progress=control.shard_progress(index), control=control,
        advisory_judges=not judges_decide(jud, [models_cfg.models[j] for j in models_cfg.judges
                                                if j in models_cfg.models]),
    )
    out = asyncio.run(_shard_main(models_cfg, scenarios, ctx))
    out["home"] = control.home
    return out


async def _shard_main(models_cfg: ModelsConfig, scenarios: list[Scenario], ctx: ShardContext) -> dict:
    stats: dict = {}
    async with LLMPool(models_cfg, CallCache.for_home(ctx.home), stats=stats) as pool:
        if ctx.progress is not None:
            ctx.progress.attach_pool(pool)
        summary = await run_shard(pool, scenarios, ctx)
    out = summary.to_dict()
    out["latencies"] = {m: log_histogram(s.latencies) for m, s in stats.items()}  # bounded, mergeable
    return out


def record_run(home: Path, run: Run, status: str, metrics: dict) -> None:
    """The run record (``runs`` table) and ``runs/<run_id>/metrics.json``."""
    wh = Warehouse(home)
    wh.upsert([run.model_copy(update={"finished_at": utcnow(), "status": status,
                                      "metrics_json": json.dumps(metrics, sort_keys=True, default=str)})])
    runs_dir = wh.runs_dir / run.id
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    RunControl(str(home), run.id).clear_progress()


def publish_build(home: Path, config: Config, version: str | None, run_id: str, metrics: dict,
                  evaluate: bool = True) -> dict:
    """``warehouse.publish.publish_release`` (Great Expectations validation inside). A build that accepted nothing
    ends without a release and says why (``unpublished``): the dialogues waiting for human review, or the statuses
    and gates that refused the rest, with what to try. The run is recorded either way."""
    try:
        retry = partial(resynthesise_failed, home, cfg=config.speech, progress=False) if config.speech.enabled else None
        return publish_release(home, config, version=version, run_id=run_id, resynthesise=retry, evaluate=evaluate)
    except PublishError as exc:
        if "nothing to publish" not in str(exc):
            raise
        uncertain = metrics["statuses"].get("uncertain", 0)
        why = (f"nothing to publish: none of the {metrics['n_scenarios']} dialogues was accepted "
               f"(statuses {metrics['statuses']}; rejections by gate {metrics['rejections_by_gate']}; "
               f"failed-turn retries by gate {metrics['turn_retries_by_gate']}). ")
        if uncertain:
            why += (f"{uncertain} await human review (`emoforge review push`, then `emoforge publish`); or ask for "
                    "more dialogues or point --models at larger models (docs/generation.md)")
        else:
            why += ("Ask for more dialogues, point --models at larger models, or relax the judging thresholds "
                    "(docs/generation.md)")
        return {"unpublished": why}


# ---- the tasks of the flow -------------------------------------------------------------------------------------
@task(name="plan-scenarios", **_TASK)
def plan_task(tax: Taxonomy, models_cfg: ModelsConfig, gen: GenerationConfig, seed: int,
              n: int | None, home: str) -> list[Scenario]:
    return plan_scenarios(tax, models_cfg, gen, seed, n, Path(home))


@task(name="record-run-start", **_TASK)
def record_start_task(home: str, run: Run, scenarios: list[Scenario]) -> None:
    wh = Warehouse(home)
    wh.upsert([run])
    wh.upsert(scenarios)


@task(name="generate-and-judge-shard", **_TASK)
def shard_task(control: RunControl, index: int, scenarios: list[Scenario], tax: Taxonomy, config: Config,
               models_cfg: ModelsConfig) -> dict:
    return run_shard_sync(control, index, scenarios, tax, config, models_cfg)


@task(name="cancel-run", **_TASK)
def cancel_task(control: RunControl, reason: str) -> None:
    control.cancel(reason)


@task(name="near-duplicates", **_TASK)
def near_duplicates_task(home: str, scenarios: list[Scenario], jud: JudgingConfig) -> dict[str, str]:
    return apply_near_duplicates(Path(home), scenarios, jud)


@task(name="run-metrics", **_TASK)
def metrics_task(shards: list[dict], home: str, scenarios: list[Scenario], wall_s: float,
                 near: dict[str, str]) -> dict:
    return merge_metrics(shards, Path(home), scenarios, wall_s, near)


@task(name="speech", **_TASK)
def speech_task(home: str, config: Config, tax: Taxonomy, progress: bool) -> dict:
    if not config.speech.enabled:
        return {"skipped": "speech.enabled is false"}
    return synthesise_home(Path(home), config=config.speech, workers=config.speech.workers, progress=progress,
                           tax=tax)


@task(name="publish", **_TASK)
def publish_task(home: str, config: Config, version: str | None, run_id: str, metrics: dict,
                 evaluate: bool = True) -> dict:
    return publish_build(Path(home), config, version, run_id, metrics, evaluate)


@task(name="record-run", **_TASK)
def record_run_task(home: str, run: Run, status: str, metrics: dict) -> None:
    record_run(Path(home), run, status, metrics)


def _record_run_finally(home: str, run: Run, status: str, metrics: dict, interrupted: bool) -> None:
    if interrupted:  # Ctrl-C / SIGTERM: no new task run, just the record
        record_run(Path(home), run, status, metrics)
        return
    try:
        record_run_task(home, run, status, metrics)
    except Exception:  # noqa: BLE001 - the record must land even when Prefect cannot run the task
        log.exception("record-run task failed; writing the run record directly")
        record_run(Path(home), run, status, metrics)


# ---- the flow ---------------------------------------------------------------------------------------------------
@flow(name="emoforge-build", persist_result=False, validate_parameters=False)
def emoforge_build(home: str, run: Run, config: Config, models_cfg: ModelsConfig, tax: Taxonomy, seed: int,
                   n_dialogues: int | None, version: str | None, publish: bool, progress: bool,
                   evaluate: bool = True) -> dict:
    """One build, every stage a task of this flow run (see the module doc)."""
    gen, jud = sections(config)
    control = RunControl(home, run.id, home_id(home))
    status, error, interrupted = "failed", None, False
    summary: dict[str, Any] = {"run_id": run.id}
    metrics: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        scenarios = plan_task(tax, models_cfg, gen, seed, n_dialogues, home)
        # quote(): Prefect walks every task parameter looking for futures (1.3 s of CPU in a 300-dialogue build's
        # profile, growing with the scenarios, on the process that also drives the shards); these hold none. Only
        # for tasks called in the flow's thread: a quoted argument does not survive the pickling of a Dask submit
        record_start_task(home, run, quote(scenarios))
        with BuildProgress(control, len(scenarios), enabled=progress):
            shards = run_shards(
                lambda i, sl: shard_task.submit(control, i, sl, tax, config, models_cfg),
                shard_slices(scenarios, gen.shard_size), control,
                on_abort=lambda exc: cancel_task(control, str(exc)), stops_run=(BuildAborted,), fold=fold_shards)
        near = near_duplicates_task(home, quote(scenarios), jud)
        metrics = metrics_task(shards, home, quote(scenarios), time.monotonic() - t0, near)
        summary["metrics"] = metrics
        if metrics["missing"]:
            raise BuildError(f"{metrics['missing']} scenarios have no dialogue record after the run")
        if publish:
            summary["speech"] = speech_task(home, config, tax, progress)
            rel = publish_task(home, config, version, run.id, metrics, evaluate)
            summary.update(rel)
            metrics["published"] = {"version": rel.get("version"), "path": rel.get("path"),
                                    "unpublished": rel.get("unpublished")}
        status = "finished"
        return summary
    except BaseException as exc:
        control.cancel(f"{type(exc).__name__}: {exc}")  # stop the shards still running, wherever they run
        error = f"{type(exc).__name__}: {exc}"
        interrupted = not isinstance(exc, Exception)
        raise
    finally:
        if error:
            metrics = metrics or {"error": error}
            metrics["error"] = error
        _record_run_finally(home, run, status, metrics, interrupted)


# ---- entry point -----------------------------------------------------------------------------------------------
def run_build(home: Path, config: Config, models_cfg: Any, *, n_dialogues: int | None, seed: int = 0,
              version: str | None = None, publish: bool = True, task_runner: Any = None, progress: bool = True,
              command: str = "build", tax: Taxonomy | None = None, evaluate: bool = True) -> dict:
    """Run the ``emoforge-build`` flow (its flow run is named after the run id). Returns a summary with ``run_id``,
    ``metrics`` and, when published, ``version``/``path``/``n_dialogues``."""
    home = Path(home)
    asked = config.taxonomy
    config = remember(home, config)  # the home's taxonomy and word cap, recorded by its first build
    tax = tax if tax is not None and config.taxonomy == asked else load_taxonomy(config.taxonomy)
    started = utcnow()
    run_id = content_id("run", command, started.isoformat(), os.getpid())
    run = Run(id=run_id, command=command, started_at=started, code_version=code_version(),
              config_fingerprint=f"{config.fingerprint()}:{models_cfg.fingerprint()}")
    runner = task_runner or ThreadPoolTaskRunner(max_workers=config.generation.parallel_shards)
    with _served(models_cfg, home) as live_cfg:
        return emoforge_build.with_options(task_runner=runner, flow_run_name=run_id)(
            home=str(home), run=run, config=config, models_cfg=live_cfg, tax=tax, seed=seed,
            n_dialogues=n_dialogues, version=version, publish=publish, progress=progress, evaluate=evaluate)


class _served:
    """Start the embedded llama.cpp servers when the models config needs them; yields the config with endpoints."""

    def __init__(self, models_cfg: Any, home: Path):
        self.cfg = models_cfg
        self.home = home
        self._cm = None

    def __enter__(self):
        if not self.cfg.needs_embedded():
            return self.cfg
        console = Console(stderr=True)
        self._cm = embedded_servers(self.cfg, self.home,
                                    progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
        return self._cm.__enter__()

    def __exit__(self, *exc):
        if self._cm is not None:
            return self._cm.__exit__(*exc)
        return False


__all__ = ["BuildAborted", "BuildConfig", "BuildError", "apply_near_duplicates", "emoforge_build", "load_stored",
           "merge_metrics", "overlap_share", "plan_scenarios", "run_build", "run_shard_sync", "sections"]
