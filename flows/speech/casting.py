"""Voice casting: which voice speaks A and which speaks B in each dialogue.

Rules: the two voices are :func:`~flows.speech.voices.distinct`; a speaker keeps one voice for every turn; over the
dataset the voices (and the A/B sides) are used as evenly as the pool allows. Dialogues are cast in id order; each
takes the allowed ordered pair with the lowest (use of its two voices so far, use of the pair, use of the voices
on that side, sha256(dialogue id, pair)), so the result depends only on the pool and the set of dialogues cast
before. Casts are recorded in the ``casts`` table and reused: a dialogue keeps its voices while they stay in the
pool.
"""

from __future__ import annotations

import hashlib
import typing
from collections import Counter
from datetime import datetime

from pydantic import Field

from flows.speech.voices import Voice, check_pool, distinct
from schemas.records import Record, utcnow


class Cast(Record):
    table: typing.ClassVar[str] = "casts"
    dialogue_id: str
    voice_a: str
    voice_b: str
    engine: str
    created_at: datetime = Field(default_factory=utcnow)


def _tiebreak(dialogue_id: str, a: str, b: str) -> str:
    return hashlib.sha256(f"{dialogue_id}|{a}|{b}".encode()).hexdigest()


def cast_dialogues(dialogue_ids: list[str], pool: list[Voice], existing: dict[str, tuple[str, str]] | None = None,
                   engine: str = "default") -> dict[str, Cast]:
    """Casts for ``dialogue_ids``: kept from ``existing`` (id → (voice A, voice B)) when both voices are still in
    the pool and distinct; otherwise chosen by the balancing rule. Returns every dialogue's cast."""
    check_pool(pool)
    by_id = {v.id: v for v in pool}
    pairs = [(a.id, b.id) for a in pool for b in pool if distinct(a, b)]
    existing = existing or {}
    use: Counter[str] = Counter()
    pair_use: Counter[tuple[str, str]] = Counter()
    side_use: Counter[tuple[str, str]] = Counter()
    out: dict[str, Cast] = {}
    todo: list[str] = []
    for did in sorted(set(dialogue_ids)):
        prev = existing.get(did)
        if prev and prev[0] in by_id and prev[1] in by_id and distinct(by_id[prev[0]], by_id[prev[1]]):
            out[did] = Cast(id=did, dialogue_id=did, voice_a=prev[0], voice_b=prev[1], engine=engine)
        else:
            todo.append(did)
    for prev in existing.values():  # balance against everything already cast, listed here or not
        if prev[0] in by_id and prev[1] in by_id:
            use.update(prev)
            pair_use[tuple(sorted(prev))] += 1
            side_use[("A", prev[0])] += 1
            side_use[("B", prev[1])] += 1
    for did in todo:
        a, b = min(pairs, key=lambda p: (use[p[0]] + use[p[1]], pair_use[tuple(sorted(p))],
                                         side_use[("A", p[0])] + side_use[("B", p[1])], _tiebreak(did, *p)))
        use.update((a, b))
        pair_use[tuple(sorted((a, b)))] += 1
        side_use[("A", a)] += 1
        side_use[("B", b)] += 1
        out[did] = Cast(id=did, dialogue_id=did, voice_a=a, voice_b=b, engine=engine)
    return out
