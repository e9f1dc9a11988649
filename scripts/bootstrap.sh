#!/usr/bin/env bash
# Install emoforge into .venv (uv, Python 3.11, locked pins) with everything the main job needs offline:
# the embedded llama.cpp server + GGUF models, the speech engines, the trainer. Idempotent.
# Usage: bash scripts/bootstrap.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export UV_PYTHON_DOWNLOADS=never
export UV_CACHE_DIR="${UV_CACHE_DIR:-$ROOT/.cache/uv}"
export UV_LINK_MODE="${UV_LINK_MODE:-copy}"
# precompiled bytecode: every test subprocess (Prefect server, Dask workers, kill drills) imports the stack again
export UV_COMPILE_BYTECODE=1
UV_VERSION=0.13.8

if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION" >&2
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
PY="$(command -v python3.11 || true)"
[ -n "$PY" ] || { echo "bootstrap: Python 3.11 is required (python3.11 not found)" >&2; exit 1; }
# the real interpreter, not a launcher: uv compares this path with the one .venv was made from, and a shim
# (pyenv, asdf) never matches it, so `uv sync` would remove and recreate .venv on every run (breaking a running job)
PY="$("$PY" -c 'import sys; print(sys.executable)')"

uv sync --locked --all-extras --python "$PY"
for setup in scripts/ffmpeg-setup.sh scripts/speech-setup.sh; do
  [ -f "$setup" ] && bash "$setup"
done
echo "bootstrap: ready: $ROOT/.venv/bin/emoforge" >&2
