"""One clip: engine output → trimmed, resampled to the release rate, loudness set by the emotion's volume.

:class:`Renderer` holds one engine per voice engine kind (created lazily, reused) and is what a worker process
keeps between clips. :func:`clip_key` is the content address of a clip.
"""

from __future__ import annotations

import hashlib

import numpy as np

from flows.speech import dsp
from schemas.config.speech import SpeechConfig
from flows.speech.engines import Engine, EngineError, make_engine
from flows.speech.prosody import Prosody
from flows.speech.voices import Voice
from schemas.records import canonical_json

RENDER_VERSION = "r1"  # bump when the post-processing below changes
EDGE_S = 0.08


def clip_key(text: str, voice: Voice, emotion: str, prosody: Prosody, engine_version: str, cfg: SpeechConfig) -> str:
    """sha256 over everything that shapes the audio: text, voice, emotion, prosody, engine version, output format."""
    blob = canonical_json({
        "text": text, "voice": voice.key(), "emotion": emotion, "prosody": prosody.rounded().model_dump(),
        "engine": engine_version, "render": RENDER_VERSION, "sr": cfg.sample_rate, "loudness": cfg.loudness_dbfs,
    })
    return hashlib.sha256(blob.encode()).hexdigest()


class Renderer:
    def __init__(self, cfg: SpeechConfig, threads: int = 1, engines: dict[str, Engine] | None = None) -> None:
        """``engines``: ready engines by kind (a bench comparing engine variants); the rest are made on first use."""
        self.cfg = cfg
        self.threads = threads
        self._engines: dict[str, Engine] = dict(engines or {})

    def engine(self, kind: str) -> Engine:
        if kind not in self._engines:
            self._engines[kind] = make_engine(kind, self.cfg, threads=self.threads)
        return self._engines[kind]

    def version(self, voice: Voice) -> str:
        return self.engine(voice.engine).version()

    def render(self, text: str, voice: Voice, emotion: str, prosody: Prosody) -> np.ndarray:
        if not text.strip():
            raise EngineError("cannot synthesise empty text")
        audio = self.engine(voice.engine).synthesise(text, voice, emotion, prosody)
        x = dsp.trim_silence(audio.samples, audio.sample_rate, threshold_db=-45.0, keep_s=0.03)
        if x.size == 0:
            raise EngineError(f"voice {voice.id!r} produced silence for {text[:40]!r}")
        x = dsp.resample(x, audio.sample_rate, self.cfg.sample_rate)
        x = dsp.normalise_loudness(x, self.cfg.sample_rate, self.cfg.loudness_dbfs + prosody.volume_db)
        edge = dsp.silence(EDGE_S, self.cfg.sample_rate)
        return np.concatenate([edge, x, edge]).astype(np.float32)

    def close(self) -> None:
        for e in self._engines.values():
            e.close()
