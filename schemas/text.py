"""Text helpers with one definition each: word count, normalised text and the dialogue text hash.

Every stage (generation checks, gates, publish, report, trainer) counts words and hashes dialogue text through
these functions; the release's ``text_hash`` column is the warehouse's.
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def count_words(text: str) -> int:
    """Words of a turn: runs of letters/digits, contractions kept whole (``I'll`` = 1), punctuation ignored."""
    return len(_WORD.findall(text or ""))


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
