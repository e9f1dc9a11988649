#!/usr/bin/env bash
# Chromium from Debian packages for the browser tests (Playwright from PyPI drives it; no browser download).
# Idempotent: does nothing when /usr/bin/chromium is there. Needs root (as on CI and the dev machines) or sudo.
# Usage: bash scripts/browser-setup.sh
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "browser-setup: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "browser-setup: not root and no sudo: install the Debian package 'chromium' by hand" >&2; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# fonts-dejavu-core: readable text in the screenshots
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "browser-setup: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium installed')"
