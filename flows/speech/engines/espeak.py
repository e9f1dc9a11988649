"""espeak-ng through its C API (ctypes).

The library comes from ``piper-tts`` (its ``espeakbridge`` extension links libespeak-ng 1.52 and exports the full
API, and it ships ``espeak-ng-data``), so no Debian package is needed. ``EMOFORGE_ESPEAK_LIB`` (+ optional
``EMOFORGE_ESPEAK_DATA``) points at another libespeak-ng instead, e.g. ``/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1``.

Prosody → espeak parameters: rate (words per minute), pitch base (0-100), pitch range (0-100), word gap (10 ms
units); loudness is applied afterwards by the synthesiser so that every engine shares one loudness scale.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
from pathlib import Path

import numpy as np

from flows.speech.engines.base import Audio, Engine, EngineError
from flows.speech.prosody import Prosody
from flows.speech.voices import Voice

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
P_RATE, P_VOLUME, P_PITCH, P_RANGE, P_WORDGAP = 1, 2, 3, 4, 7
BASE_WPM = 170
PITCH_UNITS_PER_SEMITONE = 3.5  # espeak's pitch base is roughly linear in Hz; ~3.5 units ≈ 1 semitone near 50

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()
_LIB: tuple[ctypes.CDLL, int, str] | None = None


def _load() -> tuple[ctypes.CDLL, int, str]:
    """(library, sample rate, version), initialised once per process."""
    global _LIB
    if _LIB is not None:
        return _LIB
    custom = os.environ.get("EMOFORGE_ESPEAK_LIB")
    if custom:
        try:
            lib = ctypes.CDLL(custom)
        except OSError as exc:
            raise EngineError(f"EMOFORGE_ESPEAK_LIB={custom!r} cannot be loaded: {exc}") from None
        data = os.environ.get("EMOFORGE_ESPEAK_DATA")
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode() if data else None, 0)
        if sr <= 0:
            raise EngineError(f"espeak-ng from {custom} failed to initialise (data dir {data or 'default'})")
    else:
        try:
            from piper import espeakbridge  # noqa: PLC0415 - the Piper engine loads onnxruntime
        except ImportError as exc:
            raise EngineError(
                "espeak-ng is not available: install piper-tts (it bundles libespeak-ng and its data: "
                "`pip install piper-tts`) or set EMOFORGE_ESPEAK_LIB to a libespeak-ng.so "
                f"(`apt-get install -y libespeak-ng1`); import failed: {exc}") from None
        data = Path(espeakbridge.__file__).parent / "espeak-ng-data"
        espeakbridge.initialize(str(data))  # the same global state piper's phonemiser uses
        lib = ctypes.CDLL(espeakbridge.__file__)
        sr = int(lib.espeak_ng_GetSampleRate())
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    version = (lib.espeak_Info(None) or b"?").decode()
    _LIB = (lib, sr, version)
    return _LIB


class EspeakEngine(Engine):
    name = "espeak"

    def __init__(self) -> None:
        self.lib, self.sample_rate, self._version = _load()
        self._chunks: list[np.ndarray] = []
        self._cb = _CALLBACK(self._collect)

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def version(self) -> str:
        return f"espeak-ng-{self._version}"

    def check_voice(self, voice: Voice, emotions: list[str]) -> None:
        with _LOCK:
            if self.lib.espeak_SetVoiceByName(voice.model.encode()) != 0:
                raise EngineError(f"voice {voice.id!r}: espeak-ng has no voice {voice.model!r}")

    def params(self, voice: Voice, prosody: Prosody) -> dict[int, int]:
        base_pitch = voice.pitch if voice.pitch else 50.0
        return {
            P_RATE: int(round(min(450, max(80, BASE_WPM * voice.rate * prosody.rate)))),
            P_PITCH: int(round(min(99, max(1, base_pitch + PITCH_UNITS_PER_SEMITONE * prosody.pitch_st)))),
            P_RANGE: int(round(min(100, max(0, 50 * voice.range * prosody.range)))),
            P_WORDGAP: int(math.ceil(prosody.pause_ms / 40.0)),  # 10 ms units; a quarter of the pause per word
            P_VOLUME: 100,
        }

    def synthesise(self, text: str, voice: Voice, emotion: str, prosody: Prosody) -> Audio:
        data = text.encode("utf-8")
        with _LOCK:
            self._chunks = []
            self.lib.espeak_SetSynthCallback(self._cb)
            if self.lib.espeak_SetVoiceByName(voice.model.encode()) != 0:
                raise EngineError(f"voice {voice.id!r}: espeak-ng has no voice {voice.model!r}")
            for key, value in self.params(voice, prosody).items():
                self.lib.espeak_SetParameter(key, value, 0)
            rc = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, ESPEAK_CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if rc != 0:
                raise EngineError(f"espeak-ng failed to synthesise (status {rc}) text {text[:40]!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            self._chunks = []
        return Audio((pcm.astype(np.float32) / 32768.0), self.sample_rate)
