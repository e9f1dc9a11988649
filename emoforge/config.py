"""The run configuration (`--config FILE`, YAML). Every field has a default; unknown keys are refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flows.build_config import GenerationConfig, JudgingConfig
from flows.speech.config import SpeechConfig


class ConfigError(ValueError):
    pass


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitConfig(_Section):
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


class DifficultyConfig(_Section):
    """PRC-Emo curriculum difficulty: every label change adds k*s + b; quantile buckets."""

    k: float = 1.0
    b: float = 0.4
    buckets: int = Field(2, ge=1, le=20)


class ValidationConfig(_Section):
    min_turns: int = Field(3, ge=1)
    max_turns: int = Field(10, ge=1)
    max_words_per_turn: int = Field(40, ge=1, description="hard bound in the release gate (the generator's cap is softer)")
    min_words_per_turn: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "ValidationConfig":
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) > max_turns ({self.max_turns})")
        if self.min_words_per_turn > self.max_words_per_turn:
            raise ValueError("min_words_per_turn > max_words_per_turn")
        return self


class ImportedValidationConfig(ValidationConfig):
    """Bounds for imported real dialogues (multi-party, long): 1 to 30+ turns, long utterances."""

    min_turns: int = Field(1, ge=1)
    max_turns: int = Field(200, ge=1)
    max_words_per_turn: int = Field(500, ge=1)


class PublishConfig(_Section):
    sources: list[str] = Field(default_factory=lambda: ["generated"], description="dialogue sources a release takes")
    splits: SplitConfig = Field(default_factory=SplitConfig)
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    imported: ImportedValidationConfig = Field(
        default_factory=ImportedValidationConfig, description="bounds of imported real dialogues (dailydialog, meld)")
    max_quarantine_share: float = Field(
        0.05, ge=0, le=1, description="a release is blocked when more than this share of its dialogues is quarantined")
    row_group_size: int = Field(50_000, ge=1000)
    report: bool = Field(True, description="write the HTML/PNG report into the release")
    audio: Literal["auto", "require", "off"] = Field(
        "auto", description="embed turn audio and dialogue mixes: auto = when clips exist, require = gate fails without")


class Config(_Section):
    taxonomy: str = Field("deepdialogue", description="preset name (deepdialogue, erc) or path to a taxonomy file")
    publish: PublishConfig = Field(default_factory=PublishConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judging: JudgingConfig = Field(default_factory=JudgingConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)

    def fingerprint(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, **overrides) -> Config:
    data: dict = {}
    if path is not None:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {p}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {p} must be a mapping, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config{' ' + str(path) if path else ''}: {problems}") from None
