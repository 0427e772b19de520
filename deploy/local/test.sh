#!/usr/bin/env bash
# The README's test command (`make test`): contracts, the real local stack, then every test.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
cd "$REPO"

make --no-print-directory proto-check buf-lint deploy-tools
"$here/browser.sh"  # headless Chromium for the timeline page test (Debian packages, once)

cleanup() {
  "$here/services.sh" stop all >/dev/null 2>&1 || true
  [ "${MERC_KEEP_STACK:-0}" = 1 ] || "$here/stack.sh" down all || true
}
trap cleanup EXIT
"$here/stack.sh" up all
export MERC_REQUIRE_STACK=1 MERC_KAFKA_BOOTSTRAP MERC_DATABASE_URL MERC_TRITON_URL
.venv/bin/merc db upgrade
.venv/bin/python -m pytest tests "$@"
