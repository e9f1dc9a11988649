"""Emotion → prosody: a documented, configurable table derived from the taxonomy's valence/arousal.

Each emotion gets five controls, computed from its valence ``v`` and arousal ``a`` (both in [-1, 1]) scaled by
the intensity ``i`` (0..1) and then overridden per emotion where the configuration says so::

    rate      = 1 + i * (rate_per_arousal * a + rate_per_valence * v)          speaking-rate multiplier
    pitch_st  = i * (pitch_st_per_arousal * a + pitch_st_per_valence * v)      pitch shift in semitones
    range     = 1 + i * (range_per_arousal * a + range_per_valence * v)        pitch-range multiplier
    volume_db = i * (volume_db_per_arousal * a + volume_db_per_valence * v)    loudness offset in dB
    pause_ms  = i * pause_ms_per_low_arousal * max(0, -a)                      extra pause per word/sentence gap

High-arousal emotions (Excited, Angry) come out faster, higher, wider and louder; low-arousal ones
(Bored, Relaxed, Sad) slower, lower, flatter, quieter and with longer pauses. Every value is clamped to the
bounds below so that no table entry can make speech unintelligible.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.config.speech import CLAMPS, ProsodyConfig
from schemas.taxonomy import Taxonomy

class Prosody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rate: float = 1.0
    pitch_st: float = 0.0
    range: float = 1.0
    volume_db: float = 0.0
    pause_ms: float = 0.0

    def rounded(self) -> "Prosody":
        """Rounded values: the content key and the engines use these, so float noise never re-synthesises."""
        return Prosody(rate=round(self.rate, 3), pitch_st=round(self.pitch_st, 2), range=round(self.range, 3),
                       volume_db=round(self.volume_db, 2), pause_ms=round(self.pause_ms, 1))


def _clamp(name: str, value: float) -> float:
    lo, hi = CLAMPS[name]
    return min(hi, max(lo, value))


def prosody_for(valence: float, arousal: float, cfg: ProsodyConfig, intensity: float = 1.0) -> Prosody:
    i, v, a = intensity, valence, arousal
    return Prosody(
        rate=_clamp("rate", 1 + i * (cfg.rate_per_arousal * a + cfg.rate_per_valence * v)),
        pitch_st=_clamp("pitch_st", i * (cfg.pitch_st_per_arousal * a + cfg.pitch_st_per_valence * v)),
        range=_clamp("range", 1 + i * (cfg.range_per_arousal * a + cfg.range_per_valence * v)),
        volume_db=_clamp("volume_db", i * (cfg.volume_db_per_arousal * a + cfg.volume_db_per_valence * v)),
        pause_ms=_clamp("pause_ms", i * cfg.pause_ms_per_low_arousal * max(0.0, -a)),
    ).rounded()


class ProsodyError(ValueError):
    pass


def prosody_table(taxonomy: Taxonomy, cfg: ProsodyConfig | None = None, intensity: float = 1.0) -> dict[str, Prosody]:
    """Prosody of every emotion of ``taxonomy`` (overrides applied). Unknown override names are refused."""
    cfg = cfg or ProsodyConfig()
    unknown = sorted(set(cfg.overrides) - set(taxonomy.emotion_names))
    if unknown:
        raise ProsodyError(f"prosody overrides name emotion(s) {unknown} that taxonomy {taxonomy.name!r} lacks")
    table: dict[str, Prosody] = {}
    for emo in taxonomy.emotions:
        base = prosody_for(emo.valence, emo.arousal, cfg, intensity)
        over = cfg.overrides.get(emo.name)
        if over is not None:
            base = base.model_copy(update=over.model_dump(exclude_none=True)).rounded()
        table[emo.name] = base
    return table


def table_markdown(table: dict[str, Prosody], taxonomy: Taxonomy) -> str:
    """The table as Markdown (docs/speech.md embeds the default one)."""
    lines = ["| emotion | valence | arousal | rate | pitch (st) | range | volume (dB) | pause (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in table.items():
        e = taxonomy.emotion[name]
        lines.append(f"| {name} | {e.valence:+.2f} | {e.arousal:+.2f} | {p.rate:.2f} | {p.pitch_st:+.2f} | "
                     f"{p.range:.2f} | {p.volume_db:+.1f} | {p.pause_ms:.0f} |")
    return "\n".join(lines)
