"""Near-duplicate detection across dialogues in bounded memory: MinHash + LSH over word 3-grams, each candidate
verified by the Jaccard of the two dialogues' shingle sets.

:class:`NearDupIndex` takes dialogues one at a time, in the order that decides which copy is kept, and keeps per
dialogue only what the later ones need: its shingles as one sorted array of 32-bit hashes (about 4 bytes a word)
and one integer per LSH band in a dict. No text, no Python set of strings (a set of shingle strings costs about
100 bytes a word, which made the near-duplicate pass the largest per-dialogue memory of a build). The Jaccard of
two hashed sets equals that of the strings unless two different 3-grams of the two dialogues share a CRC-32
(about one pair in 4e9), which moves the figure by one shingle at most.
"""

from __future__ import annotations

import zlib
from typing import Iterable, Sequence

import numpy as np

from schemas.text import normalise_text

_MERSENNE = np.uint64((1 << 61) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)


def shingles(texts: Sequence[str], k: int = 3) -> set[str]:
    """The word ``k``-grams of a dialogue's normalised text (the text itself when shorter than ``k`` words)."""
    words = normalise_text(" ".join(texts)).split()
    if len(words) < k:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + k]) for i in range(len(words) - k + 1)}


def hashed_shingles(texts: Sequence[str], k: int = 3) -> np.ndarray:
    """The CRC-32 of every shingle, sorted and unique (uint32)."""
    sh = shingles(texts, k)
    return np.unique(np.fromiter((zlib.crc32(s.encode()) for s in sh), dtype=np.uint32, count=len(sh)))


def hashed_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sorted unique hash arrays."""
    if not len(a) and not len(b):
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class NearDupIndex:
    """Add dialogues in order; :meth:`add` returns ``(earlier_id, jaccard)`` when the dialogue nearly repeats an
    earlier one that was not itself a duplicate (the best such), else None and the dialogue becomes a reference."""

    def __init__(self, threshold: float = 0.6, num_perm: int = 64, bands: int = 16, seed: int = 0):
        self.threshold = threshold
        self.bands = bands
        self.rows = num_perm // bands
        rng = np.random.default_rng(seed)
        # (a*x + b) mod p with x < 2^32 and a < 2^61 would overflow 64 bits; a is folded to 32 bits for the product
        self._a = rng.integers(1, int(_MERSENNE), size=num_perm, dtype=np.uint64) & _LOW32
        self._b = rng.integers(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
        self._ids: list[str] = []
        self._sets: list[np.ndarray] = []
        self._buckets: dict[int, int | list[int]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def _band_keys(self, x: np.ndarray) -> list[int]:
        hv = ((x.astype(np.uint64)[:, None] * self._a[None, :] + self._b[None, :]) % _MERSENNE).min(axis=0)
        r = self.rows
        return [hash((bi, hv[bi * r : (bi + 1) * r].tobytes())) for bi in range(self.bands)]

    def add(self, did: str, texts: Sequence[str]) -> tuple[str, float] | None:
        x = hashed_shingles(texts)
        if not len(x):
            return None
        keys = self._band_keys(x)
        candidates: set[int] = set()
        for key in keys:
            hit = self._buckets.get(key)
            if hit is not None:
                candidates.update(hit if isinstance(hit, list) else (hit,))
        best: tuple[str, float] | None = None
        for c in sorted(candidates):
            j = hashed_jaccard(x, self._sets[c])
            if j >= self.threshold and (best is None or j > best[1]):
                best = (self._ids[c], round(j, 3))
        if best is not None:
            return best  # a duplicate does not become a reference for later ones
        pos = len(self._ids)
        self._ids.append(did)
        self._sets.append(x)
        for key in keys:
            hit = self._buckets.get(key)
            if hit is None:
                self._buckets[key] = pos
            elif isinstance(hit, list):
                hit.append(pos)
            else:
                self._buckets[key] = [hit, pos]
        return None


def near_duplicates(dialogues: Iterable[tuple[str, Sequence[str]]], threshold: float = 0.6,
                    num_perm: int = 64, bands: int = 16, seed: int = 0) -> dict[str, tuple[str, float]]:
    """``{dialogue_id: (earlier_id, jaccard)}`` for every dialogue whose word-3-gram Jaccard with an earlier one
    (in the given order) is >= ``threshold``. Order decides which copy is kept, so pass a deterministic order."""
    index = NearDupIndex(threshold, num_perm, bands, seed)
    dup: dict[str, tuple[str, float]] = {}
    for did, texts in dialogues:
        hit = index.add(did, texts)
        if hit is not None:
            dup[did] = hit
    return dup


__all__ = ["NearDupIndex", "hashed_jaccard", "hashed_shingles", "near_duplicates", "shingles"]
