#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or through sudo (used by the ensure_* scripts).
#
#   bash scripts/apt_install.sh <who> "<what to do without apt>" <package>...
set -euo pipefail
who=$1 hint=$2
shift 2
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "$who: $* missing and this user cannot run apt-get (not root, no sudo); $hint" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "$@"
