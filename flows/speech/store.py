"""Content-addressed clip storage under ``<home>/audio``.

A clip's file name is its content key (sha256 of text, voice, emotion, prosody, engine version and output format,
see :func:`flows.speech.render.clip_key`): ``clips/<k[:2]>/<k>.wav`` for turns and ``mixes/<k[:2]>/<k>.wav`` for
dialogue mixes. Files are written to a temporary name and renamed, so a file that exists is complete; the same
key is never synthesised twice. Format: 16-bit PCM WAV, mono.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from schemas.audio import read_audio as read  # noqa: F401 - one reader, shared with the release gate
from schemas.digest import file_sha256


def audio_root(home: Path) -> Path:
    return Path(home) / "audio"


def clip_relpath(key: str, kind: str = "turn") -> str:
    folder = "clips" if kind == "turn" else "mixes"
    return f"{folder}/{key[:2]}/{key}.wav"


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> str:
    """Atomically write a 16-bit WAV; returns the sha256 of the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        digest = file_sha256(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def file_info(path: Path) -> tuple[int, float, str]:
    """(sample rate, duration s, sha256) of an existing clip."""
    info = sf.info(str(path))
    digest = file_sha256(path)
    return int(info.samplerate), float(info.frames) / info.samplerate, digest
