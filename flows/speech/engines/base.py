"""The engine interface: text + voice + emotion (+ prosody) → mono float32 audio at a known sample rate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from flows.speech.prosody import Prosody
from flows.speech.voices import Voice


class EngineError(RuntimeError):
    """An engine that cannot run (missing package, model or reference clip); the message says what to do."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # mono float32 in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


class Engine(ABC):
    """One text-to-speech backend. Instances live inside one worker process and are reused for many clips."""

    name: str = "engine"

    @abstractmethod
    def version(self) -> str:
        """Identifies the model + code that renders audio: part of every clip's content key."""

    @abstractmethod
    def synthesise(self, text: str, voice: Voice, emotion: str, prosody: Prosody) -> Audio:
        """Render ``text`` in ``voice`` with the prosody of ``emotion`` (engines may also use the emotion itself,
        e.g. to pick an emotional reference clip)."""

    def check_voice(self, voice: Voice, emotions: list[str]) -> None:
        """Raise :class:`EngineError` before any work starts if ``voice`` cannot say these emotions."""

    def close(self) -> None:
        pass
