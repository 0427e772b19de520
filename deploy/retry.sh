#!/usr/bin/env bash
# deploy/retry.sh COMMAND...: runs COMMAND again, after a growing pause, while it fails; five tries.
# For downloads from the package registries. A connection that drops mid-file fails pip at once, and
# its own resumes follow each other without a pause: CI stop 29 gave up on torch's 539 MB wheel after
# six cuts at 475 MB, all within seconds. A pause gives the registry's mirror time to recover.
set -uo pipefail
tries=${MERC_RETRY_TRIES:-5}
pause=${MERC_RETRY_PAUSE:-15}  # seconds, times the try's number
for ((i = 1; ; i++)); do
  "$@" && exit 0
  rc=$?
  if [ "$i" -ge "$tries" ]; then
    echo "retry: gave up after $tries tries (exit $rc): $*" >&2
    exit "$rc"
  fi
  echo "retry: try $i of $tries failed (exit $rc), again in $((pause * i)) s: $*" >&2
  sleep $((pause * i))
done
