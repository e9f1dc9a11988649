"""Re-synthesis of failed clips: a dialogue whose clips fail the audio checks at publish gets one more try with
another voice for the failing speaker before it is quarantined (``warehouse.quarantine``).

The new voice comes from the same pool and keeps the speaker's casting where it can: a voice of the same gender
as the one that failed, still :func:`~flows.speech.voices.distinct` from the other speaker's voice (chosen by a
hash of dialogue, speaker and voice, so the retry is deterministic). The speaker's every turn is re-rendered with
it (a speaker keeps one voice), the dialogue is re-mixed and its new clips go through the ASR round trip.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from flows.speech.casting import Cast
from schemas.config.speech import SpeechConfig
from flows.speech.pipeline import synthesise_home, voice_pool
from flows.speech.voices import Voice, distinct
from warehouse.store import Warehouse


def other_voice(did: str, speaker: str, current: str, other: str, pool: list[Voice]) -> str | None:
    """Another voice for ``speaker`` of ``did`` (not ``current``, distinct from ``other``), same gender first."""
    by_id = {v.id: v for v in pool}
    cur, oth = by_id.get(current), by_id.get(other)
    options = [v for v in pool if v.id not in (current, other) and (oth is None or distinct(v, oth))]
    if not options:
        return None

    def rank(v: Voice) -> tuple:
        return (cur is not None and v.gender != cur.gender,
                hashlib.sha256(f"{did}|{speaker}|{v.id}".encode()).hexdigest())

    return min(options, key=rank).id


def resynthesise_failed(home: str | Path, targets: dict[str, set[str]], cfg: SpeechConfig,
                        progress: bool = False) -> dict[str, Any]:
    """Recast the failing speakers of ``targets`` ({dialogue_id: speakers}) and voice those dialogues again;
    returns the synthesis counts plus ``recast`` (dialogue id -> {speaker: new voice})."""
    wh = Warehouse(home)
    pool = voice_pool(cfg)
    casts = {}
    if "casts" in wh.tables():
        casts = {r["dialogue_id"]: r for r in wh.query("SELECT * FROM casts").to_pylist()}
    new: list[Cast] = []
    recast: dict[str, dict[str, str]] = {}
    for did, speakers in sorted(targets.items()):
        c = casts.get(did)
        if c is None:  # never cast (a missing clip): voicing it is the retry
            continue
        a, b = c["voice_a"], c["voice_b"]
        for spk in sorted(speakers):
            cur, oth = (a, b) if spk == "A" else (b, a)
            alt = other_voice(did, spk, cur, oth, pool)
            if alt is None:
                continue
            a, b = (alt, b) if spk == "A" else (a, alt)
            recast.setdefault(did, {})[spk] = alt
        if (a, b) != (c["voice_a"], c["voice_b"]):
            new.append(Cast(id=did, dialogue_id=did, voice_a=a, voice_b=b, engine=c["engine"]))
    if new:
        wh.upsert(new)
    counts = synthesise_home(Path(home), config=cfg, workers=cfg.workers, progress=progress,
                             dialogue_ids=sorted(targets))
    counts["recast"] = recast
    return counts
