#!/usr/bin/env bash
# Create .venv-labelstudio with the pinned Label Studio server, plus a migrated empty database template
# (so a fresh data directory starts in seconds instead of minutes). Idempotent: what is already there is kept.
# Usage: bash scripts/labelstudio-setup.sh [VENV_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${EMOFORGE_LS_VENV:-$ROOT/.venv-labelstudio}}"
REQ="$ROOT/annotation/requirements-labelstudio.txt"
WANT="$(sed -n 's/^label-studio==\([^ ]*\).*/\1/p' "$REQ")"
TEMPLATE="$VENV/emoforge-template"
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"

if ! command -v uv >/dev/null 2>&1; then
  echo "labelstudio-setup: uv is not installed (pip install uv)" >&2
  exit 1
fi

HAVE=""
if [ -x "$VENV/bin/python" ]; then
  HAVE="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null || true)"
fi
if [ "$HAVE" = "$WANT" ] && [ -x "$VENV/bin/label-studio" ]; then
  echo "labelstudio-setup: $VENV already has label-studio $HAVE"
else
  [ -n "$HAVE" ] && echo "labelstudio-setup: $VENV has label-studio '$HAVE', want $WANT: reinstalling"
  [ -x "$VENV/bin/python" ] || uv venv --python 3.11 "$VENV"
  uv pip install --python "$VENV/bin/python" -r "$REQ"
  rm -rf "$TEMPLATE"
  # (not `label-studio --version`: it migrates a database in ~/.local/share and calls out to PyPI)
  "$VENV/bin/python" -c 'import importlib.metadata as m, label_studio; print("label-studio", m.version("label-studio"))'
fi

if [ ! -f "$TEMPLATE/label_studio.sqlite3" ]; then
  echo "labelstudio-setup: migrating an empty database template (a few minutes on 2 cores)"
  TMP="$VENV/emoforge-template.tmp.$$"
  rm -rf "$TMP"
  "$VENV/bin/python" "$ROOT/annotation/ls_migrate.py" "$TMP" >"$VENV/emoforge-template.log" 2>&1 \
    || { echo "labelstudio-setup: migration failed, see $VENV/emoforge-template.log" >&2; rm -rf "$TMP"; exit 1; }
  mkdir -p "$TEMPLATE"
  mv "$TMP/label_studio.sqlite3" "$TEMPLATE/label_studio.sqlite3.part"
  echo "$WANT" > "$TEMPLATE/VERSION"
  mv "$TEMPLATE/label_studio.sqlite3.part" "$TEMPLATE/label_studio.sqlite3"
  rm -rf "$TMP"
fi
echo "labelstudio-setup: label-studio $WANT ready in $VENV (database template in $TEMPLATE)"
