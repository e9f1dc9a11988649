"""What an utterance is: the catalogue of defects a spoken line must not have, each with a deterministic check.

A turn of a spoken dialogue is words a person says out loud. Generated (and sometimes imported) text breaks that in
a small number of recurring ways; each way is one *defect class* below, checked by one pure function
``(text, context) -> reason | None`` (``None``: the turn does not have this defect). :data:`CATALOGUE` lists them
in the order they are tried; :func:`turn_defects` runs them all, :func:`first_defect` stops at the first, and
:func:`audit_dialogue` runs them on every turn of a dialogue (what publish and ``emoforge gates check`` call).
docs/gates.md documents every class with examples and known false positives.

No model and no project import outside ``schemas``: the same verdict at generation time (retry with guidance), at
publish and in ``emoforge gates check``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Sequence

from schemas.text import count_words, normalise_text

CATALOGUE_VERSION = "defects-v2"  # v2: emoji and pictographs are a charset defect


@dataclass(frozen=True)
class DefectContext:
    """What a check may know about a turn besides its text.

    ``earlier``: the dialogue's earlier turns; ``prompt``: the instructions the model was given (system + task
    text; the conversation history inside it is discounted); ``word_cap``: the hard cap on words (None: no cap);
    ``finish_reason``: the server's (``length`` = cut at max_tokens); ``language``: expected language (``en``
    enables the English checks); ``punctuated``: the source ends its sentences with punctuation (true of LLM
    output and edited corpora like DailyDialog; false of chat logs like ESConv), so a missing end mark is a cut;
    ``emotions``: emotion names whose bracketed use (``[Happy]``) is a tag, not speech."""

    earlier: Sequence[str] = ()
    prompt: str = ""
    word_cap: int | None = None
    finish_reason: str | None = None
    language: str = "en"
    punctuated: bool = True
    emotions: Sequence[str] = field(default_factory=tuple)


Check = Callable[[str, DefectContext], "str | None"]

# ---- not speech ------------------------------------------------------------------------------------------------
_MARKUP = re.compile(
    r"[{}`]|</?[A-Za-z][\w-]*(?:\s[^<>]{0,80})?/?>|\"\w[\w ]{0,30}\"\s*:|&(?:[a-z]{2,6}|#\d{2,5});"
    r"|^\s*#{1,6}\s|^\s*[-*+]\s|\|\s*\w[^|]*\|\s*$|^\s*\[\s*[\"{\d]|:\s*(?:null|true|false)\b",
    re.M,
)
_URL = re.compile(r"\bhttps?://\S+|\bwww\s?\.\s?[\w-]+\.\w|\b[\w-]+\.(?:com|org|net|io|ai|gov|edu)/\S*", re.I)
_SPECIAL_TOKEN = re.compile(
    r"<\|[^|<>]{0,40}\|>|</?s>|<(?:start|end)_of_turn>|<(?:eos|bos|pad|unk|mask)>|\[/?INST\]|<</?SYS>>|\[(?:CLS|SEP|PAD|MASK)\]"
    r"|<\|?endoftext\|?>|\bim_(?:start|end)\b|\bend_of_turn\b",
    re.I,
)
_ROLE_NAMES = (
    r"(?:speaker\s*[a-d1-4]|person\s*[a-d1-4]|user|assistant|system|human|bot|ai|model|narrator|interviewer"
    r"|response|reply|answer|output|input|customer|agent|[AB])"
)
_ROLE_PREFIX = re.compile(
    rf"(?:^|\n|(?<=[.!?\"”]\s))\s*(?:\*\*|__)?\s*(?i:{_ROLE_NAMES})\s*(?:\*\*|__)?\s*(?:\([^)]{{0,30}}\)\s*)?:{{1,2}}(?!\d)",
)
_STAGE_VERBS = (
    r"laugh|chuckl|giggl|sigh|smil|grin|smirk|paus|nod|shrug|cr(?:y|ies|ying)|sob|gasp|whisper|shout|yell|groan|frown"
    r"|wink|blush|hesitat|clear(?:s|ing)? (?:his|her|their|my) throat|look(?:s|ing)? |lean|sniff|scoff|rolls? |"
    r"excited(?:ly)?|angr(?:y|ily)|sad(?:ly)?|happ(?:y|ily)|nervous(?:ly)?|sarcastic(?:ally)?|cheerful(?:ly)?|"
    r"enthusiastic(?:ally)?|hand(?:s|ing) |walk|enter|exit|turn(?:s|ing)? to|tone|beat|silence|in a \w+ (?:voice|tone)"
)
_STAGE_DIRECTION = re.compile(
    rf"\*[^*\n]{{1,60}}\*|[\(\[]\s*(?:[a-z]+ly\s+)?(?i:{_STAGE_VERBS})[^\)\]\n]{{0,50}}[\)\]]|[\(\[]\s*[A-Z][a-z]+ (?:[a-z]+ ){{0,6}}[a-z]+\s*[\)\]]",
)


def not_speech_markup(text: str, ctx: DefectContext) -> str | None:
    """JSON, code or markup fragments: braces, backticks, HTML/XML tags, ``"key":``, markdown headings and
    bullets, JSON literals."""
    m = _MARKUP.search(text)
    return f"markup {m.group(0).strip()[:30]!r}" if m else None


def not_speech_url(text: str, ctx: DefectContext) -> str | None:
    m = _URL.search(text)
    return f"url {m.group(0)[:40]!r}" if m else None


def not_speech_special_token(text: str, ctx: DefectContext) -> str | None:
    m = _SPECIAL_TOKEN.search(text)
    return f"special token {m.group(0)!r}" if m else None


def not_speech_role_prefix(text: str, ctx: DefectContext) -> str | None:
    """A speaker or role label (``A:``, ``User:``, ``Speaker 2:``, ``**Assistant**:``) at the start of the turn
    or of a line/sentence inside it (the model wrote the other speaker's turn too)."""
    m = _ROLE_PREFIX.search(text)
    return f"role prefix {m.group(0).strip()!r}" if m else None


def not_speech_stage_direction(text: str, ctx: DefectContext) -> str | None:
    """Actions and tone notes instead of words: ``*smiles*``, ``(laughs)``, ``[sighs]``, ``(Handing her a
    menu)``, or an emotion tag like ``[Happy]``."""
    m = _STAGE_DIRECTION.search(text)
    if m:
        return f"stage direction {m.group(0)[:40]!r}"
    for e in ctx.emotions:
        tag = re.search(rf"[\(\[]\s*{re.escape(e)}\s*[\)\]]", text, re.I)
        if tag:
            return f"emotion tag {tag.group(0)!r}"
    return None


# ---- instruction echo and meta-talk ----------------------------------------------------------------------------
_META = re.compile(
    r"\bas an ai\b|\bi(?:'m| am) an ai\b|\b(?:an? |the )?(?:ai |large )?language model\b|\bas an? (?:helpful )?assistant\b"
    r"|^\W*(?:sure|certainly|okay|ok|of course)?[!,.]?\s*here(?:'s| is| are) (?:my|the|a|an|your|one|some) (?:\w+ ){0,3}"
    r"(?:line|lines|reply|replies|response|responses|answer|turn|dialogue|conversation|sentence|version|continuation|example)s?\b"
    r"|\bmy (?:next|first|last|following) (?:line|reply|turn|response|message)\b|\bmy (?:response|reply) to you\b|\bmy (?:response|reply|answer)(?: is| would be)?\s*[:\"\u201c]"
    r"|\brespond(?:ing)? with\b|\b(?:the|this) (?:user|assistant)(?:'s)?(?:\s+(?:wants?|asked|asks|says|said|is|was|needs?|requested|prompt|message|input|question|request)\b|\s*[.,!?;:)]|$)|\btarget emotion\b|\bemotion\s*:\s*\w+|\byour feeling\s*:"
    r"|\bword (?:cap|limit|count)\b|\b(?:at most|no more than|fewer than|under|maximum of) \d+ words\b|\bconversation so far\b"
    r"|\bnext line\b|\bwrite (?:the|your|a|my) (?:next )?(?:line|reply|turn|response)\b|\bin character\b|\bstay in role\b"
    r"|\bi (?:cannot|can't|am unable to) (?:assist with|help with (?:that|this) request|comply with|fulfil|fulfill)\b|\blet the words show\b"
    r"|\b(?:one|two|1|2) (?:or (?:two|three|2|3) )?sentences?, at most\b|\bspoken conversation\b|\bplain english\b"
    r"|^\W*you are (?:a|an) (?:\w+ ){0,3}(?:person (?:talking|speaking|chatting|in a)|speaker|character|assistant|participant|student or worker)\b"
    r"|^\W*you are (?:now |playing |role-?playing )",
    re.I | re.M,
)
_SPEAKER_AS_PERSON = re.compile(
    r"\((?:[AB]|[Ss]peaker [AB12]|[Pp]erson [AB12])\)|(?:^|[.!?]\s+|\b(?:and|but|said|says|told|asked) )[AB] (?:is|was|says|said|asks|asked|"
    r"has|had|replies|replied|responds|responded|wants|wanted|thinks|feels|felt|looks|smiles|laughs|goes|went)\b"
    r"|^\W*[Yy]ou are (?:a|an) (?:\w+ ){0,3}\w+\s*\(|^\W*(?:[Tt]his|[Tt]he) conversation (?:was|is|ended|will|started|can)\b"
    r"|\b[Tt]his is (?:another|a|the first|the next|our) (?:conversation|dialogue)\b|\b(?:rephrased|rewritten|paraphrased) as\b"
    r"|\bshort dialogue\b|\beach (?:message|line|turn) (?:is|of|in)\b")
_FRAMING = re.compile(r"\b(?:talking|speaking|chatting|conversation) (?:with|to) [AB]\b(?![\w'])|\b(?:person|speaker) [AB]\b(?![\w'])|\b[Yy]ou are [AB]\b(?![\w'])|\b[AB]'s (?:next )?(?:line|turn|reply)\b")


def meta_talk(text: str, ctx: DefectContext) -> str | None:
    """Instruction echo and talk about the task instead of the conversation: "You are a person talking with B",
    the speakers' labels used as people ("A is going upstairs", "Bethany (A) says"), "This conversation was about",
    "As an AI", "Here is my reply", "My next line", "My response to you is", "respond with", "the user",
    the word cap or target emotion repeated back."""
    m = _META.search(text) or _FRAMING.search(text) or _SPEAKER_AS_PERSON.search(text)
    return f"meta-talk {m.group(0).strip()[:40]!r}" if m else None


# ---- copies ----------------------------------------------------------------------------------------------------
def _grams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _contains(words: Sequence[str], part: Sequence[str]) -> bool:
    n = len(part)
    return any(list(words[k:k + n]) == list(part) for k in range(len(words) - n + 1))


def copy_of_earlier_turn(text: str, ctx: DefectContext) -> str | None:
    """The same line as an earlier turn (normalised; a line under 3 words only when it repeats one of the two
    turns just before: "OK." twice in a long talk is normal), an earlier line of 3+ words with one or two words
    added, or nearly (both 4+ words: word-bigram Jaccard >= 0.7 or word-set Jaccard >= 0.85)."""
    norm = normalise_text(text)
    words = norm.split()
    n = len(ctx.earlier)
    for i, prev in enumerate(ctx.earlier):
        pn = normalise_text(prev)
        if not pn:
            continue
        if pn == norm and (len(words) >= 3 or i >= n - 2):
            return f"copies turn {i}"
        pw = pn.split()
        if len(pw) >= 3 and 0 < len(words) - len(pw) <= 2 and _contains(words, pw):
            return f"repeats turn {i} with {len(words) - len(pw)} word(s) added"
        if len(words) >= 4 and len(pw) >= 4:
            jb = _jaccard(_grams(words, 2), _grams(pw, 2))
            if jb >= 0.7 or _jaccard(set(words), set(pw)) >= 0.85:
                return f"nearly copies turn {i} (bigram jaccard {jb:.2f})"
    return None


def copy_of_prompt(text: str, ctx: DefectContext) -> str | None:
    """Text lifted from the instructions: a 6-word run found in the prompt but not in the conversation, or most
    of a short turn's word-3-grams taken from it."""
    if not ctx.prompt:
        return None
    words = normalise_text(text).split()
    if len(words) < 3:
        return None
    # an n-gram of normalised words is in a normalised text iff " <its words> " is in " <the text> " (the words hold
    # no spaces): the turn's few n-grams are looked up instead of building the prompt's and history's n-gram sets
    prompt = f" {normalise_text(ctx.prompt)} "
    history = [f" {normalise_text(t)} " for t in ctx.earlier]
    for n in (6, 3):
        mine = _grams(words, n)
        hit = {g for g in mine if _in_text(g, prompt) and not any(_in_text(g, h) for h in history)}
        if n == 6 and hit:
            return f"copies the prompt: {' '.join(sorted(hit)[0])!r}"
        if n == 3 and len(words) >= 4 and mine and len(hit) / len(mine) >= 0.6:
            return f"{len(hit)} of {len(mine)} word triples from the prompt"
    return None


def _in_text(gram: tuple[str, ...], padded: str) -> bool:
    """Whether the word n-gram occurs in ``padded`` (normalised text with a space at each end)."""
    return f" {' '.join(gram)} " in padded


# ---- truncation ------------------------------------------------------------------------------------------------
_TERMINAL = ".!?…\"'”’)»"
_DANGLING = frozenset(
    "a an the and or but to of with for from in on at by as that which who whose because so if than my your our "
    "their his her its is are was were be been am i we they you he she not no nor into onto about like when while "
    "where whether then very too more most less such this these those some any every each would could should will "
    "can may might must shall do does did have has had".split()
)
_DANGLING_STRICT = frozenset("a an the and or but of with my your our their his its because than".split())
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]|[:;]-?[()DPp3]|<3|\bxd\b|\blol\b|\bhaha\w*\b", re.I)


def truncated(text: str, ctx: DefectContext) -> str | None:
    """Stops mid-sentence or mid-word: the server cut it (``finish_reason: length``) without a sentence end, it
    ends on a word that cannot end a sentence ("the", "and", "with"), or, in a punctuated source, it ends on a
    comma/colon/dash, on a word like "to"/"is", or lacks an end mark (a cut mid-word leaves no full stop). Chat
    logs (``punctuated=False``) only get the first two rules."""
    t = text.rstrip()
    if not t:
        return None
    last_char = t[-1]
    if ctx.finish_reason == "length" and last_char not in _TERMINAL:
        return "cut at the token limit"
    last = re.sub(r"[^\w']", "", t.split()[-1].lower())
    if last_char not in _TERMINAL and last in _DANGLING_STRICT:
        return f"ends on {last!r}"
    if not ctx.punctuated:
        return None
    if last_char in ",;:-–—(/&+=":
        return f"ends on {last_char!r}"
    if last_char not in _TERMINAL and last in _DANGLING:
        return f"ends on {last!r}"
    if last_char not in _TERMINAL and not _EMOJI.search(t[-4:]):
        return "no sentence end"
    return None


# ---- language and charset --------------------------------------------------------------------------------------
_FUNCTION_WORDS_EN = frozenset(
    "a an the and or but if so of to in on at for with from by about as is are was were be been am i you he she "
    "it we they me him her us them my your his its our their this that these those what which who how why when "
    "where not no do does did have has had will would can could should just really very too there here all some "
    "any more most much many up out than then now oh yes yeah well like get got go going know think love feel "
    "let's it's i'm that's don't can't you're we're isn't ok okay please thanks sure".split()
)
# the most frequent function words of languages a small model drifts into; words that are also English are removed
_FOREIGN_FUNCTION_WORDS = {
    "es": "el la los las de del que y en un una es por para con se su al lo como más pero sus ya este sí porque esta "
          "entre cuando muy sin sobre también hasta hay donde quien desde todo nos durante todos uno les ni otros ese "
          "eso ellos esto mí antes algunos qué unos yo otro otras otra él tanto esa estos mucho nada cual poco ella "
          "estar estas algo nosotros mi mis tú te ti tu tus sé",
    "fr": "le la les de des du un une et est en que qui dans pour pas ne sur au aux avec ce cette il elle nous vous ils "
          "je tu on mais ou où son sa ses leur plus se par être avoir fait très tout bien",
    "de": "der die das und ist nicht ein eine zu den von mit sich des auf für im dem ich du er sie es wir ihr aber auch "
          "noch nach wie wenn weil oder kein keine habe haben hat wann",
    "it": "il lo la gli le di del della che e è un una per non con su da mi ti ci si ma anche come più sono ho hai "
          "siamo questo quello se",
    "pt": "o os as de do da dos das que e é um uma para com não em no na se por mais mas como eu você ele ela nós eles "
          "muito também já",
    "id": "yang dan di ke dari ini itu dengan untuk tidak ada saya kamu kita kami akan bisa apakah atau juga sudah "
          "belum dia mereka",
    "nl": "de het een en van ik je jij hij zij wij niet dat die op te met voor maar ook nog wel",
}
_NOT_FOREIGN = _FUNCTION_WORDS_EN | frozenset("die come son sin plus men hat be me he have con son ten dan ada".split())
_FOREIGN_SETS = {lang: frozenset(words.split()) - _NOT_FOREIGN for lang, words in _FOREIGN_FUNCTION_WORDS.items()}
_MOJIBAKE = re.compile(r"â€|Ã[\x80-\xbf]|Â[\xa0-\xbf]|\ufffd|ï»¿")
# emoji and pictographs (a voice cannot say them; the tiny models write them, e.g. a turn that is only emoji):
# the pictograph, dingbat, symbol, flag and emoji planes
_PICTOGRAPH = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # the ASCII characters of category Cc, less \t and \n


_LETTER_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def latin_share(text: str) -> float:
    if text.isascii():  # every ASCII letter is Latin (and no letters at all is 1.0 too)
        return 1.0
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for ch in letters if ch.isascii() or "LATIN" in unicodedata.name(ch, "")) / len(letters)


def _letter_words(text: str) -> list[str]:
    return [w.lower() for w in _LETTER_WORD.findall(text)]


def _english_share(words: Sequence[str]) -> float:
    return sum(1 for w in words if w.replace("’", "'") in _FUNCTION_WORDS_EN) / len(words) if words else 0.0


def function_word_share(text: str) -> float:
    return _english_share(_letter_words(text))


def charset_off(text: str, ctx: DefectContext) -> str | None:
    """Characters a speaker cannot say: control characters, the replacement character or mojibake, emoji and
    pictographs, or (for a Latin-script language) two or more letters of another script."""
    if text.isascii():  # mojibake, pictographs and other scripts are all non-ASCII: only control characters remain
        m = _ASCII_CONTROL.search(text)
        return f"control character U+{ord(m.group(0)):04X}" if m else None
    ctrl = [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") and ch not in "\n\t"]
    if ctrl:
        return f"control character U+{ord(ctrl[0]):04X}"
    m = _MOJIBAKE.search(text)
    if m:
        return f"mojibake {m.group(0)!r}"
    m = _PICTOGRAPH.search(text)
    if m:
        return f"emoji {m.group(0)} (U+{ord(m.group(0)):04X})"
    if ctx.language in ("en", "fr", "de", "es", "it", "pt", "nl", "id"):
        other = [ch for ch in text if ch.isalpha() and not (ch.isascii() or "LATIN" in unicodedata.name(ch, ""))]
        if len(other) >= 2:
            return f"{len(other)} letters of another script ({''.join(other[:6])})"
    return None


def language_off(text: str, ctx: DefectContext) -> str | None:
    """Not the expected language (English): 5+ words and more function words of another language (Spanish, French,
    German, Italian, Portuguese, Indonesian, Dutch) than of English, at least a quarter of the words; or 8+ words
    and under 10% English function words (gibberish)."""
    if ctx.language != "en":
        return None
    words = _letter_words(text)
    en = _english_share(words)  # function_word_share(text): the same words
    if len(words) >= 5:
        lang, share = max(((k, sum(1 for w in words if w in v) / len(words)) for k, v in _FOREIGN_SETS.items()),
                          key=lambda kv: kv[1])
        if share >= 0.25 and share > en:
            return f"{lang} function words {share:.0%} > english {en:.0%}"
    if count_words(text) < 8:
        return None
    return f"english function words {en:.0%}" if en < 0.1 else None


# ---- size ------------------------------------------------------------------------------------------------------
def empty(text: str, ctx: DefectContext) -> str | None:
    return "no words" if not any(ch.isalnum() for ch in text or "") else None


def over_long(text: str, ctx: DefectContext) -> str | None:
    n = count_words(text)
    return f"{n} words > cap {ctx.word_cap}" if ctx.word_cap and n > ctx.word_cap else None


# ---- the catalogue ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defect:
    name: str
    check: Check
    guidance: str  # what a retry asks the model to do instead


CATALOGUE: tuple[Defect, ...] = (
    Defect("empty", empty, "Your reply was empty. Write one short spoken line."),
    Defect("special_token", not_speech_special_token, "Write only the spoken words, no tokens or tags."),
    Defect("markup", not_speech_markup, "Write only the words the speaker says, as plain text: no JSON, code or markup."),
    Defect("url", not_speech_url, "Write only spoken words; no links or web addresses."),
    Defect("role_prefix", not_speech_role_prefix, "Write only your own spoken words, without any name or label before them, and do not write the other speaker's line."),
    Defect("stage_direction", not_speech_stage_direction, "Write only the words you say out loud: no actions, tone notes or emotion tags in brackets or asterisks."),
    Defect("meta_talk", meta_talk, "Speak as the person in the conversation; do not talk about the instructions, the task or yourself as an assistant."),
    Defect("prompt_copy", copy_of_prompt, "Do not repeat the instructions; say something new in your own words."),
    Defect("turn_copy", copy_of_earlier_turn, "Do not repeat an earlier line; move the conversation forward."),
    Defect("charset", charset_off, "Use plain English letters and punctuation only."),
    Defect("language", language_off, "Reply in plain English only."),
    Defect("over_long", over_long, "Your reply was too long; say it in fewer words."),
    Defect("truncated", truncated, "Your reply stopped mid-sentence. Write one complete, short sentence that ends with a full stop, question mark or exclamation mark."),
)
DEFECTS: dict[str, Defect] = {d.name: d for d in CATALOGUE}
DEFECT_NAMES: tuple[str, ...] = tuple(d.name for d in CATALOGUE)


def turn_defects(text: str, ctx: DefectContext | None = None) -> list[tuple[str, str]]:
    """Every defect of one turn, in catalogue order, as (class, reason). An empty turn has only ``empty``."""
    ctx = ctx or DefectContext()
    out: list[tuple[str, str]] = []
    for d in CATALOGUE:
        reason = d.check(text or "", ctx)
        if reason:
            out.append((d.name, reason))
            if d.name == "empty":
                break
    return out


def first_defect(text: str, ctx: DefectContext | None = None) -> tuple[str, str] | None:
    ctx = ctx or DefectContext()
    for d in CATALOGUE:
        reason = d.check(text or "", ctx)
        if reason:
            return d.name, reason
    return None


def audit_dialogue(texts: Sequence[str], context: DefectContext | None = None) -> list[tuple[int, str, str]]:
    """Every defect of every turn of a dialogue: ``[(turn idx, class, reason)]`` (empty: a clean dialogue).
    ``context`` gives the dialogue-wide settings; each turn's ``earlier`` is filled in here."""
    base = context or DefectContext()
    out: list[tuple[int, str, str]] = []
    for i, text in enumerate(texts):
        ctx = DefectContext(earlier=tuple(texts[:i]), prompt=base.prompt, word_cap=base.word_cap,
                            finish_reason=None, language=base.language, punctuated=base.punctuated,
                            emotions=base.emotions)
        out.extend((i, name, reason) for name, reason in turn_defects(text, ctx))
    return out


def guidance(name: str) -> str:
    d = DEFECTS.get(name)
    return d.guidance if d else "Write one short, natural spoken line."


__all__ = [
    "CATALOGUE", "CATALOGUE_VERSION", "DEFECTS", "DEFECT_NAMES", "Defect", "DefectContext", "audit_dialogue",
    "first_defect", "function_word_share", "guidance", "latin_share", "turn_defects",
]
