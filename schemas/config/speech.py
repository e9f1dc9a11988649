"""``speech:`` section of the run config: engine, voices, prosody mapping, mixing, ASR and the audio gate's bounds.

The prosody *coefficients* and the :class:`Voice` record live here because the config embeds them; the mapping
itself (``flows.speech.prosody``) and the built-in pools (``flows.speech.voices``) stay with the speech stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.config.base import ConfigError, Section, load, validate

EngineName = Literal["default", "espeak", "piper", "xtts"]

# bounds of every prosody control: no table entry can make speech unintelligible
CLAMPS = {
    "rate": (0.6, 1.6),
    "pitch_st": (-6.0, 6.0),
    "range": (0.2, 2.5),
    "volume_db": (-9.0, 6.0),
    "pause_ms": (0.0, 400.0),
}


class SpeechConfigError(ConfigError):
    pass


class Voice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    engine: Literal["piper", "espeak", "xtts"]
    model: str = Field(description="piper: model name; espeak: voice+variant (en-us+f3); xtts: reference speaker dir")
    gender: Literal["female", "male", "neutral"] = "neutral"
    accent: str = "en-US"
    pitch: float = Field(0.0, description="piper/xtts: base pitch shift in semitones; espeak: base pitch 0-100")
    rate: float = Field(1.0, gt=0.3, lt=3.0, description="base speaking-rate multiplier")
    range: float = Field(1.0, gt=0, lt=3.0, description="base pitch-range multiplier (espeak)")
    description: str = ""

    def key(self) -> dict:
        return self.model_dump(exclude={"description"})


class ProsodyOverride(Section):
    rate: float | None = Field(None, ge=CLAMPS["rate"][0], le=CLAMPS["rate"][1])
    pitch_st: float | None = Field(None, ge=CLAMPS["pitch_st"][0], le=CLAMPS["pitch_st"][1])
    range: float | None = Field(None, ge=CLAMPS["range"][0], le=CLAMPS["range"][1])
    volume_db: float | None = Field(None, ge=CLAMPS["volume_db"][0], le=CLAMPS["volume_db"][1])
    pause_ms: float | None = Field(None, ge=CLAMPS["pause_ms"][0], le=CLAMPS["pause_ms"][1])


class ProsodyConfig(Section):
    """Coefficients of the valence/arousal → prosody mapping, plus per-emotion overrides."""

    rate_per_arousal: float = 0.22
    rate_per_valence: float = 0.04
    pitch_st_per_arousal: float = 2.5
    pitch_st_per_valence: float = 1.0
    range_per_arousal: float = 0.45
    range_per_valence: float = 0.15
    volume_db_per_arousal: float = 3.0
    volume_db_per_valence: float = 0.0
    pause_ms_per_low_arousal: float = 120.0
    overrides: dict[str, ProsodyOverride] = Field(default_factory=dict)


class MixConfig(Section):
    """Full-dialogue mix: silence before the first turn, after the last, and between turns.

    The gap before a turn is ``gap_s`` shortened by ``arousal_gap_s * arousal`` of the incoming turn (excited
    replies come quicker, sad ones later), plus a deterministic jitter of up to ±``jitter_s``."""

    lead_s: float = Field(0.3, ge=0, le=5)
    tail_s: float = Field(0.4, ge=0, le=5)
    gap_s: float = Field(0.45, ge=0, le=5)
    arousal_gap_s: float = Field(0.2, ge=0, le=2)
    jitter_s: float = Field(0.1, ge=0, le=1)


class AudioBounds(Section):
    """Release-gate bounds for the audio checks."""

    min_s_per_word: float = Field(0.12, gt=0, description="lower duration bound: base + words * this")
    max_s_per_word: float = Field(1.2, gt=0, description="upper duration bound: base + words * this")
    min_base_s: float = Field(0.1, ge=0)
    max_base_s: float = Field(2.5, ge=0)
    min_rms_dbfs: float = Field(-45.0, description="speech quieter than this is 'silent'")
    max_clipped_fraction: float = Field(0.001, ge=0, le=1, description="share of samples at full scale")
    max_clip_wer: float = Field(0.6, ge=0, description="per-clip ASR word error rate bound")
    max_mean_wer: float = Field(0.25, ge=0, description="release-wide mean ASR word error rate bound")
    wer_min_words: int = Field(6, ge=1, description="the per-clip WER bound applies to turns of at least this many words")
    require_wer: bool = Field(False, description="fail turn clips that have no WER recorded")
    min_voice_mfcc: float = Field(5.0, gt=0, description="A's and B's mean-MFCC vectors at least this far apart...")
    min_voice_pitch_st: float = Field(4.0, gt=0, description="...or their median pitches this many semitones apart")
    check_voice_acoustics: bool = Field(True, description="measure A/B voice difference on the audio, not just ids")

    @model_validator(mode="after")
    def _ordered(self) -> "AudioBounds":
        if self.min_s_per_word > self.max_s_per_word:
            raise ValueError("min_s_per_word > max_s_per_word")
        return self


class ASRConfig(Section):
    enabled: bool = True
    model_dir: Path | None = Field(None, description="CTranslate2 Whisper model dir; default: the PyPI-shipped base model")
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1, le=10)
    fraction: float = Field(1.0, ge=0, le=1, description="share of turn clips transcribed (deterministic by clip id)")
    language: str = "en"


class XTTSConfig(Section):
    model_dir: Path | None = Field(None, description="XTTS-v2 checkpoint dir (config.json, model.pth, vocab.json)")
    references: Path | None = Field(None, description="reference clips: <references>/<voice>/<emotion>.wav")
    language: str = "en"
    device: str = "cpu"
    temperature: float = Field(0.7, gt=0, le=2)
    neutral_fallback: bool = Field(
        False, description="use <voice>/neutral.wav (+ prosody rate) for emotions without a reference clip")


class PiperSection(Section):
    precision: Literal["int8", "fp32"] = Field(
        "int8", description="int8: the voice's decoder quantised once per machine and cached (about 0.6x the CPU "
                            "of fp32 at the same ASR word error rate); fp32: the model as shipped")


class SpeechConfig(Section):
    enabled: bool = True
    engine: EngineName = "default"
    workers: int = Field(2, ge=1, le=64)
    sample_rate: int = Field(22050, ge=8000, le=48000, description="every clip is stored at this rate")
    loudness_dbfs: float = Field(-24.0, ge=-40, le=-6, description="speech RMS before the emotion's volume offset")
    intensity: float = Field(1.0, ge=0, le=1, description="scales every emotion's prosody deviation")
    voices: list[Voice] | None = Field(None, description="voice pool; default: the engine's built-in pool")
    prosody: ProsodyConfig = Field(default_factory=ProsodyConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    asr: ASRConfig = Field(default_factory=ASRConfig)
    bounds: AudioBounds = Field(default_factory=AudioBounds)
    xtts: XTTSConfig = Field(default_factory=XTTSConfig)
    piper: PiperSection = Field(default_factory=PiperSection)
    flush_every: int = Field(32, ge=1, description="clip records are written every N finished clips")


def load_speech_config(source: str | Path | dict | SpeechConfig | None = None, **overrides: Any) -> SpeechConfig:
    """From a dict, a SpeechConfig, or a YAML file (its ``speech:`` section when it has one)."""
    if isinstance(source, (str, Path)):
        return load(SpeechConfig, source, section="speech", what="speech config", error=SpeechConfigError,
                    **overrides)
    data = source.model_dump() if isinstance(source, SpeechConfig) else dict(source or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate(SpeechConfig, data, what="speech config", prefix="speech", error=SpeechConfigError)
