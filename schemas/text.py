"""Text helpers with one definition each: word count, normalised text and the dialogue text hash.

Every stage (generation checks, gates, publish, report, trainer) counts words and hashes dialogue text through
these functions; the release's ``text_hash`` column is the warehouse's.
"""

from __future__ import annotations

import hashlib
import re

import pyarrow.compute as pc

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def count_words(text: str) -> int:
    """Words of a turn: runs of letters/digits, contractions kept whole (``I'll`` = 1), punctuation ignored."""
    return len(_WORD.findall(text or ""))


# count_words for a whole Arrow column (RE2, vectorised): the same rule — \p{L}\p{N} is str.isalnum(), which is
# Python's \w without "_"; tests/test_text_normalise.py holds the two to the same counts on mixed scripts
WORD_RE2 = r"[\p{L}\p{N}]+(?:['’][\p{L}\p{N}]+)*"


def count_words_column(texts) -> list[int]:
    """``count_words`` of every text of an Arrow string array or chunked array (null counts 0)."""
    return pc.fill_null(pc.count_substring_regex(texts, WORD_RE2), 0).to_pylist()


_NOT_ALNUM = re.compile(r"[\W_]+")  # \w is str.isalnum() plus "_"


def normalise_text(text: str) -> str:
    """Lower-cased alphanumeric runs joined by single spaces: each character lowered on its own, everything else
    a separator."""
    if "\u03a3" in text:  # capital sigma: str.lower() of a whole word gives a final sigma, one character's does not
        return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())
    return " ".join(_NOT_ALNUM.sub(" ", text).lower().split())


def text_hash(texts: list[str]) -> str:
    """Hash of the normalised text of a dialogue (case, punctuation and spacing ignored)."""
    return hashlib.sha256("\n".join(normalise_text(t) for t in texts).encode()).hexdigest()[:20]
