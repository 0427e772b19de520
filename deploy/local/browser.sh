#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/e2e/test_timeline_browser.py): Debian's chromium
# and chromium-driver, installed once (later runs find /usr/bin/chromium and do nothing). Playwright
# drives it with executable_path=/usr/bin/chromium; its own browser download is never used (it
# cannot be fetched here), hence PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and no `playwright install`.
#   browser.sh            install if missing, print the browser's version
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

CHROMIUM="${MERC_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  apt_install chromium chromium-driver
fi
[ -x "$CHROMIUM" ] || { echo "browser.sh: $CHROMIUM still missing after the install" >&2; exit 1; }
"$CHROMIUM" --headless --no-sandbox --version 2>/dev/null || "$CHROMIUM" --version
