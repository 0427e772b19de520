#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/browser.py: the timeline page live and the
# `merc analyze --html` report): Debian's chromium and chromium-driver, installed once (later runs
# find /usr/bin/chromium and do nothing). Playwright drives it with executable_path=/usr/bin/chromium;
# its own browser download is never used (it cannot be fetched here), hence
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and no `playwright install`. Also axe-core from npm, pinned,
# under .tools/axe (like buf under .tools/buf): the tests inject it into the page and fail on any
# serious or critical accessibility violation.
#   browser.sh            install if missing, print the browser's and axe-core's versions
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

AXE_VERSION=4.10.3
AXE="$REPO/.tools/axe/node_modules/axe-core/axe.min.js"  # tests/browser.py reads it from here
if ! head -c 40 "$AXE" 2>/dev/null | grep -q "axe v$AXE_VERSION\$"; then
  "$REPO/deploy/retry.sh" npm install --silent --no-audit --no-fund --prefix "$REPO/.tools/axe" "axe-core@$AXE_VERSION"
fi
head -c 40 "$AXE" | grep -q "axe v$AXE_VERSION\$" || { echo "browser.sh: no axe-core $AXE_VERSION at $AXE after the install" >&2; exit 1; }
echo "axe-core $AXE_VERSION"
