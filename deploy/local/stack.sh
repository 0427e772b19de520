#!/usr/bin/env bash
# The real components MERC needs, on 127.0.0.1, without Docker.
#   stack.sh up [kafka|postgres|triton|all]     idempotent; waits until ready
#   stack.sh down [kafka|postgres|triton|all]   stops what `up` started
#   stack.sh status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL=(postgres kafka triton)

targets() { if [ "${1:-all}" = all ]; then echo "${ALL[@]}"; else echo "$1"; fi; }

case "${1:-status}" in
  up) for c in $(targets "${2:-all}"); do "$here/$c.sh" start; done ;;
  down) for c in $(targets "${2:-all}" | tr ' ' '\n' | tac); do "$here/$c.sh" stop; done ;;
  status) for c in "${ALL[@]}"; do "$here/$c.sh" status; done ;;
  *) echo "usage: $0 up|down|status [kafka|postgres|triton|all]" >&2; exit 2 ;;
esac
