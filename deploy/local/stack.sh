#!/usr/bin/env bash
# The real components MERC needs (Kafka, PostgreSQL, Triton), on 127.0.0.1, without Docker.
#   stack.sh up [kafka|postgres|triton|all ...]     idempotent; waits until each is ready
#   stack.sh down [kafka|postgres|triton|all ...]   stops what `up` started; idempotent
#   stack.sh status
# Ports, run dir and model repository: see env.sh. Each component has its own script
# (kafka.sh, postgres.sh, triton.sh: start|stop|status); on failure it prints the last
# 50 lines of its log and this exits non-zero. `up` starts the components in parallel
# (MERC_STACK_PARALLEL=0: one after the other).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL=(postgres kafka triton)

usage() { echo "usage: $0 up|down|status [kafka|postgres|triton|all ...]" >&2; exit 2; }

targets() {
  local c
  [ $# -eq 0 ] && set -- all
  for c in "$@"; do
    case "$c" in
      all) echo "${ALL[@]}" ;;
      kafka | postgres | triton) echo "$c" ;;
      *) usage ;;
    esac
  done
}

# Start several components side by side (most of their start-up is waiting); print each
# one's output in order; fail if any failed. MERC_STACK_PARALLEL=0 starts them one by one.
up() {
  if [ "${MERC_STACK_PARALLEL:-1}" != 1 ] || [ $# -le 1 ]; then
    for c in "$@"; do "$here/$c.sh" start; done
    return
  fi
  local tmp c rc=0
  declare -A pids
  tmp=$(mktemp -d)
  for c in "$@"; do
    "$here/$c.sh" start >"$tmp/$c" 2>&1 &
    pids[$c]=$!
  done
  for c in "$@"; do
    if ! wait "${pids[$c]}"; then rc=1; echo "--- $c failed:" >&2; cat "$tmp/$c" >&2; else cat "$tmp/$c"; fi
  done
  rm -rf "$tmp"
  return $rc
}

cmd=${1:-status}
[ $# -gt 0 ] && shift
comps=$(targets "$@") # exits on a bad name
# shellcheck disable=SC2086
case "$cmd" in
  up) up $comps ;; # word-split on purpose
  down) for c in $(echo "$comps" | tr ' ' '\n' | tac); do "$here/$c.sh" stop; done ;;
  status) for c in $comps; do "$here/$c.sh" status; done ;;
  *) usage ;;
esac
