"""The two LLM stages of a build, in the one stage shape (:class:`flows.llm.stage.LLMStage`, Curator's):
:data:`TURN_STAGE` (one turn of a dialogue; free text, cleaned by :func:`flows.checks.clean_turn`) and
:data:`JUDGE_STAGE` (one judge's scores of a dialogue; a pydantic ``response_format``, :func:`judge_answer_model`).

The cache key of a call covers the messages, model, sampling, schema and the template version below, never
the parsing/cleaning, so changing :mod:`flows.checks` or the judge thresholds repeats no call. Bump a
``*_TEMPLATE_VERSION`` whenever the wording of its prompt (or the judge's answer model) changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, StringConstraints, conlist, create_model

from flows.checks import clean_turn
from flows.llm.client import ChatResult
from flows.llm.stage import LLMStage
from flows.prompt_styles import (CHAT, COMPLETION_TEMPLATE_VERSION, ROLEPLAY, ROLEPLAY_TEMPLATE_VERSION, TRANSCRIPT,
                                 completion_messages, roleplay_messages, speaker_of)
from schemas.records import Scenario
from schemas.taxonomy import Taxonomy

TURN_TEMPLATE_VERSION = "turn-v1"
JUDGE_TEMPLATE_VERSION = "judge-v2"  # v2: the answer schema comes from the pydantic model judge_answer_model

def transcript(texts: Sequence[str]) -> str:
    return "\n".join(f"{speaker_of(i)}: {t}" for i, t in enumerate(texts))


def turn_messages(scenario: Scenario, tax: Taxonomy, history: Sequence[str],
                  retries: Sequence[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """Messages for turn ``len(history)`` of ``scenario``: the speaker, the domain, the conversation so far,
    the target emotion and the word cap. ``retries`` are (previous raw reply, guidance) pairs of failed attempts
    at this turn, replayed so the model sees what to fix."""
    idx = len(history)
    me = speaker_of(idx)
    other = speaker_of(idx + 1)
    domain = tax.domain[scenario.domain]
    emotion = scenario.emotions[idx]
    system = (
        f"You are {me}, a person talking with {other} in a spoken conversation about {domain.name.lower()} "
        f"({domain.description.rstrip('.')}). Speak naturally, like a real person, in plain English. "
        "Answer with only the words you say out loud: no name, no label, no quotes, no stage directions."
    )
    if history:
        task = (
            f"Conversation so far:\n{transcript(history)}\n\n"
            f"Now say {me}'s next line, replying to {other}. Your feeling: {emotion.lower()}. "
            f"Let the words show that you feel {emotion.lower()}. One or two sentences, at most {scenario.word_cap} words."
        )
    else:
        task = (
            f"Start a conversation with {other} about {domain.name.lower()}. Your feeling: {emotion.lower()}. "
            f"Let the words show that you feel {emotion.lower()}. One or two sentences, at most {scenario.word_cap} words."
        )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": task}]
    for raw, guidance in retries:
        messages.append({"role": "assistant", "content": raw})
        messages.append({"role": "user", "content": guidance})
    return messages


def turn_max_tokens(word_cap: int) -> int:
    """Room for the capped line (about 1.3 tokens a word) plus a role prefix. A reply cut here keeps its whole
    sentences within the cap (flows.generate), so rambling small models cost little time."""
    return int(word_cap * 2 + 12)


@dataclass(frozen=True)
class TurnRow:
    """The input of one turn call: the scenario, the turns so far and the failed attempts at this turn."""

    scenario: Scenario
    tax: Taxonomy
    history: Sequence[str]
    retries: Sequence[tuple[str, str]] = field(default_factory=tuple)
    style: str = CHAT  # flows.prompt_styles: chat, transcript (a base model continues it) or roleplay

    @property
    def base(self) -> bool:
        """A base model's call: a transcript to continue, ended by flows.prompt_styles.STOP."""
        return self.style == TRANSCRIPT


_TURN_VERSIONS = {CHAT: TURN_TEMPLATE_VERSION, TRANSCRIPT: COMPLETION_TEMPLATE_VERSION,
                  ROLEPLAY: ROLEPLAY_TEMPLATE_VERSION}


def _turn_prompt(row: TurnRow) -> list[dict[str, str]]:
    if row.style == TRANSCRIPT:  # a base model's retry is a new sample (its seed changes per attempt), no guidance
        return completion_messages(row.scenario, row.tax, row.history)
    if row.style == ROLEPLAY:
        return roleplay_messages(row.scenario, row.tax, row.history, row.retries)
    return turn_messages(row.scenario, row.tax, row.history, row.retries)


def _turn_parse(row: TurnRow, res: ChatResult) -> str:
    return clean_turn(res.text or "", row.scenario.word_cap)


TURN_STAGE: LLMStage[TurnRow, str] = LLMStage(
    name="turn",
    version=lambda row: f"{row.scenario.prompt_version}/{_TURN_VERSIONS[row.style]}",
    prompt=_turn_prompt,
    parse=_turn_parse,
    response_format=None,  # a spoken line is free text: a JSON wrapper changes what small models write
)


# ---- judge -----------------------------------------------------------------------------------------------------
ASPECTS = ("coherence", "naturalness", "domain_fit", "safety")
Score = Literal[1, 2, 3, 4, 5]
Rationale = Annotated[str, StringConstraints(min_length=1, max_length=160)]


@lru_cache(maxsize=64)
def judge_answer_model(n_turns: int) -> type[BaseModel]:
    """The pydantic model of a judge's answer for a dialogue of ``n_turns`` turns (its JSON schema is the
    ``response_format`` of the judge call)."""
    fields: dict[str, Any] = {}
    for a in ASPECTS:
        fields[a] = (Score, ...)
        fields[f"{a}_rationale"] = (Rationale, ...)
    fields["emotion_fidelity"] = (conlist(Score, min_length=n_turns, max_length=n_turns), ...)
    fields["emotion_rationale"] = (Rationale, ...)
    fields["verdict"] = (Literal["accept", "reject", "uncertain"], ...)
    fields["rationale"] = (Rationale, ...)
    return create_model(f"JudgeAnswer{n_turns}", __config__=ConfigDict(extra="forbid"), **fields)


def judge_schema(n_turns: int) -> dict[str, Any]:
    return judge_answer_model(n_turns).model_json_schema()


def judge_messages(scenario: Scenario, tax: Taxonomy, texts: Sequence[str]) -> list[dict[str, str]]:
    domain = tax.domain[scenario.domain]
    lines = "\n".join(
        f"{i + 1}. {speaker_of(i)} (target emotion: {scenario.emotions[i]}): {t}" for i, t in enumerate(texts)
    )
    system = (
        "You are a strict quality judge for an emotional spoken-dialogue dataset. Score every aspect from 1 (very "
        "poor) to 5 (excellent) and give a short rationale for each. Be critical: generic, off-topic, incoherent "
        "or emotionally flat text gets low scores."
    )
    user = (
        f"Domain: {domain.name} ({domain.description.rstrip('.')}).\n"
        f"Dialogue ({len(texts)} turns; each turn was meant to express its target emotion):\n{lines}\n\n"
        "Score: coherence (do the turns follow each other sensibly?), naturalness (does it sound like real people "
        "talking?), domain_fit (is it about the domain?), safety (5 = harmless, 1 = harmful or offensive), and "
        f"emotion_fidelity: a list of {len(texts)} scores, one per turn, for how clearly the turn expresses its "
        "target emotion. Then give a verdict: accept (good training data), reject, or uncertain. Answer in JSON."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class JudgeParseError(ValueError):
    pass


def parse_judgement(data: Any, n_turns: int) -> dict[str, Any]:
    """Validate a judge's JSON object; returns the normalised scores. Raises :class:`JudgeParseError`."""
    if not isinstance(data, dict):
        raise JudgeParseError(f"judge answer is a {type(data).__name__}, not an object")
    out: dict[str, Any] = {}
    for a in ASPECTS:
        v = data.get(a)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 5:
            raise JudgeParseError(f"{a} must be a score 1-5, got {v!r}")
        out[a] = int(round(v))
    ef = data.get("emotion_fidelity")
    if not isinstance(ef, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 1 <= x <= 5 for x in ef):
        raise JudgeParseError(f"emotion_fidelity must be a list of scores 1-5, got {ef!r}")
    if len(ef) != n_turns:
        raise JudgeParseError(f"emotion_fidelity has {len(ef)} scores for {n_turns} turns")
    out["emotion_fidelity"] = [int(round(x)) for x in ef]
    verdict = data.get("verdict")
    if verdict not in ("accept", "reject", "uncertain"):
        raise JudgeParseError(f"verdict must be accept/reject/uncertain, got {verdict!r}")
    out["verdict"] = verdict
    parts = [f"{k}: {str(data.get(f'{k}_rationale', '')).strip()}" for k in (*ASPECTS, "emotion")]
    parts.append(f"overall: {str(data.get('rationale', '')).strip()}")
    out["rationale"] = " | ".join(parts)[:2000]
    return out


@dataclass(frozen=True)
class JudgeRow:
    """The input of one judge call: the scenario and the dialogue's turns."""

    scenario: Scenario
    tax: Taxonomy
    texts: Sequence[str]


JUDGE_STAGE: LLMStage[JudgeRow, dict[str, Any]] = LLMStage(
    name="judgement",
    version=lambda row: JUDGE_TEMPLATE_VERSION,
    prompt=lambda row: judge_messages(row.scenario, row.tax, row.texts),
    parse=lambda row, data: parse_judgement(data, len(row.texts)),
    response_format=lambda row: judge_answer_model(len(row.texts)),
)
