"""Re-synthesis of failed clips: a dialogue whose clips fail the audio checks at publish gets one more try with
another voice for the failing speaker before it is quarantined (``warehouse.quarantine``).

The new voice comes from the same pool, still :func:`~flows.speech.voices.distinct` from the other speaker's voice.
Most failures are unintelligible clips (``audio:wer``), so the voices are ranked first by their mean ASR word error
rate over this home's transcribed clips (in steps of 0.1: the evidence of this build, not a fixed table; a voice
with fewer than :data:`MIN_CLIPS` clips counts as the mean of the others), then by keeping the failed voice's
gender, then by a hash of dialogue, speaker and voice (the retry is deterministic). Measured
(``bench/voice_wer.py --quick``): espeak-gb-f 0.43 against espeak-gb-m 0.26, so a failing espeak-us-f speaker,
which the gender rule alone always moved to espeak-gb-f, now goes to the clearer voice. The speaker's every turn is
re-rendered with it (a speaker keeps one voice), the dialogue is re-mixed and its new clips go through the ASR round
trip.
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


MIN_CLIPS = 10  # transcribed clips of a voice before its mean WER ranks it


def voice_wer(wh: Warehouse) -> dict[str, float]:
    """Mean ASR word error rate of each voice over the turn clips of the home that were transcribed (voices with at
    least :data:`MIN_CLIPS` of them)."""
    if "clips" not in wh.tables():
        return {}
    rows = wh.query("SELECT voice, avg(wer) AS wer, count(*) AS n FROM clips WHERE kind = 'turn' AND wer IS NOT NULL "
                    "GROUP BY voice").to_pylist()
    return {r["voice"]: float(r["wer"]) for r in rows if r["n"] >= MIN_CLIPS}


def other_voice(did: str, speaker: str, current: str, other: str, pool: list[Voice],
                wer: dict[str, float] | None = None) -> str | None:
    """Another voice for ``speaker`` of ``did`` (not ``current``, distinct from ``other``): the most intelligible by
    ``wer`` (voice -> mean WER, :func:`voice_wer`; steps of 0.1), then the same gender, then a hash."""
    by_id = {v.id: v for v in pool}
    cur, oth = by_id.get(current), by_id.get(other)
    options = [v for v in pool if v.id not in (current, other) and (oth is None or distinct(v, oth))]
    if not options:
        return None
    wer = wer or {}
    unknown = sum(wer.values()) / len(wer) if wer else 0.0

    def rank(v: Voice) -> tuple:
        return (round(wer.get(v.id, unknown), 1), cur is not None and v.gender != cur.gender,
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
    wer = voice_wer(wh)
    new: list[Cast] = []
    recast: dict[str, dict[str, str]] = {}
    for did, speakers in sorted(targets.items()):
        c = casts.get(did)
        if c is None:  # never cast (a missing clip): voicing it is the retry
            continue
        a, b = c["voice_a"], c["voice_b"]
        for spk in sorted(speakers):
            cur, oth = (a, b) if spk == "A" else (b, a)
            alt = other_voice(did, spk, cur, oth, pool, wer)
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
