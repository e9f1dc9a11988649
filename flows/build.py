"""``emoforge build``: scenarios -> paired generation + checks + LLM judges (one Prefect task per shard) ->
near-duplicate gate -> publish. The flow is thin; the work is in plain functions of this package.

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
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from emoforge.config import Config, load_config
from flows.build_config import GenerationConfig, JudgingConfig
from flows.generate import BuildAborted, ShardContext, Stored, dialogue_id, run_shard
from flows.judge import CHECKS_JUDGE_ID, judgement_id, judges_decide, near_duplicate_judgement
from flows.scenarios import GridSpec, build_scenarios, pair_type
from schemas.records import Judgement, Run, Scenario, content_id, text_hash, utcnow
from schemas.taxonomy import Taxonomy, load_taxonomy
from warehouse.store import Warehouse
from warehouse.transitions import path_model

log = logging.getLogger("emoforge.build")

DECIDED = ("accepted", "rejected", "uncertain")


class BuildError(RuntimeError):
    pass


# the run config carries the build's sections (``generation``, ``judging``) next to taxonomy/publish/speech
BuildConfig = Config
load_build_config = load_config


def _config_from_dict(data: dict) -> Config:
    return Config.model_validate(data)


_CANCEL: dict[str, "threading.Event"] = {}


def cancel_event(run_id: str):
    import threading

    return _CANCEL.setdefault(run_id, threading.Event())


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


# ---- reading what is on disk ----------------------------------------------------------------------------------
def load_stored(home: Path, scenarios: Sequence[Scenario]) -> tuple[dict[str, Stored], dict[str, Judgement]]:
    """Generated dialogues (complete, consistent turns) and LLM judgements already in the warehouse."""
    import pyarrow as pa

    wh = Warehouse(home)
    if "dialogues" not in wh.tables():
        return {}, {}
    by_did = {dialogue_id(s): s for s in scenarios}
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": list(by_did)}))
        drows = con.sql(
            "SELECT id, status, text_hash, n_turns FROM dialogues WHERE id IN (SELECT id FROM want)"
        ).to_arrow_table().to_pylist()
        texts: dict[str, list[tuple[int, str]]] = defaultdict(list)
        if "turns" in wh.tables():
            for r in con.sql(
                "SELECT dialogue_id, idx, text FROM turns WHERE dialogue_id IN (SELECT id FROM want)"
            ).to_arrow_table().to_pylist():
                texts[r["dialogue_id"]].append((r["idx"], r["text"]))
        jrows = []
        if "judgements" in wh.tables():
            jrows = con.sql(
                "SELECT * FROM judgements WHERE kind = 'llm' AND dialogue_id IN (SELECT id FROM want)"
            ).to_arrow_table().to_pylist()
    finally:
        con.close()
    stored: dict[str, Stored] = {}
    for r in drows:
        s = by_did[r["id"]]
        if r["status"] not in ("generated", "accepted", "rejected", "uncertain", "failed") or not r["text_hash"]:
            continue
        turns = sorted(texts.get(r["id"], []))
        tx = [t for _, t in turns]
        if [i for i, _ in turns] != list(range(s.n_turns)) or text_hash(tx) != r["text_hash"]:
            continue  # incomplete or inconsistent on disk: generate again (from the cache)
        stored[s.id] = Stored(texts=tx, status=r["status"])
    fields = set(Judgement.model_fields)
    judgements = {r["id"]: Judgement.model_validate({k: v for k, v in r.items() if k in fields}) for r in jrows}
    return stored, judgements


# ---- one shard (runs in a Prefect task; plain and picklable) ---------------------------------------------------
def shard_scenarios(config: Config, models_cfg: Any, seed: int, start: int, end: int,
                    home: Path | None = None) -> list[Scenario]:
    """Scenarios ``start..end-1`` of the grid, recomputed where the shard runs (cheap and deterministic, so no
    scenario list travels through Prefect's parameters)."""
    from flows.scenarios import domain_order, scenario_at

    gen, _ = sections(config)
    tax = load_taxonomy(config.taxonomy)
    spec = grid_spec(models_cfg, gen, seed, tax, home)
    spec.validate(tax)
    domains = domain_order(tax, spec)
    return [scenario_at(tax, spec, j, domains) for j in range(start, end)]


def run_shard_sync(home: str, run_id: str, config: dict, models: dict, seed: int, start: int, end: int) -> dict:
    from flows.llm.config import ModelsConfig
    from flows.progress import get_progress

    cfg = _config_from_dict(config)
    mcfg = ModelsConfig.model_validate(models)
    gen, jud = sections(cfg)
    tax = load_taxonomy(cfg.taxonomy)
    scns = shard_scenarios(cfg, mcfg, seed, start, end, Path(home))
    stored, judgements = load_stored(Path(home), scns)
    ctx = ShardContext(
        home=Path(home), run_id=run_id, tax=tax, gen=gen, jud=jud, judges=list(mcfg.judges),
        models=list(mcfg.models), stored=stored, stored_judgements=judgements, progress=get_progress(run_id),
        cancel=_CANCEL.get(run_id),
        advisory_judges=not judges_decide(jud, [mcfg.models[j] for j in mcfg.judges if j in mcfg.models]),
    )
    return asyncio.run(_shard_main(mcfg, scns, ctx))


async def _shard_main(mcfg: Any, scns: list[Scenario], ctx: ShardContext) -> dict:
    from flows.llm.cache import CallCache
    from flows.llm.client import LLMPool

    stats: dict = {}
    async with LLMPool(mcfg, CallCache.for_home(ctx.home), stats=stats) as pool:
        if ctx.progress is not None:
            ctx.progress.attach_pool(pool)
        summary = await run_shard(pool, scns, ctx)
    out = summary.to_dict()
    out["latencies"] = {m: list(s.latencies) for m, s in stats.items()}
    return out


# ---- after the shards: near-duplicates across the run, metrics ------------------------------------------------
def apply_near_duplicates(home: Path, scenarios: Sequence[Scenario], jud: JudgingConfig) -> dict[str, str]:
    """Reject (gate ``near_duplicate``) every dialogue of the run that nearly repeats an earlier one: accepted
    dialogues of other runs first, then this run's in grid order. Returns {dialogue id: id of the original}."""
    import pyarrow as pa

    from flows.checks import near_duplicates
    from flows.generate import dialogue_record

    wh = Warehouse(home)
    if "turns" not in wh.tables():
        return {}
    order = {dialogue_id(s): s for s in scenarios}
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": list(order)}))
        rows = con.sql(
            """SELECT d.id, d.run_id, d.status, d.decided_by, d.status_reason, d.text_hash, (d.id IN (SELECT id FROM want)) AS mine,
                      list(t.text ORDER BY t.idx) AS texts
               FROM dialogues d JOIN turns t ON t.dialogue_id = d.id
               WHERE d.source = 'generated' AND (d.id IN (SELECT id FROM want) OR d.status = 'accepted')
               GROUP BY ALL"""
        ).to_arrow_table().to_pylist()
    finally:
        con.close()
    candidates = []
    others = []
    for r in rows:
        if not r["mine"]:
            others.append((r["id"], r["texts"]))
        elif r["status"] in DECIDED and not (r["status"] == "rejected" and r["decided_by"] == "checks"
                                             and "near_duplicate" not in (r["status_reason"] or "")):
            candidates.append(r)
    candidates.sort(key=lambda r: order[r["id"]].index)
    seq = sorted(others) + [(r["id"], r["texts"]) for r in candidates]
    dups = near_duplicates(seq, threshold=jud.near_duplicate_jaccard)
    mine = {r["id"]: r for r in candidates}
    dups = {k: v for k, v in dups.items() if k in mine}
    if not dups:
        return {}
    stored_checks = {}
    con = wh.connect()
    try:
        ids = [judgement_id(d, CHECKS_JUDGE_ID, mine[d]["text_hash"]) for d in dups]
        con.register("jid", pa.table({"id": ids}))
        fields = set(Judgement.model_fields)
        for r in con.sql("SELECT * FROM judgements WHERE id IN (SELECT id FROM jid)").to_arrow_table().to_pylist():
            stored_checks[r["dialogue_id"]] = Judgement.model_validate({k: v for k, v in r.items() if k in fields})
    finally:
        con.close()
    judgements, dialogues = [], []
    for did, (of_id, jac) in dups.items():
        base = stored_checks.get(did) or Judgement(
            id=judgement_id(did, CHECKS_JUDGE_ID, mine[did]["text_hash"]), dialogue_id=did, judge_id=CHECKS_JUDGE_ID,
            kind="checks", verdict="accept")
        judgements.append(near_duplicate_judgement(base, of_id, jac))
        dialogues.append(dialogue_record(order[did], mine[did]["run_id"], "rejected", texts=mine[did]["texts"],
                                         reason=f"checks: near_duplicate of {of_id} (jaccard {jac})", decided_by="checks"))
    wh.upsert(judgements)
    wh.upsert(dialogues)
    return {d: of for d, (of, _) in dups.items()}


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(round(p * (len(v) - 1))))], 4)


def merge_metrics(shards: list[dict], home: Path, scenarios: Sequence[Scenario], wall_s: float,
                  near_dups: dict[str, str]) -> dict:
    import pyarrow as pa

    models: dict[str, dict] = {}
    lat: dict[str, list[float]] = defaultdict(list)
    for sh in shards:
        for m, s in (sh.get("pool_stats") or {}).items():
            agg = models.setdefault(m, Counter())
            for k in ("requests", "calls", "cached", "retries", "repairs", "prompt_tokens", "completion_tokens"):
                agg[k] += s.get(k, 0) or 0
            for k, v in (s.get("errors") or {}).items():
                agg[f"errors.{k}"] += v
            for k, v in (s.get("attempt_errors") or {}).items():
                agg[f"attempt_errors.{k}"] += v
        for m, v in (sh.get("latencies") or {}).items():
            lat[m].extend(v)
    per_model = {}
    for m, agg in models.items():
        d = {k: v for k, v in agg.items() if "." not in k}
        d["errors"] = {k.split(".", 1)[1]: v for k, v in agg.items() if k.startswith("errors.")}
        d["attempt_errors"] = {k.split(".", 1)[1]: v for k, v in agg.items() if k.startswith("attempt_errors.")}
        d["latency_p50"], d["latency_p90"], d["latency_p99"] = (_pct(lat[m], p) for p in (0.5, 0.9, 0.99))
        d["tokens_per_s_wall"] = round(d["completion_tokens"] / wall_s, 2) if wall_s > 0 else None
        per_model[m] = d
    # final statuses from disk (after the near-duplicate gate)
    wh = Warehouse(home)
    con = wh.connect()
    try:
        con.register("want", pa.table({"id": [dialogue_id(s) for s in scenarios]}))
        rows = con.sql("SELECT id, domain, model_a, model_b, status FROM dialogues WHERE id IN (SELECT id FROM want)"
                       ).to_arrow_table().to_pylist()
    finally:
        con.close()

    def rate(group: dict[str, Counter]) -> dict:
        out = {}
        for k, c in sorted(group.items()):
            n = sum(c.values())
            out[k] = {"n": n, **dict(c), "acceptance": round(c["accepted"] / n, 4) if n else None}
        return out

    by_pair: dict[str, Counter] = defaultdict(Counter)
    by_domain: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    statuses: Counter = Counter()
    for r in rows:
        statuses[r["status"]] += 1
        by_pair[f"{r['model_a']}|{r['model_b']}"][r["status"]] += 1
        by_domain[r["domain"]][r["status"]] += 1
        by_type[pair_type(r["model_a"], r["model_b"])][r["status"]] += 1
    retries, gates = Counter(), Counter()
    for sh in shards:
        retries.update(sh.get("retries") or {})
        gates.update(sh.get("gates") or {})
    gates["near_duplicate"] += len(near_dups)
    gen_busy = [tuple(x) for sh in shards for x in sh.get("gen_busy", [])]
    judge_busy = [tuple(x) for sh in shards for x in sh.get("judge_busy", [])]
    return {
        "n_scenarios": len(scenarios),
        "missing": len(scenarios) - len(rows),
        "statuses": dict(statuses),
        "acceptance": round(statuses["accepted"] / len(rows), 4) if rows else None,
        "gen_calls": sum(sh.get("gen_calls", 0) for sh in shards),
        "judge_calls": sum(sh.get("judge_calls", 0) for sh in shards),
        "reused_dialogues": sum(sh.get("reused_dialogues", 0) for sh in shards),
        "reused_judgements": sum(sh.get("reused_judgements", 0) for sh in shards),
        "judge_errors": sum(sh.get("judge_errors", 0) for sh in shards),
        "turn_retries_by_gate": dict(retries),
        "rejections_by_gate": dict(gates),
        "near_duplicates": len(near_dups),
        "models": per_model,
        "acceptance_by_pair": rate(by_pair),
        "acceptance_by_pair_type": rate(by_type),
        "acceptance_by_domain": rate(by_domain),
        "judge_overlap_share": overlap_share(gen_busy, judge_busy),
        "wall_s": round(wall_s, 2),
    }


def overlap_share(gen: list[tuple], judge: list[tuple]) -> float | None:
    """Share of the judging time that ran while some generation was still running (0 = strictly after)."""
    if not gen or not judge:
        return None
    g_end = max(e for _, e in gen)
    total = sum(e - s for s, e in judge)
    if total <= 0:
        return None
    during = sum(max(0.0, min(e, g_end) - s) for s, e in judge)
    return round(during / total, 4)


# ---- the Prefect flow ------------------------------------------------------------------------------------------
def _prefect_objects():
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(name="generate-and-judge-shard", cache_policy=NO_CACHE, persist_result=False)
    def shard_task(home: str, run_id: str, config: dict, models: dict, seed: int, start: int, end: int) -> dict:
        return run_shard_sync(home, run_id, config, models, seed, start, end)

    @flow(name="emoforge-build", persist_result=False, validate_parameters=False)
    def build_flow(home: str, run_id: str, config: dict, models: dict, seed: int, n_scenarios: int,
                   shard_size: int) -> list[dict]:
        futures = [shard_task.submit(home, run_id, config, models, seed, start, min(n_scenarios, start + shard_size))
                   for start in range(0, n_scenarios, shard_size)]
        results, errors = [], []
        try:
            for f in futures:
                try:
                    results.append(f.result())
                except Exception as exc:  # noqa: BLE001 - wait for the other shards before failing
                    errors.append(exc)
                    if isinstance(exc, BuildAborted):
                        cancel_event(run_id).set()  # the run stops: the other shards too
        except BaseException:
            # Ctrl-C / SIGTERM land here (main thread): tell the shard threads of this process to stop now,
            # or the task runner's shutdown would wait for them to finish their work
            cancel_event(run_id).set()
            raise
        if errors:
            raise errors[0]
        return results

    return shard_task, build_flow


_FLOW_CACHE: dict[str, Any] = {}


def get_build_flow():
    if "flow" not in _FLOW_CACHE:
        _FLOW_CACHE["task"], _FLOW_CACHE["flow"] = _prefect_objects()
    return _FLOW_CACHE["flow"]


# ---- entry point -----------------------------------------------------------------------------------------------
def run_build(home: Path, config: Config, models_cfg: Any, *, n_dialogues: int | None, seed: int = 0,
              version: str | None = None, publish: bool = True, task_runner: Any = None, progress: bool = True,
              command: str = "build", evaluate: bool = True) -> dict:
    """Scenarios -> generation/judging shards (Prefect) -> near-duplicate gate -> speech -> publish. Returns a summary with
    ``run_id``, ``metrics`` and, when published, ``version``/``path``/``n_dialogues``."""
    from flows.progress import BuildProgress

    home = Path(home)
    wh = Warehouse(home)
    gen, jud = sections(config)
    tax = load_taxonomy(config.taxonomy)
    scenarios = plan_scenarios(tax, models_cfg, gen, seed, n_dialogues, home)
    started = utcnow()
    run_id = content_id("run", command, started.isoformat(), os.getpid())
    fp = f"{config.fingerprint()}:{models_cfg.fingerprint()}"
    from emoforge.settings import code_version

    run = Run(id=run_id, command=command, started_at=started, config_fingerprint=fp, code_version=code_version())
    wh.upsert([run])
    wh.upsert(scenarios)
    t0 = time.monotonic()
    cancel = cancel_event(run_id)
    status, error = "failed", None
    summary: dict[str, Any] = {"run_id": run_id}
    metrics: dict[str, Any] = {}
    try:
        with _served(models_cfg, home) as live_cfg, BuildProgress(run_id, len(scenarios), enabled=progress):
            flow_fn = get_build_flow()
            runner = task_runner
            if runner is None:
                from prefect.task_runners import ThreadPoolTaskRunner

                runner = ThreadPoolTaskRunner(max_workers=gen.parallel_shards)
            shards = flow_fn.with_options(task_runner=runner)(
                home=str(home), run_id=run_id, config=config.model_dump(mode="json"),
                models=live_cfg.model_dump(mode="json"), seed=seed, n_scenarios=len(scenarios),
                shard_size=gen.shard_size,
            )
        near = apply_near_duplicates(home, scenarios, jud)
        metrics = merge_metrics(shards, home, scenarios, time.monotonic() - t0, near)
        summary["metrics"] = metrics
        if metrics["missing"]:
            raise BuildError(f"{metrics['missing']} scenarios have no dialogue record after the run")
        if publish and config.speech.enabled:
            from flows.speech import synthesise_home

            summary["speech"] = synthesise_home(home, config=config.speech, workers=config.speech.workers,
                                                progress=progress)
        if publish:
            from warehouse.publish import publish_release

            try:
                rel = publish_release(home, config, version=version, run_id=run_id, evaluate=evaluate)
            except Exception as exc:
                if type(exc).__name__ == "PublishError" and "nothing to publish" in str(exc):
                    raise BuildError(
                        f"nothing to publish: none of the {len(scenarios)} dialogues was accepted "
                        f"(statuses {metrics['statuses']}; rejections by gate {metrics['rejections_by_gate']}; "
                        f"failed-turn retries by gate {metrics['turn_retries_by_gate']}). Ask for more dialogues, "
                        "point --models at larger models, or relax the judging thresholds (docs/generation.md)"
                    ) from None
                raise
            summary.update(rel)
            metrics["published"] = {"version": rel.get("version"), "path": rel.get("path")}
        status = "finished"
        return summary
    except BaseException as exc:
        cancel.set()  # Ctrl-C / SIGTERM / a failed shard: stop the shards still running in this process
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _CANCEL.pop(run_id, None)
        if error:
            metrics = metrics or {"error": error}
            metrics["error"] = error
        wh.upsert([run.model_copy(update={"finished_at": utcnow(), "status": status,
                                          "metrics_json": json.dumps(metrics, sort_keys=True, default=str)})])
        runs_dir = wh.runs_dir / run_id
        runs_dir.mkdir(parents=True, exist_ok=True)
        (runs_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))


class _served:
    """Start the embedded llama.cpp servers when the models config needs them; yields the config with endpoints."""

    def __init__(self, models_cfg: Any, home: Path):
        self.cfg = models_cfg
        self.home = home
        self._cm = None

    def __enter__(self):
        if not self.cfg.needs_embedded():
            return self.cfg
        from flows.llm.embedded import embedded_servers

        from rich.console import Console

        console = Console(stderr=True)
        self._cm = embedded_servers(self.cfg, self.home,
                                    progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
        return self._cm.__enter__()

    def __exit__(self, *exc):
        if self._cm is not None:
            return self._cm.__exit__(*exc)
        return False


__all__ = ["BuildAborted", "BuildError", "apply_near_duplicates", "load_stored", "merge_metrics", "plan_scenarios",
           "run_build", "run_shard_sync", "sections"]
