#!/usr/bin/env bash
# FFmpeg's shared libraries, which torchcodec (and so `datasets`) needs to decode a release's Audio columns.
# Installs them from Debian/Ubuntu packages when they are missing (as root, or with passwordless sudo); otherwise
# says what to install. Idempotent: does nothing when the libraries are already there.
#   bash scripts/ffmpeg-setup.sh
set -euo pipefail
LIBS=(libavutil libavcodec libavformat libavdevice libavfilter libswscale libswresample)

have_all() {
  local lib
  for lib in "${LIBS[@]}"; do
    ldconfig -p | grep -q "${lib}\.so\.[0-9]" || return 1
  done
}

if have_all; then
  echo "ffmpeg-setup: FFmpeg shared libraries present"
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo -n"
if ! command -v apt-get >/dev/null 2>&1 || { [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; }; then
  echo "ffmpeg-setup: FFmpeg's shared libraries are missing and cannot be installed from here:" \
       "install them with your package manager (Debian/Ubuntu: apt-get install ffmpeg) to decode release audio" >&2
  exit 0  # everything else works without them
fi
# the package names carry the library's major version (Debian 12: libavcodec59, 13: libavcodec61): take the newest
$SUDO apt-get update -qq
PKGS=()
for lib in "${LIBS[@]}"; do
  pkg="$(apt-cache search --names-only "^${lib}[0-9]+\$" | cut -d' ' -f1 | grep -E "^${lib}[0-9]+\$" | sort -V | tail -1)"
  [ -n "$pkg" ] || { echo "ffmpeg-setup: no Debian package for $lib" >&2; exit 1; }
  PKGS+=("$pkg")
done
echo "ffmpeg-setup: installing ${PKGS[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
have_all || { echo "ffmpeg-setup: installed ${PKGS[*]} but the libraries are still not found" >&2; exit 1; }
echo "ffmpeg-setup: FFmpeg shared libraries installed"
