"""``publish:`` section of the run config: what a release takes, its splits, difficulty and gate bounds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.config.base import Section


class SplitConfig(Section):
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


class DifficultyConfig(Section):
    """PRC-Emo curriculum difficulty: every label change adds k*s + b; quantile buckets."""

    k: float = 1.0
    b: float = 0.4
    buckets: int = Field(2, ge=1, le=20)


class ValidationConfig(Section):
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
    """Bounds for imported real dialogues (multi-party, long): 1 to 30+ turns, long utterances, and turns without a
    word (a human "..." or "?!" is a real turn: DailyDialog has one, MELD many)."""

    min_turns: int = Field(1, ge=1)
    min_words_per_turn: int = Field(0, ge=0)
    max_turns: int = Field(200, ge=1)
    max_words_per_turn: int = Field(500, ge=1)


class PublishConfig(Section):
    sources: list[str] = Field(default_factory=lambda: ["generated"], description="dialogue sources a release takes")
    splits: SplitConfig = Field(default_factory=SplitConfig)
    difficulty: DifficultyConfig = Field(default_factory=DifficultyConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    imported: ImportedValidationConfig = Field(
        default_factory=ImportedValidationConfig, description="bounds of imported real dialogues (dailydialog, meld)")
    max_quarantine_share: float = Field(
        0.05, ge=0, le=1, description="a release is blocked when more than this share of its dialogues is quarantined")
    quarantine_floor: int = Field(
        2, ge=0, description="this many quarantined dialogues never block a release, whatever their share (a share of "
                             "a dozen dialogues says nothing about a systematic fault; one bad clip is no veto)")
    row_group_size: int = Field(50_000, ge=1000)
    report: bool = Field(True, description="write the HTML/PNG report into the release")
    audio: Literal["auto", "require", "off"] = Field(
        "auto", description="embed turn audio and dialogue mixes: auto = when clips exist, require = gate fails without")
