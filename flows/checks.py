"""Cleaning of generated turns and the deterministic quality gates that run before the LLM judges.

Tiny models cannot judge (they score a good and a nonsense dialogue alike), so these gates are what keeps the
embedded default honest. They do not depend on model size and every rejection names its gate:
``<gate>:<turn idx>[:detail]`` in ``Judgement.failures`` (kind ``checks``).

Gates (``GATES``): ``empty_turn``, ``truncated_turn``, ``repetition_within_turn``, ``repetition_across_turns``,
``over_word_cap``, ``wrong_script``, ``wrong_language``, ``leaked_role_tag``, ``leaked_instruction``,
``near_duplicate`` (across dialogues, see :func:`near_duplicates`), ``turn_count`` (a dialogue that has not
the scenario's number of turns).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from schemas.defects import DefectContext, first_defect, guidance as defect_guidance, turn_defects
from schemas.records import normalise_text

CLEANING_VERSION = "clean-v1"

GATES = (
    "empty_turn", "truncated_turn", "repetition_within_turn", "repetition_across_turns", "over_word_cap",
    "wrong_script", "wrong_language", "leaked_role_tag", "leaked_instruction", "near_duplicate", "turn_count",
)

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


def count_words(text: str) -> int:
    return len(text.split())


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
_FUNCTION_WORDS_EN = frozenset(
    "a an the and or but if so of to in on at for with from by about as is are was were be been am i you he she "
    "it we they me him her us them my your his its our their this that these those what which who how why when "
    "where not no do does did have has had will would can could should just really very too there here all some "
    "any more most much many up out than then now oh yes yeah well like get got go going know think love feel "
    "let's it's i'm that's don't can't you're we're isn't".split()
)
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


def latin_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    latin = sum(1 for ch in letters if ch.isascii() or "LATIN" in unicodedata.name(ch, ""))
    return latin / len(letters)


def function_word_share(text: str) -> float:
    words = [w.strip(".,!?;:\"'()…-").lower() for w in text.split()]
    words = [w for w in words if w]
    if not words:
        return 0.0
    return sum(1 for w in words if w in _FUNCTION_WORDS_EN) / len(words)


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


@dataclass
class TurnProblem:
    gate: str
    detail: str = ""

    def guidance(self, word_cap: int) -> str:
        return {
            "empty_turn": "Your reply was empty. Write one short spoken line.",
            "over_word_cap": f"Your reply was too long ({self.detail}). Say it in at most {word_cap} words.",
            "repetition_within_turn": "Your reply repeated itself. Say something new, without repeating words or phrases.",
            "repetition_across_turns": "Your reply repeated an earlier line. Move the conversation forward with something new.",
            "truncated_turn": "Your reply stopped mid-sentence. Write one complete, short sentence.",
            "wrong_script": "Reply in English only.",
            "wrong_language": "Reply in plain English only.",
            "leaked_role_tag": "Write only the spoken words, without names, tags or labels.",
            "leaked_instruction": "Write only what the speaker says; do not mention these instructions.",
        }.get(self.gate) or defect_guidance(self.gate)


def turn_problem(text: str, earlier: Sequence[str], word_cap: int, *, finish_reason: str | None = None,
                 language: str = "en", hard_cap: int | None = None, prompt: str = "") -> TurnProblem | None:
    """The first problem of a cleaned turn (None when it passes): the same gates as :func:`check_dialogue`,
    used during generation to retry with guidance. The defect catalogue (:mod:`schemas.defects`) runs last."""
    if not text.strip() or not any(ch.isalnum() for ch in text):
        return TurnProblem("empty_turn")
    n = count_words(text)
    cap = hard_cap or word_cap
    if n > cap:
        return TurnProblem("over_word_cap", f"{n} words > {cap}")
    if _leaked_instruction(text):
        return TurnProblem("leaked_instruction", _leaked_instruction(text))
    if _LEAKED_TAG.search(text):
        return TurnProblem("leaked_role_tag", _LEAKED_TAG.search(text).group(0).strip())
    if latin_share(text) < 0.95:
        return TurnProblem("wrong_script", f"latin share {latin_share(text):.2f}")
    if language == "en" and n >= 8 and function_word_share(text) < 0.1:
        return TurnProblem("wrong_language", f"function-word share {function_word_share(text):.2f}")
    rep = is_repetitive(text)
    if rep:
        return TurnProblem("repetition_within_turn", rep)
    j = repeats_earlier(text, earlier)
    if j is not None:
        return TurnProblem("repetition_across_turns", f"repeats turn {j}")
    if is_truncated(text, finish_reason):
        return TurnProblem("truncated_turn", "length" if finish_reason == "length" else "dangling end")
    defect = first_defect(text, DefectContext(earlier=tuple(earlier), prompt=prompt, word_cap=cap,
                                              finish_reason=finish_reason, language=language))
    return TurnProblem(*defect) if defect is not None else None


# ---- dialogue gates --------------------------------------------------------------------------------------------
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
                   cap_slack: float = 1.0) -> CheckResult:
    """Every per-turn gate on every turn (not only the first problem), plus the turn count and a whole-dialogue
    language check. ``cap_slack`` multiplies the word cap (1.0: the generation cap is a hard bound)."""
    res = CheckResult()
    if expected_turns is not None and len(texts) != expected_turns:
        res.failures.append(f"turn_count:-:{len(texts)} != {expected_turns}")
    hard_cap = max(1, int(word_cap * cap_slack))
    for i, text in enumerate(texts):
        fr = finish_reasons[i] if finish_reasons and i < len(finish_reasons) else None
        found = list(_all_turn_problems(text, texts[:i], hard_cap, fr, language))
        seen = {g for g, _ in found}
        found += [(g, d) for g, d in turn_defects(text, DefectContext(earlier=tuple(texts[:i]), word_cap=hard_cap,
                                                                      finish_reason=fr, language=language))
                  if _SAME_AS.get(g) not in seen and not (g == "empty" and "empty_turn" in seen)]
        for gate, detail in found:
            res.failures.append(f"{gate}:{i}" + (f":{detail}" if detail else ""))
    words = " ".join(texts)
    if language == "en" and count_words(words) >= 20 and function_word_share(words) < 0.15:
        res.failures.append(f"wrong_language:-:function-word share {function_word_share(words):.2f}")
    return res


# a defect class of the catalogue that an older gate above already reports for the same turn is not repeated
_SAME_AS = {"role_prefix": "leaked_role_tag", "meta_talk": "leaked_instruction", "turn_copy": "repetition_across_turns",
            "over_long": "over_word_cap", "charset": "wrong_script", "language": "wrong_language",
            "truncated": "truncated_turn"}


def _all_turn_problems(text: str, earlier: Sequence[str], cap: int, finish_reason: str | None, language: str):
    if not text.strip() or not any(ch.isalnum() for ch in text):
        yield "empty_turn", ""
        return
    n = count_words(text)
    if n > cap:
        yield "over_word_cap", f"{n}>{cap}"
    if _LEAKED_TAG.search(text):
        yield "leaked_role_tag", _LEAKED_TAG.search(text).group(0).strip()
    if _leaked_instruction(text):
        yield "leaked_instruction", _leaked_instruction(text)
    if latin_share(text) < 0.95:
        yield "wrong_script", f"{latin_share(text):.2f}"
    if language == "en" and n >= 8 and function_word_share(text) < 0.1:
        yield "wrong_language", f"{function_word_share(text):.2f}"
    rep = is_repetitive(text)
    if rep:
        yield "repetition_within_turn", rep
    j = repeats_earlier(text, earlier)
    if j is not None:
        yield "repetition_across_turns", f"repeats {j}"
    if is_truncated(text, finish_reason):
        yield "truncated_turn", ""


# ---- near-duplicate dialogues (MinHash + LSH, verified by exact Jaccard) ---------------------------------------
_MERSENNE = np.uint64((1 << 61) - 1)


def _shingles(texts: Sequence[str], k: int = 3) -> set[str]:
    words = normalise_text(" ".join(texts)).split()
    if len(words) < k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def near_duplicates(dialogues: Sequence[tuple[str, Sequence[str]]], threshold: float = 0.6,
                    num_perm: int = 64, bands: int = 16, seed: int = 0) -> dict[str, tuple[str, float]]:
    """``{dialogue_id: (earlier_id, jaccard)}`` for every dialogue whose word-3-gram Jaccard with an earlier one
    (in the given order) is >= ``threshold``. Order decides which copy is kept, so pass a deterministic order."""
    import zlib

    rows = bands and num_perm // bands
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    b = rng.integers(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    shingle_sets = []
    buckets: dict[tuple, list[int]] = {}
    dup: dict[str, tuple[str, float]] = {}
    for pos, (did, texts) in enumerate(dialogues):
        sh = _shingles(texts)
        shingle_sets.append(sh)
        if not sh:
            continue
        x = np.array([zlib.crc32(s.encode()) for s in sh], dtype=np.uint64)
        # (a*x + b) mod p with x < 2^32 and a < 2^61 would overflow 64 bits; fold a to 32 bits for the product
        hv = ((x[:, None] * (a[None, :] & np.uint64(0xFFFFFFFF)) + b[None, :]) % _MERSENNE).min(axis=0)
        candidates: set[int] = set()
        keys = [(bi, hv[bi * rows : (bi + 1) * rows].tobytes()) for bi in range(bands)]
        for key in keys:
            candidates.update(buckets.get(key, ()))
        best: tuple[str, float] | None = None
        for c in sorted(candidates):
            j = jaccard(sh, shingle_sets[c])
            if j >= threshold and (best is None or j > best[1]):
                best = (dialogues[c][0], round(j, 3))
        if best is not None:
            dup[did] = best
            continue  # a duplicate does not become a reference for later ones
        for key in keys:
            buckets.setdefault(key, []).append(pos)
    return dup
