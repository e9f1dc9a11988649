"""Every config section emoforge reads, with one base (:class:`Section`, unknown keys refused) and one loader.

``--config FILE`` (YAML) is a :class:`Config`: ``taxonomy``, ``generation``, ``judging``, ``publish``, ``speech``,
``review`` and ``train``; every field has a default and command-line flags only override. ``--models FILE`` is a
:class:`ModelsConfig` (``schemas.config.models``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field

from schemas.config.base import ConfigError, Section, load
from schemas.config.generation import GenerationConfig, JudgingConfig
from schemas.config.publish import DifficultyConfig, PublishConfig, SplitConfig, ValidationConfig
from schemas.config.review import ReviewConfig
from schemas.config.speech import SpeechConfig
from schemas.config.train import TrainConfig

__all__ = ["Config", "ConfigError", "DifficultyConfig", "GenerationConfig", "JudgingConfig", "PublishConfig",
           "ReviewConfig", "Section", "SpeechConfig", "SplitConfig", "TrainConfig", "ValidationConfig",
           "load_config"]


class Config(Section):
    taxonomy: str = Field("deepdialogue", description="preset name (deepdialogue, erc) or path to a taxonomy file")
    publish: PublishConfig = Field(default_factory=PublishConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    judging: JudgingConfig = Field(default_factory=JudgingConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def fingerprint(self) -> str:
        """Hash of what a build and a release depend on (review and train settings do not change a release)."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"review", "train"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """The run config from ``path`` (YAML; None: every default); non-None ``overrides`` replace top-level keys."""
    return load(Config, path, **overrides)
