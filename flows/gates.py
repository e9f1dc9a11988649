"""Checking dialogues from a file with the build's own gates: what ``emoforge gates check FILE.jsonl`` runs.

One dialogue per line, a JSON object::

    {"id": "d1", "domain": "Travel", "turns": [{"speaker": "A", "text": "...", "emotion": "Happy"}, ...]}

(``emotion`` may also be called ``target_emotion`` or ``intended_emotion``; ``id`` and ``domain`` are optional).
Each dialogue goes through exactly what the build runs on a generated dialogue: the deterministic checks with the
defect catalogue (:func:`flows.judge.checks_judgement`), the classifier emotion judge
(:mod:`flows.emotion_judge`) and the decision rule of a build whose LLM judges are tiny
(:func:`flows.judge.decide` with the classifier deciding). No LLM is called. A line that is not a usable dialogue
is reported with its number and why; the others are still checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from schemas.config.generation import JudgingConfig
from flows.emotion_judge import EmotionJudge, classifier_judgement, unavailable_judgement
from flows.judge import checks_judgement, decide, judgement_id
from schemas.records import Scenario, text_hash
from schemas.taxonomy import Taxonomy

EMOTION_KEYS = ("emotion", "target_emotion", "intended_emotion")


class GateInputError(ValueError):
    """A line that is not a usable dialogue; the message says what is wrong as the user wrote it."""


@dataclass
class InputDialogue:
    line: int
    id: str
    domain: str
    speakers: list[str]
    texts: list[str]
    emotions: list[str]


@dataclass
class GateResult:
    line: int
    id: str
    status: str
    decided_by: str | None
    reason: str
    score: float | None
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id, "status": self.status, "decided_by": self.decided_by,
                "reason": self.reason, "score": self.score, "failures": self.failures}


def parse_line(raw: str, line: int, tax: Taxonomy) -> InputDialogue:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise GateInputError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise GateInputError(f"a dialogue must be a JSON object, got {type(obj).__name__}")
    turns = obj.get("turns")
    if not isinstance(turns, list) or not turns:
        raise GateInputError("'turns' must be a non-empty list of {speaker, text, emotion} objects")
    if len(turns) > 64:
        raise GateInputError(f"{len(turns)} turns; at most 64")
    speakers, texts, emotions = [], [], []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise GateInputError(f"turn {i} is a {type(t).__name__}, not an object")
        text = t.get("text")
        if not isinstance(text, str):
            raise GateInputError(f"turn {i} has no 'text' string")
        emo = next((t[k] for k in EMOTION_KEYS if k in t), None)
        if not isinstance(emo, str) or not emo:
            raise GateInputError(f"turn {i} has no target emotion ('emotion')")
        if emo not in tax.emotion:
            match = next((e for e in tax.emotion_names if e.lower() == emo.lower()), None)
            if match is None:
                raise GateInputError(f"turn {i}: emotion {emo!r} is not in taxonomy {tax.name!r} "
                                     f"({', '.join(tax.emotion_names)})")
            emo = match
        speakers.append(str(t.get("speaker", "A" if i % 2 == 0 else "B")))
        texts.append(text)
        emotions.append(emo)
    did = str(obj.get("id") or f"line-{line}")
    domain = str(obj.get("domain") or tax.domains[0].name)
    return InputDialogue(line, did, domain, speakers, texts, emotions)


def read_dialogues(lines: Iterable[str], tax: Taxonomy) -> tuple[list[InputDialogue], list[tuple[int, str]]]:
    """The usable dialogues of a file and, for each unusable line, (line number, why)."""
    ok, bad = [], []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            ok.append(parse_line(raw, n, tax))
        except GateInputError as exc:
            bad.append((n, str(exc)))
    return ok, bad


def check_dialogues(dialogues: list[InputDialogue], tax: Taxonomy, word_cap: int,
                    judge_loader: Callable[[], EmotionJudge] | None, cfg: JudgingConfig | None = None,
                    language: str = "en") -> list[GateResult]:
    """The build's decision for every dialogue: checks, then the classifier judge on what passed them."""
    cfg = cfg or JudgingConfig()
    judge: EmotionJudge | None = None
    why_no_judge = "not requested (--no-judge)" if judge_loader is None else ""
    out = []
    for d in dialogues:
        scn = Scenario(id=f"gates-{d.id}", domain=d.domain, model_a="input", model_b="input", n_turns=len(d.texts),
                       emotions=d.emotions, seed=0, index=d.line, taxonomy=tax.name, word_cap=word_cap)
        th = text_hash(d.texts)
        chk = checks_judgement(d.id, scn, d.texts, th, None, cfg, language)
        clf = None
        if chk.verdict == "accept":
            jid = judgement_id(d.id, "classifier:emotion", th)
            if judge is None and not why_no_judge:
                try:
                    judge = judge_loader()
                except Exception as exc:  # noqa: BLE001 - any failure to build the judge leaves it unavailable
                    why_no_judge = str(exc)
            clf = (classifier_judgement(judge, jid, d.id, d.texts, d.emotions, tax) if judge is not None
                   else unavailable_judgement(jid, d.id, why_no_judge))
        dec = decide(chk, [], cfg, advisory=True, classifier=clf)
        failures = list(chk.failures) + (list(clf.failures) if clf is not None else [])
        out.append(GateResult(d.line, d.id, dec.status, dec.decided_by, dec.reason,
                              None if dec.score is None else round(dec.score, 3), failures))
    return out


def check_file(path: Path, tax: Taxonomy, word_cap: int, judge_loader: Callable[[], EmotionJudge] | None
               ) -> tuple[list[GateResult], list[tuple[int, str]]]:
    """Raises ``OSError``/``UnicodeDecodeError`` when the file cannot be read at all."""
    text = Path(path).read_text(encoding="utf-8")
    dialogues, bad = read_dialogues(text.splitlines(), tax)
    return check_dialogues(dialogues, tax, word_cap, judge_loader), bad


__all__ = ["GateInputError", "GateResult", "InputDialogue", "check_dialogues", "check_file", "parse_line",
           "read_dialogues"]
