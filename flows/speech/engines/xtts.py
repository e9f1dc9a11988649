"""Coqui XTTS-v2 (``coqui-tts``): the production engine, conditioned on emotional reference recordings.

The user points at a local checkpoint directory and reference clips; nothing is downloaded::

    speech:
      engine: xtts
      xtts:
        model_dir: /models/XTTS-v2            # config.json, model.pth, vocab.json (+ speakers_xtts.pth)
        references: /data/xtts-refs           # <references>/<voice id>/<Emotion>.wav (one per emotion used)
      voices:
        - {id: ref-anna, engine: xtts, model: anna, gender: female}
        - {id: ref-ben,  engine: xtts, model: ben,  gender: male}

``model`` names the speaker folder under ``references``. The emotion is carried by the reference clip (as in
DeepDialogue); the prosody table's rate is passed as XTTS ``speed``. A missing package, checkpoint file or
reference clip is an :class:`EngineError` raised before synthesis starts; there is no fallback to another engine.

What was exercised here: the gating (package/model/reference errors). ``coqui-tts`` 0.28 installs on this
machine but ``import TTS`` needs torchaudio, which PyPI lacks for torch 2.13, and XTTS-v2 weights cannot be
downloaded here, so the inference path below is written against the published coqui-tts API but unrun.
"""

from __future__ import annotations

import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from flows.speech.engines.base import Audio, Engine, EngineError
from flows.speech.prosody import Prosody
from flows.speech.voices import Voice

XTTS_SAMPLE_RATE = 24000
REQUIRED_FILES = ("config.json", "model.pth", "vocab.json")
INSTALL_HINT = ("`pip install coqui-tts` (it needs a torchaudio build matching your torch; on CPU-only torch 2.13 "
                "PyPI has none, use torch/torchaudio 2.5-2.8)")


class XTTSEngine(Engine):
    name = "xtts"

    def __init__(self, model_dir: Path | None, references: Path | None, language: str = "en", device: str = "cpu",
                 temperature: float = 0.7, neutral_fallback: bool = False) -> None:
        if model_dir is None or references is None:
            raise EngineError(
                "engine 'xtts' needs speech.xtts.model_dir (an XTTS-v2 checkpoint directory) and "
                "speech.xtts.references (reference clips <references>/<voice>/<Emotion>.wav); nothing is "
                "downloaded and there is no fallback to another engine")
        self.model_dir, self.references = Path(model_dir), Path(references)
        missing = [f for f in REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise EngineError(f"XTTS model dir {self.model_dir} lacks {missing} (expected the XTTS-v2 checkpoint)")
        if not self.references.is_dir():
            raise EngineError(f"XTTS reference directory {self.references} does not exist")
        try:
            import TTS  # noqa: F401, PLC0415 - optional engine (loads torch): availability check
        except Exception as exc:  # ImportError, or torchaudio's OSError/RuntimeError at import
            raise EngineError(f"coqui-tts cannot be imported ({type(exc).__name__}: {exc}); install it: "
                              f"{INSTALL_HINT}") from None
        self.language, self.device, self.temperature = language, device, temperature
        self.neutral_fallback = neutral_fallback
        self._model = None
        self._latents: dict[Path, tuple] = {}
        self._lock = threading.Lock()

    def version(self) -> str:
        try:
            tv = version("coqui-tts")
        except PackageNotFoundError:
            tv = "?"
        ckpt = self.model_dir / "model.pth"
        stat = ckpt.stat()
        return f"xtts-{tv}+{ckpt.name}:{stat.st_size}"

    def reference(self, voice: Voice, emotion: str) -> Path:
        folder = self.references / voice.model
        for cand in (folder / f"{emotion}.wav", folder / f"{emotion.lower()}.wav"):
            if cand.is_file():
                return cand
        if self.neutral_fallback:
            for cand in (folder / "Neutral.wav", folder / "neutral.wav"):
                if cand.is_file():
                    return cand
        raise EngineError(f"voice {voice.id!r}: no reference clip {folder / (emotion + '.wav')}"
                          + ("" if self.neutral_fallback else " (set speech.xtts.neutral_fallback to use neutral.wav)"))

    def check_voice(self, voice: Voice, emotions: list[str]) -> None:
        missing = []
        for emo in sorted(set(emotions)):
            try:
                self.reference(voice, emo)
            except EngineError:
                missing.append(emo)
        if missing:
            raise EngineError(f"voice {voice.id!r}: reference clips missing under {self.references / voice.model} "
                              f"for emotion(s) {missing}")

    def _load(self):
        if self._model is None:
            from TTS.tts.configs.xtts_config import XttsConfig  # noqa: PLC0415 - Coqui TTS: optional, loads torch
            from TTS.tts.models.xtts import Xtts  # noqa: PLC0415 - Coqui TTS: optional, loads torch

            config = XttsConfig()
            config.load_json(str(self.model_dir / "config.json"))
            model = Xtts.init_from_config(config)
            model.load_checkpoint(config, checkpoint_dir=str(self.model_dir), eval=True, use_deepspeed=False)
            model.to(self.device)
            self._model = model
        return self._model

    def synthesise(self, text: str, voice: Voice, emotion: str, prosody: Prosody) -> Audio:
        with self._lock:
            model = self._load()
            ref = self.reference(voice, emotion)
            if ref not in self._latents:
                self._latents[ref] = model.get_conditioning_latents(audio_path=[str(ref)])
            gpt_cond_latent, speaker_embedding = self._latents[ref]
            out = model.inference(text, self.language, gpt_cond_latent, speaker_embedding,
                                  temperature=self.temperature, speed=float(voice.rate * prosody.rate))
        wav = np.asarray(out["wav"], dtype=np.float32).reshape(-1)
        return Audio(wav, XTTS_SAMPLE_RATE)
