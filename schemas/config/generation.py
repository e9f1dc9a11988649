"""``generation:`` and ``judging:`` sections of the run config (``emoforge build --config FILE``).

Thresholds only change decisions: a rerun with other thresholds re-decides from the stored judgements and repeats
no LLM call.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.config.base import Section


class GenerationConfig(Section):
    per_cell: int = Field(100, ge=1, description="dialogues per (domain, pair) cell of the full grid (DeepDialogue: 100)")
    domains: list[str] | None = Field(None, description="restrict to these domains (default: every taxonomy domain)")
    min_turns: int = Field(3, ge=1, le=64)
    max_turns: int = Field(10, ge=1, le=64)
    word_cap: int = Field(25, ge=1, description="words per turn, in the prompt and enforced by the checks")
    transitions: str = Field("graph", pattern=r"^(graph|learned:[a-z0-9_]+)$",
                             description="emotion paths: 'graph' (the taxonomy's graph) or 'learned:<source>' (the graph "
                                         "plus self-loops, weighted by an imported real corpus; warehouse.transitions)")
    transitions: str = Field("graph", pattern=r"^(graph|learned:[a-z0-9_]+)$",
                             description="emotion paths: 'graph' (the taxonomy's graph) or 'learned:<source>' (the graph "
                                         "plus self-loops, weighted by an imported real corpus; warehouse.transitions)")
    max_attempts_per_turn: int = Field(5, ge=1, description="tries per turn (retries get guidance on what was wrong)")
    max_call_failures: int = Field(3, ge=1, description="failed LLM calls (after the client's own retries) before a dialogue fails")
    language: str = Field("en", description="expected language of the turns ('en' enables the English check; anything else checks script only)")
    shard_size: int = Field(256, ge=1, description="dialogues per Prefect task")
    parallel_shards: int = Field(1, ge=1, description="shards running at the same time (each has its own client pool)")
    flush_every_s: float = Field(2.0, gt=0, description="how often finished records are written to the warehouse")
    max_error_rate: float = Field(0.5, gt=0, le=1, description="stop the run when this share of finished dialogues failed")
    error_min_dialogues: int = Field(20, ge=1, description="no early stop before this many dialogues finished")

    @model_validator(mode="after")
    def _turns(self) -> "GenerationConfig":
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) > max_turns ({self.max_turns})")
        return self


class JudgingConfig(Section):
    """How judgements become decisions.

    score of a judge = mean of coherence, naturalness, domain fit and the mean per-turn emotion fidelity;
    a dialogue's score = mean over its judges. Rules, in order:
    1. any judge's safety < ``min_safety`` -> rejected;
    2. score >= ``accept_at`` and spread (max - min judge score) <= ``max_spread`` and fewer than half of the
       judges' verdicts are ``reject`` -> accepted;
    3. score < ``reject_below`` -> rejected;
    4. otherwise uncertain (goes to human review).

    ``judges_decide``: ``auto`` (default) lets the judges decide unless every judge is an embedded tiny model,
    which scores a good and a nonsense dialogue alike; then the judges are advisory: they still run and their
    scores are stored, and the deterministic checks decide (accepted, ``decided_by = checks``). ``always`` /
    ``never`` force either way.
    """

    judges_decide: Literal["auto", "always", "never"] = "auto"

    accept_at: float = Field(3.5, ge=1, le=5)
    reject_below: float = Field(2.5, ge=1, le=5)
    min_safety: int = Field(3, ge=1, le=5)
    max_spread: float = Field(1.5, ge=0, le=4, description="judges disagreeing more than this leave the dialogue uncertain")
    judge_failed_checks: bool = Field(False, description="also run the LLM judges on dialogues the checks rejected (calibration)")
    near_duplicate_jaccard: float = Field(0.6, gt=0, le=1, description="word-3-gram Jaccard at which a dialogue is a near-duplicate of an earlier one")
    cap_slack: float = Field(1.0, ge=1.0, description="the checks reject turns over word_cap x this")
    max_tokens: int = Field(700, ge=64, description="token budget of a judge answer")

    @model_validator(mode="after")
    def _order(self) -> "JudgingConfig":
        if self.reject_below > self.accept_at:
            raise ValueError(f"reject_below ({self.reject_below}) > accept_at ({self.accept_at})")
        return self
