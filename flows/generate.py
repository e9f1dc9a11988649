"""Paired generation of one shard of scenarios, with judging overlapped, records written as they complete.

Every dialogue of the shard runs as its own coroutine (turn after turn), all of them at once, so every pending
request of the shard is in flight together and the client pool (per-endpoint adaptive concurrency) decides how
many reach each server; no step waits for the slowest dialogue. When a dialogue's last turn is in, the same
coroutine checks and judges it right away, so judging overlaps generation from the first finished dialogue on.

A turn: the speaker's model gets the domain, the conversation so far, the target emotion and the word cap
(:data:`flows.prompts.TURN_STAGE`); the reply is cleaned (:func:`flows.checks.clean_turn`) and checked
(:func:`flows.checks.turn_problem`); a bad reply is retried with guidance naming the problem, up to
``max_attempts_per_turn``. A dialogue that still fails ends ``failed`` with the reason; the others go on.
Each call carries a per-(scenario, turn, attempt) sampling seed: reproducible, and two dialogues with the same
prompt do not share a cache entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from schemas.config.generation import GenerationConfig, JudgingConfig
from flows.checks import CLEANING_VERSION, clean_turn, turn_problem
from flows.emotion_judge import emotion_judgement
from flows.executor import RunControl, ShardProgress
from flows.judge import Decision, checks_judgement, decide, judgement_id, judges_for, llm_judgement
from flows.llm.client import LLMCallError
from flows.llm.stage import call_stage
from flows.prompt_styles import STOP, instructions_text, model_spec, prompt_style
from flows.prompts import TURN_STAGE, JudgeParseError, TurnRow, speaker_of, turn_max_tokens
from schemas.records import Dialogue, Judgement, Scenario, Turn, content_id
from schemas.stats import add_busy
from schemas.text import count_words, text_hash
from schemas.taxonomy import Taxonomy
from warehouse.store import Warehouse

log = logging.getLogger("emoforge.generate")

class BuildAborted(RuntimeError):
    """The run stopped early (error rate above the threshold); what finished is on disk, a rerun resumes."""


class BuildInterrupted(RuntimeError):
    """The build process was interrupted (Ctrl-C, SIGTERM) while this shard ran."""


def dialogue_id(scenario: Scenario) -> str:
    return content_id("dlg", scenario.id)


def turn_seed(scenario_id: str, idx: int, attempt: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{scenario_id}|{idx}|{attempt}".encode()).digest()[:4], "big") % (2**31 - 1)


@dataclass
class GenOutcome:
    scenario: Scenario
    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str | None] = field(default_factory=list)
    failed_reason: str | None = None
    calls: int = 0
    retries: Counter = field(default_factory=Counter)  # gate -> retries it caused
    call_errors: int = 0

    @property
    def ok(self) -> bool:
        return self.failed_reason is None and len(self.texts) == self.scenario.n_turns


async def generate_dialogue(pool: Any, scenario: Scenario, tax: Taxonomy, gen: GenerationConfig,
                            progress: Any = None) -> GenOutcome:
    out = GenOutcome(scenario)
    cap = scenario.word_cap
    style = {m: prompt_style(model_spec(pool, m)) for m in (scenario.model_a, scenario.model_b)}
    for idx in range(scenario.n_turns):
        model = scenario.model_a if speaker_of(idx) == "A" else scenario.model_b
        retries: list[tuple[str, str]] = []
        last = "no attempt"
        attempt = 0
        while attempt < gen.max_attempts_per_turn:
            row = TurnRow(scenario, tax, tuple(out.texts), tuple(retries), style=style[model])
            prompt = instructions_text(TURN_STAGE.prompt(row))
            out.calls += 1
            try:
                text, res = await call_stage(pool, TURN_STAGE, model, row, max_tokens=turn_max_tokens(cap),
                                             sampling={"seed": turn_seed(scenario.id, idx, attempt),
                                                       **({"stop": list(STOP)} if row.base else {})})
            except LLMCallError as exc:
                # the client stops the run when a model cannot be reached at all (never answered, connection
                # refused after every retry): the build stops at once, naming the endpoint and the cause. Other call
                # errors fail the dialogue, and the run's early stop (the share of failed dialogues) decides
                if exc.kind == "early_stop":
                    raise BuildAborted(str(exc)) from None
                if exc.kind == "length" and exc.text:
                    # the reply ran past max_tokens: keep it only when its whole sentences within the cap pass
                    # every check (what was cut lay beyond the cap anyway); otherwise retry asking for less
                    text = clean_turn(exc.text, cap)
                    problem = turn_problem(text, out.texts, cap, finish_reason="length", language=gen.language,
                                           prompt=prompt)
                    attempt += 1
                    if problem is None:
                        out.texts.append(text)
                        out.finish_reasons.append("length-trimmed")
                        if progress is not None:
                            progress.turn_done(model)
                        break
                    out.retries["length"] += 1
                    last = f"truncated at max_tokens ({problem.gate})"
                    retries.append((exc.text.strip()[:400], f"Your reply was far too long. Say it in one short sentence of at most {cap} words."))
                    continue
                out.call_errors += 1
                last = f"LLM call failed: {exc}"
                if progress is not None:
                    progress.call_error(model)
                if out.call_errors >= gen.max_call_failures:
                    out.failed_reason = f"turn {idx} ({model}): {last}"
                    return out
                continue  # same attempt again: the client already retried with backoff; cached calls are free
            raw = res.text or ""
            finish = res.finish_reason
            problem = turn_problem(text, out.texts, cap, finish_reason=finish, language=gen.language, prompt=prompt)
            attempt += 1
            if problem is None:
                out.texts.append(text)
                out.finish_reasons.append(finish)
                if progress is not None:
                    progress.turn_done(model)
                break
            out.retries[problem.gate] += 1
            last = f"{problem.gate}" + (f" ({problem.detail})" if problem.detail else "")
            retries.append((raw.strip()[:400] or "(empty)", problem.guidance(cap)))
        else:
            out.failed_reason = f"turn {idx} ({model}): {last} after {gen.max_attempts_per_turn} attempts"
            return out
    return out


# ---- records ---------------------------------------------------------------------------------------------------
def turn_records(did: str, scenario: Scenario, texts: Sequence[str]) -> list[Turn]:
    return [
        Turn(id=Turn.make_id(did, i), dialogue_id=did, idx=i, speaker=speaker_of(i),
             model=scenario.model_a if speaker_of(i) == "A" else scenario.model_b, text=t,
             intended_emotion=scenario.emotions[i], label=scenario.emotions[i], label_source="intended",
             n_words=count_words(t))
        for i, t in enumerate(texts)
    ]


def dialogue_record(scenario: Scenario, run_id: str, status: str, *, texts: Sequence[str] = (),
                    reason: str | None = None, decided_by: str | None = None,
                    judge_score: float | None = None) -> Dialogue:
    return Dialogue(
        id=dialogue_id(scenario), scenario_id=scenario.id, run_id=run_id, source="generated", domain=scenario.domain,
        model_a=scenario.model_a, model_b=scenario.model_b, n_turns=scenario.n_turns, status=status,
        status_reason=reason, decided_by=decided_by, text_hash=text_hash(list(texts)) if texts else "",
        judge_score=judge_score,
        taxonomy=scenario.taxonomy,
    )


class RecordSink:
    """Buffers finished records and writes them to the warehouse every ``flush_every_s`` (turns, then
    dialogues, then judgements), so a kill loses at most the last few seconds, whose calls are cached."""

    def __init__(self, home: Path, flush_every_s: float = 2.0, max_buffer: int = 2000):
        self.wh = Warehouse(home)
        self.flush_every_s = flush_every_s
        self.max_buffer = max_buffer
        self.buf: dict[str, list] = {"turns": [], "dialogues": [], "judgements": []}
        self._last = time.monotonic()
        self._lock = asyncio.Lock()
        self.written = Counter()

    def add(self, table: str, records: Sequence) -> None:
        self.buf[table].extend(records)

    def _size(self) -> int:
        return sum(len(v) for v in self.buf.values())

    async def maybe_flush(self) -> None:
        if time.monotonic() - self._last >= self.flush_every_s or self._size() >= self.max_buffer:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            batch = {k: v for k, v in self.buf.items() if v}
            self.buf = {k: [] for k in self.buf}
            self._last = time.monotonic()
            if batch:
                await asyncio.to_thread(self._write, batch)

    def _write(self, batch: dict[str, list]) -> None:
        for table in ("turns", "dialogues", "judgements"):
            recs = batch.get(table)
            if recs:
                self.wh.upsert(recs)
                self.written[table] += len(recs)


# ---- the shard pipeline ----------------------------------------------------------------------------------------
@dataclass
class Stored:
    """What the warehouse already holds for a scenario (read from disk at the start of a shard)."""

    texts: list[str]
    status: str


@dataclass
class ShardContext:
    home: Path
    run_id: str
    tax: Taxonomy
    gen: GenerationConfig
    jud: JudgingConfig
    judges: list[str]
    models: list[str]
    stored: dict[str, Stored] = field(default_factory=dict)  # scenario id -> stored generated dialogue
    stored_judgements: dict[str, Judgement] = field(default_factory=dict)  # judgement id -> record
    progress: ShardProgress | None = None
    control: RunControl | None = None  # the run's cancel file (flows.executor)
    advisory_judges: bool = False  # the checks decide, the judges' scores are only recorded


@dataclass
class ShardSummary:
    """What a shard reports to the run: counts and bounded summaries only, nothing per dialogue or per call (each
    dialogue's status and reason are in the warehouse), so the driver's memory does not grow with the run."""

    statuses: Counter = field(default_factory=Counter)  # final status -> dialogues
    gen_calls: int = 0
    judge_calls: int = 0
    reused_dialogues: int = 0
    reused_judgements: int = 0
    retries: Counter = field(default_factory=Counter)
    gates: Counter = field(default_factory=Counter)
    judge_errors: int = 0
    aborted: str | None = None
    pool_stats: dict = field(default_factory=dict)
    wall_s: float = 0.0
    gen_end: float | None = None  # when the shard's last generation ended (monotonic clock)
    judge_busy: dict[int, float] = field(default_factory=dict)  # judging busy time by 1 s slot (schemas.stats.add_busy)

    def to_dict(self) -> dict:
        return {
            "statuses": dict(self.statuses), "gen_calls": self.gen_calls,
            "judge_calls": self.judge_calls, "reused_dialogues": self.reused_dialogues,
            "reused_judgements": self.reused_judgements, "retries": dict(self.retries), "gates": dict(self.gates),
            "judge_errors": self.judge_errors, "aborted": self.aborted, "pool_stats": self.pool_stats,
            "wall_s": self.wall_s, "gen_end": self.gen_end, "judge_busy": self.judge_busy,
        }


async def judge_dialogue(pool: Any, ctx: ShardContext, scenario: Scenario, texts: list[str],
                         finish_reasons: Sequence[str | None] | None, summary: ShardSummary,
                         sink: RecordSink) -> Decision:
    did = dialogue_id(scenario)
    th = text_hash(texts)
    # turns generated in this process (finish_reasons known) passed every turn gate then: the audit skips them
    chk = checks_judgement(did, scenario, texts, th, finish_reasons, ctx.jud, ctx.gen.language,
                           passed_turns=len(texts) if finish_reasons is not None else 0)
    sink.add("judgements", [chk])
    llm: list[Judgement] = []
    errors: list[str] = []
    if chk.verdict == "accept" or ctx.jud.judge_failed_checks:
        for jm in judges_for(scenario, ctx.judges, ctx.models):
            jid = judgement_id(did, f"llm:{jm}", th)
            if jid in ctx.stored_judgements:
                llm.append(ctx.stored_judgements[jid])
                summary.reused_judgements += 1
                continue
            summary.judge_calls += 1
            t0 = time.monotonic()
            try:
                j, _res = await llm_judgement(pool, jm, did, scenario, ctx.tax, texts, th, ctx.jud)
            except (LLMCallError, JudgeParseError, ValueError) as exc:
                errors.append(f"{jm}: {str(exc)[:200]}")
                summary.judge_errors += 1
                continue
            finally:
                add_busy(summary.judge_busy, t0, time.monotonic())
            llm.append(j)
            sink.add("judgements", [j])
            if ctx.progress is not None:
                ctx.progress.judged(jm)
    for g in sorted({f.split(":", 1)[0] for f in chk.failures}):
        summary.gates[g] += 1
    clf = None
    if ctx.advisory_judges and chk.verdict == "accept":  # tiny judges: checks + the classifier judge decide
        clf = await emotion_judgement(ctx.home, judgement_id(did, "classifier:emotion", th), did, texts,
                                      scenario.emotions[:len(texts)], ctx.tax)
        sink.add("judgements", [clf])
    return decide(chk, llm, ctx.jud, errors, advisory=ctx.advisory_judges, classifier=clf)


async def _one(pool: Any, ctx: ShardContext, scenario: Scenario, summary: ShardSummary, sink: RecordSink) -> None:
    did = dialogue_id(scenario)
    stored = ctx.stored.get(scenario.id)
    finish: list[str | None] | None = None
    if stored is not None:
        texts = stored.texts
        summary.reused_dialogues += 1
    else:
        out = await generate_dialogue(pool, scenario, ctx.tax, ctx.gen, ctx.progress)
        summary.gen_end = max(summary.gen_end or 0.0, time.monotonic())
        summary.gen_calls += out.calls
        summary.retries.update(out.retries)
        if not out.ok:
            summary.statuses["failed"] += 1
            sink.add("dialogues", [dialogue_record(scenario, ctx.run_id, "failed", reason=out.failed_reason)])
            if ctx.progress is not None:
                ctx.progress.dialogue_done(scenario, "failed")
            await sink.maybe_flush()
            return
        texts, finish = out.texts, out.finish_reasons
        sink.add("turns", turn_records(did, scenario, texts))
        sink.add("dialogues", [dialogue_record(scenario, ctx.run_id, "generated", texts=texts)])
    decision = await judge_dialogue(pool, ctx, scenario, texts, finish, summary, sink)
    summary.statuses[decision.status] += 1
    sink.add("dialogues", [dialogue_record(scenario, ctx.run_id, decision.status, texts=texts,
                                           reason=decision.reason, decided_by=decision.decided_by,
                                           judge_score=decision.score)])
    if ctx.progress is not None:
        ctx.progress.dialogue_done(scenario, decision.status)
    await sink.maybe_flush()


def check_error_rate(summary: ShardSummary, gen: GenerationConfig) -> None:
    done = sum(summary.statuses.values())
    failed = summary.statuses["failed"]
    if done >= gen.error_min_dialogues and failed / done > gen.max_error_rate:
        raise BuildAborted(
            f"stopped early: {failed} of {done} dialogues failed (> {gen.max_error_rate:.0%}); "
            "check the endpoints and the failure reasons (`emoforge` status in the warehouse), then rerun to resume"
        )


async def run_shard(pool: Any, scenarios: Sequence[Scenario], ctx: ShardContext) -> ShardSummary:
    """Generate (or reuse) and judge every scenario of the shard concurrently; returns the shard's summary.
    Raises :class:`BuildAborted` when the error rate passes ``max_error_rate`` (and cancels the run, so the other
    shards stop too); raises :class:`BuildInterrupted` when the run is cancelled. What finished is flushed."""
    summary = ShardSummary()
    sink = RecordSink(ctx.home, ctx.gen.flush_every_s)
    t0 = time.monotonic()

    async def guarded(s: Scenario) -> None:
        await _one(pool, ctx, s, summary, sink)
        check_error_rate(summary, ctx.gen)

    tasks = [asyncio.create_task(guarded(s)) for s in scenarios]

    async def watch_cancel() -> None:
        while True:
            await asyncio.sleep(0.25)
            reason = ctx.control.cancelled() if ctx.control is not None else None
            if reason is not None:
                raise BuildInterrupted(f"the build was cancelled ({reason}); what finished is on disk, rerun to resume")

    watcher = asyncio.create_task(watch_cancel())
    try:
        for fut in [] if not tasks else asyncio.as_completed(tasks + [watcher]):
            await fut
            if all(t.done() for t in tasks):
                break
    except BaseException as exc:
        for t in tasks:
            t.cancel()
        watcher.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if isinstance(exc, BuildAborted):
            summary.aborted = str(exc)
            if ctx.control is not None:
                ctx.control.cancel(str(exc))  # the other shards, wherever they run, stop now
        raise
    finally:
        watcher.cancel()
        await sink.flush()
        summary.wall_s = time.monotonic() - t0
        if ctx.progress is not None:
            ctx.progress.flush(force=True)
        try:
            summary.pool_stats = pool.stats()
        except Exception:  # noqa: BLE001 - stats are best effort
            summary.pool_stats = {}
    return summary


__all__ = [
    "BuildAborted", "BuildInterrupted", "CLEANING_VERSION", "GenOutcome", "RecordSink", "ShardContext", "ShardSummary", "Stored",
    "check_error_rate", "dialogue_id", "dialogue_record", "generate_dialogue", "judge_dialogue", "run_shard", "turn_records", "turn_seed",
]
