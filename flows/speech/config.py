"""Speech configuration (the ``speech:`` section of a run config). Every field has a default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flows.speech.prosody import ProsodyConfig
from flows.speech.voices import Voice

EngineName = Literal["default", "espeak", "piper", "xtts"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixConfig(_Section):
    """Full-dialogue mix: silence before the first turn, after the last, and between turns.

    The gap before a turn is ``gap_s`` shortened by ``arousal_gap_s * arousal`` of the incoming turn (excited
    replies come quicker, sad ones later), plus a deterministic jitter of up to ±``jitter_s``."""

    lead_s: float = Field(0.3, ge=0, le=5)
    tail_s: float = Field(0.4, ge=0, le=5)
    gap_s: float = Field(0.45, ge=0, le=5)
    arousal_gap_s: float = Field(0.2, ge=0, le=2)
    jitter_s: float = Field(0.1, ge=0, le=1)


class AudioBounds(_Section):
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


class ASRConfig(_Section):
    enabled: bool = True
    model_dir: Path | None = Field(None, description="CTranslate2 Whisper model dir; default: the PyPI-shipped base model")
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1, le=10)
    fraction: float = Field(1.0, ge=0, le=1, description="share of turn clips transcribed (deterministic by clip id)")
    language: str = "en"


class XTTSConfig(_Section):
    model_dir: Path | None = Field(None, description="XTTS-v2 checkpoint dir (config.json, model.pth, vocab.json)")
    references: Path | None = Field(None, description="reference clips: <references>/<voice>/<emotion>.wav")
    language: str = "en"
    device: str = "cpu"
    temperature: float = Field(0.7, gt=0, le=2)
    neutral_fallback: bool = Field(
        False, description="use <voice>/neutral.wav (+ prosody rate) for emotions without a reference clip")


class SpeechConfig(_Section):
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
    flush_every: int = Field(32, ge=1, description="clip records are written every N finished clips")


class SpeechConfigError(ValueError):
    pass


def load_speech_config(source: str | Path | dict | SpeechConfig | None = None, **overrides) -> SpeechConfig:
    """From a dict, a SpeechConfig, or a YAML file (its ``speech:`` section when it has one)."""
    if isinstance(source, SpeechConfig):
        data = source.model_dump()
    elif isinstance(source, dict):
        data = dict(source)
    elif source is None:
        data = {}
    else:
        p = Path(source)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SpeechConfigError(f"cannot read config {p}: {exc}") from None
        if not isinstance(raw, dict):
            raise SpeechConfigError(f"config {p} must be a mapping")
        data = raw.get("speech", {}) if "speech" in raw else raw
        if not isinstance(data, dict):
            raise SpeechConfigError(f"config {p}: 'speech' must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SpeechConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"speech.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SpeechConfigError(f"invalid speech config: {problems}") from None
