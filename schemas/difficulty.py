"""PRC-Emo curriculum difficulty of a dialogue.

    DIF = (WES_same + WES_diff + N_sp) / (N_u + N_sp)

Every label change between consecutive utterances of the same speaker (WES_same) and between adjacent
utterances of different speakers (WES_diff) adds ``k * s + b``, where ``s`` is the similarity of the two labels on
the valence-arousal circle (:meth:`schemas.taxonomy.Taxonomy.similarity`). ``N_u`` is the number of utterances and
``N_sp`` the number of speakers. Defaults k = 1, b = 0.4.
"""

from __future__ import annotations

import bisect
from typing import Callable, Sequence


def difficulty(
    speakers: Sequence[str],
    labels: Sequence[str],
    similarity: Callable[[str, str], float],
    k: float = 1.0,
    b: float = 0.4,
) -> float:
    if len(speakers) != len(labels):
        raise ValueError(f"{len(speakers)} speakers for {len(labels)} labels")
    n_u = len(labels)
    if n_u == 0:
        raise ValueError("a dialogue needs at least one utterance")
    n_sp = len(set(speakers))
    wes_same = 0.0
    wes_diff = 0.0
    last_by_speaker: dict[str, str] = {}
    for i, (spk, lab) in enumerate(zip(speakers, labels)):
        prev_same = last_by_speaker.get(spk)
        if prev_same is not None and prev_same != lab:
            wes_same += k * similarity(prev_same, lab) + b
        if i > 0 and speakers[i - 1] != spk and labels[i - 1] != lab:
            wes_diff += k * similarity(labels[i - 1], lab) + b
        last_by_speaker[spk] = lab
    return (wes_same + wes_diff + n_sp) / (n_u + n_sp)


def max_difficulty(k: float = 1.0, b: float = 0.4) -> float:
    """An upper bound of DIF for any dialogue (s <= 1): every pair changes label, under 2(k+b)+1."""
    return 2 * (k + b) + 1


def bucket_edges(values: Sequence[float], n_buckets: int) -> list[float]:
    """Quantile edges: ``n_buckets - 1`` thresholds splitting ``values`` into equally filled buckets."""
    if n_buckets < 1:
        raise ValueError("n_buckets must be >= 1")
    if not values or n_buckets == 1:
        return []
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, (n * q) // n_buckets)] for q in range(1, n_buckets)]


def bucket_of(value: float, edges: Sequence[float]) -> int:
    """Bucket index (0 = easiest): values equal to an edge go to the upper bucket."""
    return bisect.bisect_right(edges, value)
