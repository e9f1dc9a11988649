"""Engine registry: ``make_engine(kind, config)`` builds the engine for one voice engine kind."""

from __future__ import annotations

from flows.speech.engines.base import Audio, Engine, EngineError
from flows.speech.engines.espeak import EspeakEngine
from flows.speech.engines.piper import PiperEngine
from flows.speech.engines.xtts import XTTSEngine

__all__ = ["Audio", "Engine", "EngineError", "make_engine"]


def make_engine(kind: str, config=None, threads: int = 1) -> Engine:
    """``kind`` is a voice's engine: ``piper``, ``espeak`` or ``xtts`` (``config``: a SpeechConfig)."""
    if kind == "espeak":
        return EspeakEngine()
    if kind == "piper":
        return PiperEngine(threads=threads, precision=config.piper.precision if config is not None else "int8")
    if kind == "xtts":
        x = config.xtts if config is not None else None
        return XTTSEngine(
            model_dir=x.model_dir if x else None, references=x.references if x else None,
            language=x.language if x else "en", device=x.device if x else "cpu",
            temperature=x.temperature if x else 0.7, neutral_fallback=x.neutral_fallback if x else False)
    raise EngineError(f"unknown speech engine {kind!r} (known: piper, espeak, xtts)")
