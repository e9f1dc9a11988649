#!/usr/bin/env bash
# Install everything the test suite needs (the app, a Label Studio server in its own venv) and run the tests.
# Every cache and home stays under the checkout; nothing reaches the network during the tests.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
export UV_CACHE_DIR="${UV_CACHE_DIR:-$ROOT/.cache/uv}" UV_PYTHON_DOWNLOADS=never
bash scripts/labelstudio-setup.sh
# Chromium (Debian) for the browser test (Playwright comes from the dev group); without it that test fails in CI
bash scripts/browser-setup.sh || echo "test.sh: browser-setup failed: the browser test will report it" >&2
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PREFECT_HOME="$ROOT/.cache/test-home/prefect" \
  HF_HOME="$ROOT/.cache/test-home/hf" XDG_CACHE_HOME="$ROOT/.cache/test-home/xdg-cache" \
  XDG_CONFIG_HOME="$ROOT/.cache/test-home/xdg-config" MPLCONFIGDIR="$ROOT/.cache/test-home/mpl"
# the gates before the tests: one direction of imports (pyproject [tool.importlinter]) and ruff (pyproject [tool.ruff])
.venv/bin/lint-imports --no-cache --no-logo
.venv/bin/ruff check --no-cache .
# pytest exits 5 when no test ran: that is a failure here too
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout 1800 "$@"
