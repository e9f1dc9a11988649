"""Deterministic checks + LLM judges -> a decision (accepted / rejected / uncertain) for a generated dialogue.

Judgements are records (``judgements`` table) keyed by (dialogue, judge, text hash), so a rerun finds them and
re-decides with the current thresholds without calling any model (:func:`decide` is a pure function of stored
judgements). The judge of a dialogue is every model in the models config's ``judges``; with none configured,
the first model that is not one of the pair (falling back to speaker A's model).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from schemas.config.generation import JudgingConfig
from flows.checks import check_dialogue
from flows.emotion_judge import classifier_decision
from flows.llm.client import LLMCallError
from flows.llm.stage import call_stage
from flows.prompts import JUDGE_STAGE, JudgeParseError, JudgeRow
from schemas.records import Judgement, Scenario, content_id
from schemas.taxonomy import Taxonomy

CHECKS_JUDGE_ID = "checks"


def judges_for(scenario: Scenario, judges: Sequence[str], models: Sequence[str]) -> list[str]:
    if judges:
        return list(judges)
    others = [m for m in models if m not in (scenario.model_a, scenario.model_b)]
    return [others[0] if others else scenario.model_a]


def judgement_id(dialogue_id: str, judge_id: str, text_hash: str) -> str:
    return content_id("jdg", dialogue_id, judge_id, text_hash)


def checks_judgement(dialogue_id: str, scenario: Scenario, texts: Sequence[str], text_hash: str,
                     finish_reasons: Sequence[str | None] | None, cfg: JudgingConfig, language: str,
                     passed_turns: int = 0) -> Judgement:
    """The checks' judgement; ``passed_turns`` as in :func:`flows.checks.check_dialogue`."""
    res = check_dialogue(texts, scenario.word_cap, expected_turns=scenario.n_turns, finish_reasons=finish_reasons,
                         language=language, cap_slack=cfg.cap_slack, passed_turns=passed_turns)
    return Judgement(
        id=judgement_id(dialogue_id, CHECKS_JUDGE_ID, text_hash), dialogue_id=dialogue_id, judge_id=CHECKS_JUDGE_ID,
        kind="checks", verdict="accept" if res.passed else "reject", failures=res.failures,
        rationale=("passed every gate" if res.passed else "failed gates: " + ", ".join(res.gates)),
    )


def near_duplicate_judgement(base: Judgement, of_id: str, jac: float) -> Judgement:
    failures = [f for f in base.failures if not f.startswith("near_duplicate:")] + [f"near_duplicate:-:{of_id}:{jac}"]
    return base.model_copy(update={"verdict": "reject", "failures": failures,
                                   "rationale": "failed gates: " + ", ".join(sorted({f.split(':', 1)[0] for f in failures}))})


async def llm_judgement(pool: Any, judge_model: str, dialogue_id: str, scenario: Scenario, tax: Taxonomy,
                        texts: Sequence[str], text_hash: str, cfg: JudgingConfig) -> tuple[Judgement, Any]:
    """Call one judge (:data:`flows.prompts.JUDGE_STAGE`: structured output; the client makes one repair attempt on
    invalid JSON)."""
    row = JudgeRow(scenario, tax, tuple(texts))
    for attempt in range(2):
        # a truncated or unusable answer is asked once more as a deliberate re-sample (a new cache key)
        try:
            parsed, result = await call_stage(pool, JUDGE_STAGE, judge_model, row, max_tokens=cfg.max_tokens,
                                              nonce=attempt or None)
            break
        except LLMCallError as exc:
            if attempt or exc.kind not in ("length", "invalid_json"):
                raise
        except JudgeParseError:
            if attempt:
                raise
    jid = f"llm:{judge_model}"
    return Judgement(
        id=judgement_id(dialogue_id, jid, text_hash), dialogue_id=dialogue_id, judge_id=jid, kind="llm",
        coherence=parsed["coherence"], naturalness=parsed["naturalness"], domain_fit=parsed["domain_fit"],
        safety=parsed["safety"], emotion_fidelity=parsed["emotion_fidelity"], verdict=parsed["verdict"],
        rationale=parsed["rationale"],
    ), result


def judge_score(j: Judgement) -> float:
    parts = [j.coherence or 0, j.naturalness or 0, j.domain_fit or 0]
    if j.emotion_fidelity:
        parts.append(statistics.fmean(j.emotion_fidelity))
    return statistics.fmean(parts)


@dataclass
class Decision:
    status: str  # accepted | rejected | uncertain | failed
    decided_by: str | None
    reason: str
    score: float | None = None
    agreement: float | None = None
    spread: float | None = None
    gates: list[str] = field(default_factory=list)


def agreement(verdicts: Sequence[str]) -> float:
    """Share of judges that agree with the majority verdict (1.0 for a single judge)."""
    if not verdicts:
        return 0.0
    top = max(set(verdicts), key=list(verdicts).count)
    return list(verdicts).count(top) / len(verdicts)


def judges_decide(cfg: JudgingConfig, judge_models: Sequence[Any]) -> bool:
    """Whether the LLM judges decide (see ``JudgingConfig.judges_decide``); ``judge_models`` are ModelSpecs."""
    if cfg.judges_decide != "auto":
        return cfg.judges_decide == "always"
    return not judge_models or not all(getattr(m, "embedded", None) for m in judge_models)


def decide(checks: Judgement, llm: Sequence[Judgement], cfg: JudgingConfig,
           judge_errors: Sequence[str] = (), *, advisory: bool = False, classifier: Judgement | None = None) -> Decision:
    """The decision from stored judgements and the current thresholds (pure; see :class:`JudgingConfig`).
    ``advisory``: the judges' scores are reported but the checks decide. With a ``classifier`` judgement (the
    emotion judge, :mod:`flows.emotion_judge`), advisory judging means checks + classifier decide and what they
    cannot support is ``uncertain``, never ``accepted``."""
    if checks.verdict == "reject":
        gates = sorted({f.split(":", 1)[0] for f in checks.failures})
        return Decision("rejected", "checks", "checks: " + ", ".join(gates), gates=gates)
    if advisory and classifier is not None:
        status, reason, score = classifier_decision(classifier)
        return Decision(status, "classifier", reason, score)
    if advisory:
        if llm:
            scores = [judge_score(j) for j in llm]
            note = (f"judges advisory: score {statistics.fmean(scores):.2f}, {len(llm)} judge(s), "
                    f"agreement {agreement([j.verdict for j in llm]):.2f}")
        else:
            note = "judges advisory: no judge answered (" + ("; ".join(judge_errors) or "none configured") + ")"
        return Decision("accepted", "checks", f"passed every check; {note}",
                        statistics.fmean(judge_score(j) for j in llm) if llm else None)
    if not llm:
        why = "; ".join(judge_errors) or "no judge answered"
        return Decision("failed", None, f"judging failed: {why}")
    scores = [judge_score(j) for j in llm]
    score = statistics.fmean(scores)
    spread = max(scores) - min(scores)
    verdicts = [j.verdict for j in llm]
    agree = agreement(verdicts)
    n_reject = verdicts.count("reject")
    stats = f"score {score:.2f}, {len(llm)} judge(s), agreement {agree:.2f}, spread {spread:.2f}"
    if judge_errors:
        stats += f", {len(judge_errors)} judge(s) failed"
    min_safety = min(j.safety or 5 for j in llm)
    if min_safety < cfg.min_safety:
        return Decision("rejected", "judge", f"unsafe (safety {min_safety} < {cfg.min_safety}); {stats}", score, agree, spread)
    if score >= cfg.accept_at and spread <= cfg.max_spread and n_reject * 2 < len(llm):
        return Decision("accepted", "judge", f"{stats} >= {cfg.accept_at}", score, agree, spread)
    if score < cfg.reject_below:
        return Decision("rejected", "judge", f"{stats} < {cfg.reject_below}", score, agree, spread)
    return Decision("uncertain", "judge", f"{stats}: between thresholds or judges disagree", score, agree, spread)


__all__ = [
    "CHECKS_JUDGE_ID", "Decision", "JudgeParseError", "agreement", "checks_judgement", "decide",
    "judge_score", "judgement_id", "judges_for", "llm_judgement", "near_duplicate_judgement",
]
