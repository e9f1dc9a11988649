"""Full-dialogue mix: the turn clips in order with natural gaps (see :class:`schemas.config.speech.MixConfig`)."""

from __future__ import annotations

import hashlib

import numpy as np

from flows.speech import dsp
from schemas.config.speech import MixConfig
from schemas.records import canonical_json


def gaps(dialogue_id: str, arousals: list[float], cfg: MixConfig) -> list[float]:
    """Silence before each turn: ``lead_s`` before the first; later ones shrink with the incoming turn's arousal
    and get a deterministic jitter (same dialogue → same gaps)."""
    out = [cfg.lead_s]
    for i, a in enumerate(arousals[1:], 1):
        h = int(hashlib.sha256(f"{dialogue_id}|{i}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        out.append(max(0.12, cfg.gap_s - cfg.arousal_gap_s * a + cfg.jitter_s * (2 * h - 1)))
    return out


def mix_key(turn_keys: list[str], gap_list: list[float], cfg: MixConfig, sample_rate: int) -> str:
    blob = canonical_json({"turns": turn_keys, "gaps": [round(g, 4) for g in gap_list], "tail": cfg.tail_s,
                           "sr": sample_rate, "v": "m1"})
    return hashlib.sha256(blob.encode()).hexdigest()


def mix(clips: list[np.ndarray], gap_list: list[float], cfg: MixConfig, sample_rate: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    for clip, gap in zip(clips, gap_list):
        parts.append(dsp.silence(gap, sample_rate))
        parts.append(clip.astype(np.float32))
    parts.append(dsp.silence(cfg.tail_s, sample_rate))
    return np.concatenate(parts)
