"""The Piper voice with its HiFi-GAN decoder in int8: quantised once per machine, cached, then loaded like any voice.

Why: the decoder is about 72 % of Piper's CPU time (its convolutions 64 %); static int8 quantisation of the
decoder's Conv, Add and LeakyRelu nodes (per-channel weights, activations calibrated on :data:`CALIBRATION`, kept
in uint8 between those nodes) makes a voice about 0.6x as costly per audio second. The text encoder, duration
predictor and flow stay fp32: quantising the flow as well moves the waveform far from fp32 (3.7 dB SNR).
``bench/piper_engine.py`` measures the cost and the quality (ASR round trip WER, the audio gate's pass rate,
pitch and duration) of every variant in :data:`VARIANTS` against fp32 on DailyDialog test sentences.

Cache: ``$EMOFORGE_PIPER_DIR``, else ``$XDG_CACHE_HOME/emoforge/piper`` (``~/.cache/emoforge/piper``); the file
name carries the source model's sha256 and :data:`QUANT_VERSION`, so a new voice or recipe quantises again. A file
lock makes concurrent first uses (worker processes) quantise once; the file appears by atomic rename.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock

from flows.speech.engines.base import EngineError
from schemas.digest import file_sha256
from schemas.home import machine_cache_dir

QUANT_VERSION = "q1"  # bump when the recipe below changes: the cached file name and the engine version carry it

# calibration text (not the sentences the bench reports on): questions, exclamations, short and long turns
CALIBRATION = [
    "The weather was lovely so we walked along the river for hours.",
    "I can't believe you forgot my birthday again!",
    "Please send me the report before noon tomorrow.",
    "Honestly, I have no idea what happened to the keys.",
    "That movie was the funniest thing all year.",
    "Oh no, not again. Why does this always happen to me?",
    "Wow! We won the whole tournament!",
    "Could you pass the salt, please?",
    "Well, I suppose we could try the other restaurant, if you really want to.",
    "Yes.",
    "It's been three years since I last saw my grandmother, and I miss her every single day.",
    "Stop right there, that's enough!",
]


@dataclass(frozen=True)
class Variant:
    """Which decoder nodes are quantised, in which ONNX format (QOperator: QLinear* nodes; QDQ: Q/DQ pairs)."""

    ops: tuple[str, ...]
    qdq: bool = False
    prefixes: tuple[str, ...] = ("/dec/",)


VARIANTS = {
    "int8_dec_conv": Variant(ops=("Conv",)),
    "int8_dec": Variant(ops=("Conv", "Add", "LeakyRelu")),
    "int8_dec_qdq": Variant(ops=("Conv", "ConvTranspose", "Add", "LeakyRelu"), qdq=True),
}
ADOPTED = "int8_dec"


class QuantisationError(EngineError):
    pass


def cache_dir() -> Path:
    return machine_cache_dir("piper", "EMOFORGE_PIPER_DIR")


def calibration_feeds(phoneme_ids: list[list[int]], scales: np.ndarray) -> Iterator[dict]:
    """One ONNX feed per sentence, exactly as Piper runs them (batch of one, no padding)."""
    for ids in phoneme_ids:
        yield {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
               "scales": scales}


def quantise(model: Path, out: Path, feeds: Iterator[dict], variant: Variant) -> Path:
    """Write ``model`` with ``variant``'s decoder nodes quantised to ``out`` (calibrated on ``feeds``)."""
    try:
        import onnx  # noqa: PLC0415 - optional heavy package, only when a voice is quantised
        from onnxruntime.quantization import (  # noqa: PLC0415 - optional, only when a voice is quantised
            CalibrationDataReader, QuantFormat, QuantType, quantize_static)
    except ImportError as exc:
        raise QuantisationError(f"quantising the Piper voice needs the onnx package (`pip install onnx`), or set "
                                f"speech.piper.precision: fp32 ({exc})") from None

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    nodes = [n.name for n in onnx.load(str(model)).graph.node
             if n.op_type in variant.ops and n.name.startswith(variant.prefixes)]
    if not nodes:
        raise QuantisationError(f"{model}: no {'/'.join(variant.ops)} nodes under {variant.prefixes}: not a Piper "
                                "(VITS) voice this recipe knows; set speech.piper.precision: fp32")
    quantize_static(str(model), str(out), Reader(), op_types_to_quantize=list(variant.ops), nodes_to_quantize=nodes,
                    quant_format=QuantFormat.QDQ if variant.qdq else QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def int8_model(model: Path, phoneme_ids: list[list[int]], scales: np.ndarray, variant: str = ADOPTED) -> Path:
    """The cached int8 file of ``model`` (quantised now when missing; concurrent callers wait for one another)."""
    model = Path(model)
    target_dir = cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{model.stem}-{file_sha256(model)[:16]}-{variant}-{QUANT_VERSION}.onnx"
    if target.is_file():
        return target
    with FileLock(str(target) + ".lock", timeout=900):
        if not target.is_file():
            tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.onnx")
            try:
                quantise(model, tmp, calibration_feeds(phoneme_ids, scales), VARIANTS[variant])
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return target
