"""Text helpers with one definition each: word count, normalised text and the dialogue text hash.

Every stage (generation checks, gates, publish, report, trainer) counts words and hashes dialogue text through
these functions; the release's ``text_hash`` column is the warehouse's.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def count_words(text: str) -> int:
    """Words of a turn: runs of letters/digits, contractions kept whole (``I'll`` = 1), punctuation ignored."""
    return len(_WORD.findall(text or ""))


# count_words's rule restricted to ASCII, for RE2 (pyarrow.compute): on ASCII text Python's [^\W_] is exactly
# [A-Za-z0-9] and the only apostrophe is "'". Texts with any other character take count_words itself (RE2's
# Unicode tables are not Python's), so the two paths give the same counts by construction.
_WORD_ASCII_RE2 = r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*"


def count_words_column(texts) -> list[int]:
    """``count_words`` of every text of an Arrow string array or chunked array (null counts 0), vectorised for the
    ASCII texts (most of an English release)."""
    texts = pc.fill_null(texts, "")
    counts = pc.count_substring_regex(texts, _WORD_ASCII_RE2).to_pylist()
    other = pc.indices_nonzero(pc.invert(pc.string_is_ascii(texts))).to_pylist()
    for i, text in zip(other, pc.take(texts, pa.array(other, pa.int64())).to_pylist()):
        counts[i] = count_words(text)
    return counts


_NOT_ALNUM = re.compile(r"[\W_]+")  # \w is str.isalnum() plus "_"


def normalise_text(text: str) -> str:
    """Lower-cased alphanumeric runs joined by single spaces: each character lowered on its own, everything else
    a separator."""
    # the turn gates normalise every earlier turn of a dialogue again for each new turn (and in several gates): turns
    # (short texts) are remembered; long ones (prompts, whole dialogues) are not, to keep the cache small
    return _normalise_turn(text) if len(text) <= 400 else _normalise(text)


@lru_cache(maxsize=4096)
def _normalise_turn(text: str) -> str:
    return _normalise(text)


def _normalise(text: str) -> str:
    if "\u03a3" in text:  # capital sigma: str.lower() of a whole word gives a final sigma, one character's does not
        return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())
    return " ".join(_NOT_ALNUM.sub(" ", text).lower().split())


def text_hash(texts: list[str]) -> str:
    """Hash of the normalised text of a dialogue (case, punctuation and spacing ignored)."""
    return hashlib.sha256("\n".join(normalise_text(t) for t in texts).encode()).hexdigest()[:20]
