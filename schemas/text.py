"""Text helpers with one definition each: word count, normalised text and the dialogue text hash.

Every stage (generation checks, gates, publish, report, trainer) counts words and hashes dialogue text through
these functions; the release's ``text_hash`` column is the warehouse's.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def count_words(text: str) -> int:
    """Words of a turn: runs of letters/digits, contractions kept whole (``I'll`` = 1), punctuation ignored."""
    return len(_WORD.findall(text or ""))


# count_words's rule restricted to ASCII: on ASCII text Python's [^\W_] is exactly [A-Za-z0-9] and the only
# apostrophe is "'", so a text's words are its alphanumeric runs less the apostrophes that join two of them
# ("a'b'c" is one word, "a''b" two). Texts with any other character take count_words itself, so the two paths give
# the same counts by construction.
_CHUNK_TEXTS = 1 << 15  # texts classified at once: their scratch arrays stay in the CPU cache


def count_words_column(texts) -> list[int]:
    """``count_words`` of every text of an Arrow string array or chunked array (null counts 0), vectorised for the
    ASCII texts (most of an English release)."""
    texts = pc.fill_null(texts, "")
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    parts = [_ascii_counts(c.slice(i, _CHUNK_TEXTS)) for c in chunks for i in range(0, len(c), _CHUNK_TEXTS)]
    counts = np.concatenate(parts).tolist() if parts else []
    other = pc.indices_nonzero(pc.invert(pc.string_is_ascii(texts))).to_pylist()
    for i, text in zip(other, pc.take(texts, pa.array(other, pa.int64())).to_pylist()):
        counts[i] = count_words(text)
    return counts


def _ascii_counts(arr: pa.Array) -> np.ndarray:
    """Words of every text of ``arr`` (a string array without nulls) under the ASCII rule above, from its UTF-8
    buffer: +1 where an alphanumeric run starts, -1 where an apostrophe joins two runs, summed per text."""
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], width)[arr.offset:arr.offset + len(arr) + 1]
    counts = np.zeros(len(arr), dtype=np.int64)
    if not len(arr) or offsets[-1] == offsets[0]:
        return counts
    buf = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    offs = (offsets - offsets[0]).astype(np.int64)
    starts, ends = offs[:-1], offs[1:]
    nonempty = ends > starts
    alnum = ((buf | 32) - 97 < 26) | (buf - 48 < 10)  # [A-Za-z0-9] in uint8 arithmetic (what is below wraps)
    prev = np.empty_like(alnum)  # the previous character of the same text is alphanumeric
    prev[0] = False
    prev[1:] = alnum[:-1]
    prev[starts[nonempty]] = False
    nxt = np.empty_like(alnum)  # the next character of the same text is alphanumeric
    nxt[-1] = False
    nxt[:-1] = alnum[1:]
    nxt[ends[nonempty] - 1] = False
    score = (alnum & ~prev).view(np.int8)
    score -= (buf == ord("'")) & prev & nxt
    # consecutive non-empty texts are contiguous, so each sum runs exactly over one text's characters
    counts[nonempty] = np.add.reduceat(score, starts[nonempty], dtype=np.int64)
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
