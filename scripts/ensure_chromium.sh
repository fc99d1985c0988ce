#!/usr/bin/env bash
# Make sure Debian's headless-capable `chromium` is installed, for the site's browser test
# (tests/test_site.py, marked slow). Idempotent: returns at once when chromium is there.
#
#   bash scripts/ensure_chromium.sh          # needs root (or sudo) the first time
#
# Only Debian's apt is used: playwright's `npx playwright install` downloads browsers from
# elsewhere and fails on these machines (see shared/RESOURCES.md).
set -euo pipefail

for exe in chromium chromium-browser; do
  if command -v "$exe" >/dev/null 2>&1; then
    echo "ensure_chromium: $(command -v "$exe") is present"
    exit 0
  fi
done

bash "$(dirname "$0")/apt_install.sh" ensure_chromium \
  "install Debian's 'chromium' package, or skip the slow tests (pytest -m 'not slow')" \
  chromium fonts-dejavu-core
echo "ensure_chromium: installed $(command -v chromium) ($(chromium --version 2>/dev/null || echo 'version unknown'))"
