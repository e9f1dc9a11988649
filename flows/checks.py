"""Cleaning of generated turns and the deterministic quality gates that run before the LLM judges.

Tiny models cannot judge (they score a good and a nonsense dialogue alike), so these gates are what keeps the
embedded default honest. They do not depend on model size and every rejection names its gate:
``<gate>:<turn idx>[:detail]`` in ``Judgement.failures`` (kind ``checks``).

Every gate has one shape, ``check(text, context) -> None | reason``, and sits in ONE ordered list, :data:`GATES`:
generation retries a turn on the first gate it fails (:func:`turn_problem`), the audit records every gate every
turn fails (:func:`check_dialogue`). ``near_duplicate`` (across dialogues, :func:`near_duplicates`) is decided
after the shards, over the whole run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterable, Sequence

from schemas.defects import CATALOGUE, Defect, DefectContext, function_word_share, latin_share
from schemas.text import count_words, normalise_text
from flows.neardup import near_duplicates  # noqa: F401 - re-exported: the near_duplicate gate's detector

CLEANING_VERSION = "clean-v1"

# ---- cleaning --------------------------------------------------------------------------------------------------
_SPECIAL_TOKENS = re.compile(
    r"<\|[^|>]{0,40}\|>|</?s>|<(?:start|end)_of_turn>|<(?:eos|bos|pad|unk)>|\[/?INST\]|<<SYS>>|<</SYS>>|<\|?endoftext\|?>",
    re.I,
)
_END_TOKENS = re.compile(r"<\|im_end\|>|<end_of_turn>|<start_of_turn>|<\|im_start\|>|</s>|<\|eot_id\|>|<\|endoftext\|>|<eos>", re.I)
_ROLE_WORDS = r"(?:speaker\s*[ab12]|person\s*[ab12]|[ab]|assistant|user|system|model|bot|human|response|reply|answer|output)"
_LEADING_ROLE = re.compile(rf"^\s*(?:\*\*|__)?\s*{_ROLE_WORDS}\s*(?:\*\*|__)?\s*[:：\-–—]\s*(?:\*\*|__)?\s*", re.I)
_NEXT_SPEAKER = re.compile(r"(?:\n|(?<=[.!?\"'”])\s+)\s*(?:\*\*)?(?:speaker\s*[ab12]|person\s*[ab12]|[AB]|user|assistant|human)\s*(?:\*\*)?\s*:", re.I)
_STAGE_DIRECTION = re.compile(r"\*[^*\n]{1,60}\*|^\s*[\(\[][^\)\]\n]{1,30}[\)\]]\s*[:\-–—]?\s*")
_QUOTES = "\"'“”‘’«»`"
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+")
_TERMINAL = ".!?…\"'”’)»"


def clean_turn(raw: str, word_cap: int | None = None, *, trim_to_cap: bool = True) -> str:
    """One speaker line out of a model's raw reply: no special tokens, no role prefixes or speaker tags, no
    stage directions, no wrapping quotes, one line; cut before the model starts writing the other speaker's
    turn. With ``trim_to_cap``, a reply over ``word_cap`` words is cut to its longest prefix of whole
    sentences within the cap (when that prefix has at least 3 words)."""
    text = raw or ""
    m = _END_TOKENS.search(text)
    if m and text[: m.start()].strip():
        text = text[: m.start()]  # the model ended its turn there; what follows is another turn or noise
    text = _SPECIAL_TOKENS.sub(" ", text)
    text = text.replace("\r", "\n").strip()
    # drop leading role prefixes first so the reply's own tag is not taken as "the next speaker"
    for _ in range(3):
        new = _LEADING_ROLE.sub("", text, count=1)
        new = _STAGE_DIRECTION.sub("", new, count=1) if new.lstrip().startswith(("(", "[")) else new
        if new == text:
            break
        text = new.strip()
    m = _NEXT_SPEAKER.search(text)
    if m and m.start() > 0:
        text = text[: m.start()]
    # a blank line usually starts commentary or another turn
    text = text.strip().split("\n\n")[0]
    text = _STAGE_DIRECTION.sub(" ", text)
    text = " ".join(text.split())
    text = text.replace("**", "").replace("__", "")
    for _ in range(2):
        if not text:
            break
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        elif text[:1] in _QUOTES and text.count(text[0]) == 1:
            text = text[1:].strip()
        elif text[-1:] in _QUOTES and text.count(text[-1]) == 1 and text[-1] not in "'’":
            text = text[:-1].strip()
    text = text.strip(" -–—:")
    if trim_to_cap and word_cap and count_words(text) > word_cap:
        text = trim_to_sentences(text, word_cap)
    return text


def _prefix_within(pieces: list[str], word_cap: int) -> tuple[list[str], int]:
    """The longest run of leading ``pieces`` with at most ``word_cap`` words, and its word count."""
    out: list[str] = []
    n = 0
    for p in pieces:
        w = count_words(p)
        if n + w > word_cap:
            break
        out.append(p.strip())
        n += w
    return out, n


def trim_to_sentences(text: str, word_cap: int) -> str:
    """Longest prefix of whole sentences with at most ``word_cap`` words. When no whole sentence fits, the first
    sentence cut at its last clause boundary within the cap (5+ words); else the text unchanged."""
    pieces = _SENTENCE_END.split(text)
    out, n = _prefix_within(pieces, word_cap)
    if n >= 3:
        return " ".join(out)
    out, n = _prefix_within(_CLAUSE_END.split(pieces[0] if pieces else text), word_cap)
    if n >= 5:
        return ", ".join(out).rstrip(",;:") + "."
    return text


_CLAUSE_END = re.compile(r"\s*[,;:\u2013\u2014]\s+|\s+-\s+")


# ---- per-turn problems -----------------------------------------------------------------------------------------
_DANGLING = frozenset(
    "a an the and or but to of with for from in on at by as that which who because so if than my your our their "
    "his her its is are was were be".split()
)
_LEAKED_TAG = re.compile(
    rf"<\|[^>]*\|?>|<(?:start|end)_of_turn>|\[/?INST\]|(?:^|\s)(?:\*\*)?{_ROLE_WORDS}(?:\*\*)?\s*:\s", re.I
)
_LEAKED_INSTRUCTION = re.compile(
    r"target emotion|emotion\s*:\s*\w+|(?:your )?feeling\s*:\s*\w+|word (?:cap|limit|count)|\b(?:at most|no more than|fewer than|under) \d+ words"
    r"|as an ai\b|language model|conversation so far|\bdomain\s*:|next line of|write (?:the|your) (?:next )?(?:line|reply|turn)"
    r"|\bspeaker [ab]'?s? (?:line|turn)|i (?:cannot|can't) (?:help|assist) with|here(?:'s| is) (?:my|the|a) (?:reply|response|line)",
    re.I,
)


# the prompt's own framing repeated back ("a person talking with B", "Speaker A's line"): case-sensitive A/B
_LEAKED_FRAMING = re.compile(r"\b(?:talking|speaking|chatting|conversation) (?:with|to) [AB]\b(?![\w'])|\b(?:person|speaker) [AB]\b(?![\w'])|\b[Yy]ou are [AB]\b(?![\w'])")


def _leaked_instruction(text: str) -> str | None:
    m = _LEAKED_INSTRUCTION.search(text) or _LEAKED_FRAMING.search(text)
    return m.group(0) if m else None


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def is_repetitive(text: str) -> str | None:
    words = normalise_text(text).split()
    if len(words) < 6:
        return None
    run = 1
    for prev, cur in zip(words, words[1:]):
        run = run + 1 if cur == prev else 1
        if run >= 3:
            return f"word {cur!r} x{run}"
    for n in (2, 3, 4):
        grams = _ngrams(words, n)
        if grams:
            top = max(set(grams), key=grams.count)
            if grams.count(top) >= 3:
                return f"{' '.join(top)!r} x{grams.count(top)}"
    if len(words) >= 12 and len(set(words)) / len(words) < 0.45:
        return f"{len(set(words))} distinct of {len(words)} words"
    return None


def jaccard(a: Iterable, b: Iterable) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def repeats_earlier(text: str, earlier: Sequence[str], threshold: float = 0.6) -> int | None:
    """Index of an earlier turn this one (nearly) repeats: same normalised text, or (both 4+ words) word-bigram
    Jaccard >= threshold or word-set Jaccard >= 0.8."""
    norm = normalise_text(text)
    words = norm.split()
    grams = _ngrams(words, 2) or [tuple(words)]
    for i, prev in enumerate(earlier):
        pn = normalise_text(prev)
        if not pn:
            continue
        if pn == norm:
            return i
        pw = pn.split()
        if len(words) >= 4 and len(pw) >= 4 and (jaccard(grams, _ngrams(pw, 2)) >= threshold or jaccard(words, pw) >= 0.8):
            return i
    return None


def is_truncated(text: str, finish_reason: str | None = None) -> bool:
    """A turn that stops mid-sentence: it ends on a comma/colon/dash or a dangling function word, or the model
    hit its token limit and the cleaned text does not end a sentence."""
    t = text.rstrip()
    if not t:
        return False
    if finish_reason == "length" and t[-1] not in _TERMINAL:
        return True
    if t[-1] in ",;:-–—(":
        return True
    last = t.split()[-1].lower().strip(_QUOTES)
    return t[-1] not in _TERMINAL and last in _DANGLING


# ---- the gates: one ordered list, one shape -----------------------------------------------------------------------
@dataclass(frozen=True)
class GateContext:
    """What a gate sees besides the text: the turns before it, the word cap in force, how the model stopped, the
    language; for a dialogue gate (``scope="dialogue"``) every turn and the scenario's number of turns."""

    earlier: Sequence[str] = ()
    word_cap: int = 25
    finish_reason: str | None = None
    language: str = "en"
    texts: Sequence[str] = ()
    expected_turns: int | None = None
    prompt: str = ""  # the instructions of the call (a reply must not copy them)

    @cached_property
    def defects(self) -> DefectContext:
        """The same context as the defect catalogue sees it (built once per turn, shared by its classes)."""
        return DefectContext(earlier=tuple(self.earlier), prompt=self.prompt, word_cap=self.word_cap,
                             finish_reason=self.finish_reason, language=self.language)


@dataclass(frozen=True)
class Gate:
    """One quality gate: ``check(text, context)`` returns None (pass) or the reason it fails (may be "").
    ``scope``: ``turn`` (run on every turn, during generation and in the audit) or ``dialogue`` (the audit only,
    ``text`` is the whole dialogue). ``final``: when it fails, the later gates are not run on that turn."""

    name: str
    check: Callable[[str, GateContext], str | None]
    guidance: str = "Write one short, natural spoken line."
    scope: str = "turn"
    final: bool = False


def _empty(text: str, ctx: GateContext) -> str | None:
    return "" if not text.strip() or not any(ch.isalnum() for ch in text) else None


def _over_cap(text: str, ctx: GateContext) -> str | None:
    n = count_words(text)
    return f"{n} words > {ctx.word_cap}" if n > ctx.word_cap else None


def _role_tag(text: str, ctx: GateContext) -> str | None:
    m = _LEAKED_TAG.search(text)
    return m.group(0).strip() if m else None


def _script(text: str, ctx: GateContext) -> str | None:
    share = latin_share(text)
    return f"latin share {share:.2f}" if share < 0.95 else None


def _language(text: str, ctx: GateContext) -> str | None:
    if ctx.language != "en" or count_words(text) < 8:
        return None
    share = function_word_share(text)
    return f"function-word share {share:.2f}" if share < 0.1 else None


def _repetition_across(text: str, ctx: GateContext) -> str | None:
    j = repeats_earlier(text, ctx.earlier)
    return f"repeats turn {j}" if j is not None else None


def _truncated(text: str, ctx: GateContext) -> str | None:
    if not is_truncated(text, ctx.finish_reason):
        return None
    return "length" if ctx.finish_reason == "length" else "dangling end"


def _turn_count(text: str, ctx: GateContext) -> str | None:
    if ctx.expected_turns is None or len(ctx.texts) == ctx.expected_turns:
        return None
    return f"{len(ctx.texts)} != {ctx.expected_turns}"


def _dialogue_language(text: str, ctx: GateContext) -> str | None:
    if ctx.language != "en" or count_words(text) < 20:
        return None
    share = function_word_share(text)
    return f"function-word share {share:.2f}" if share < 0.15 else None


def _defect_gate(defect: Defect) -> Gate:
    """A class of the defect catalogue (:mod:`schemas.defects`) as a turn gate."""

    def check(text: str, ctx: GateContext) -> str | None:
        return defect.check(text, ctx.defects) or None

    return Gate(defect.name, check, defect.guidance.replace("{", "{{").replace("}", "}}"))


# a catalogue class that an older gate above already reports for the same turn is not reported again by the audit
_SAME_AS = {"empty": "empty_turn", "role_prefix": "leaked_role_tag", "meta_talk": "leaked_instruction",
            "turn_copy": "repetition_across_turns", "over_long": "over_word_cap", "charset": "wrong_script",
            "language": "wrong_language", "truncated": "truncated_turn"}


# THE list: in-generation retries stop at the first turn gate that fails, the audit records every failure; a new
# gate (e.g. a defect of the catalogue) is one more entry, placed where its check should run
GATES: list[Gate] = [
    Gate("turn_count", _turn_count, scope="dialogue"),
    Gate("empty_turn", _empty, "Your reply was empty. Write one short spoken line.", final=True),
    Gate("over_word_cap", _over_cap, "Your reply was too long ({detail}). Say it in at most {cap} words."),
    Gate("leaked_instruction", lambda t, c: _leaked_instruction(t),
         "Write only what the speaker says; do not mention these instructions."),
    Gate("leaked_role_tag", _role_tag, "Write only the spoken words, without names, tags or labels."),
    Gate("wrong_script", _script, "Reply in English only."),
    Gate("wrong_language", _language, "Reply in plain English only."),
    Gate("repetition_within_turn", lambda t, c: is_repetitive(t),
         "Your reply repeated itself. Say something new, without repeating words or phrases."),
    Gate("repetition_across_turns", _repetition_across,
         "Your reply repeated an earlier line. Move the conversation forward with something new."),
    Gate("truncated_turn", _truncated, "Your reply stopped mid-sentence. Write one complete, short sentence."),
    # the defect catalogue runs last: what an utterance is (not speech, meta-talk, copies, charset, truncation)
    *(_defect_gate(d) for d in CATALOGUE),
    Gate("wrong_language", _dialogue_language, scope="dialogue"),
]
NEAR_DUPLICATE = "near_duplicate"  # the gate across dialogues of a run, decided after the shards (flows.dedup)
_GUIDANCE = {g.name: g.guidance for g in GATES if g.scope == "turn"}


@dataclass
class TurnProblem:
    gate: str
    detail: str = ""

    def guidance(self, word_cap: int) -> str:
        text = _GUIDANCE.get(self.gate, "Write one short, natural spoken line.")
        return text.format(detail=self.detail, cap=word_cap)


def failing_gates(text: str, ctx: GateContext, *, scope: str = "turn", first: bool = False):
    """(gate, reason) for every gate of ``scope`` that ``text`` fails, in list order (only the first with
    ``first``)."""
    seen: set[str] = set()
    for gate in GATES:
        if gate.scope != scope or _SAME_AS.get(gate.name) in seen:
            continue
        reason = gate.check(text, ctx)
        if reason is not None:
            seen.add(gate.name)
            yield gate.name, reason
            if first or gate.final:
                return


def turn_problem(text: str, earlier: Sequence[str], word_cap: int, *, finish_reason: str | None = None,
                 language: str = "en", hard_cap: int | None = None, prompt: str = "") -> TurnProblem | None:
    """The first turn gate a cleaned turn fails (None when it passes), used during generation to retry with
    guidance; the audit (:func:`check_dialogue`) runs the same gates in the same order."""
    ctx = GateContext(earlier=earlier, word_cap=hard_cap or word_cap, finish_reason=finish_reason, language=language,
                      prompt=prompt)
    for gate, reason in failing_gates(text, ctx, first=True):
        return TurnProblem(gate, reason)
    return None


# ---- dialogue audit --------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def gates(self) -> list[str]:
        return sorted({f.split(":", 1)[0] for f in self.failures})


def check_dialogue(texts: Sequence[str], word_cap: int, *, expected_turns: int | None = None,
                   finish_reasons: Sequence[str | None] | None = None, language: str = "en",
                   cap_slack: float = 1.0, passed_turns: int = 0) -> CheckResult:
    """Every gate of :data:`GATES` on every turn (every failure, not only the first), then the dialogue gates.
    A failure reads ``<gate>:<turn idx or ->[:reason]``. ``cap_slack`` multiplies the word cap (1.0: the
    generation cap is a hard bound).

    ``passed_turns``: the first turns that passed every turn gate during generation in this process (same gates,
    same earlier turns, a cap no looser, the call's own prompt): a turn that passes every gate there passes every
    gate here, so only the rest and the dialogue gates run. Stored dialogues (resume, another catalogue version)
    are checked in full."""
    res = CheckResult()
    hard_cap = max(1, int(word_cap * cap_slack))
    for i, text in enumerate(texts):
        if i < passed_turns:
            continue
        fr = finish_reasons[i] if finish_reasons and i < len(finish_reasons) else None
        ctx = GateContext(earlier=texts[:i], word_cap=hard_cap, finish_reason=fr, language=language)
        for gate, reason in failing_gates(text, ctx):
            res.failures.append(f"{gate}:{i}" + (f":{reason}" if reason else ""))
    ctx = GateContext(word_cap=hard_cap, language=language, texts=texts, expected_turns=expected_turns)
    for gate, reason in failing_gates(" ".join(texts), ctx, scope="dialogue"):
        res.failures.append(f"{gate}:-" + (f":{reason}" if reason else ""))
    return res

