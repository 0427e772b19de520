#!/usr/bin/env bash
# pip install through a wheelhouse kept between runs:
#   deploy/wheelhouse.sh PYTHON ARGUMENTS...   (what both `pip download` and `pip install` take)
# First the files are downloaded into $MERC_WHEELHOUSE (default ~/.cache/merc/wheels), retried with
# pauses (deploy/retry.sh). A file already there is not fetched again, so a retry fetches only what is
# missing, and a later install of the same pins needs no network. Then pip installs from the wheelhouse
# alone (--no-index), so what was downloaded is exactly what is installed.
# `rm -rf ~/.cache/merc/wheels` reclaims the space (a few GB: torch's CUDA build and its libraries).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py=$1
shift
house=${MERC_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/merc/wheels}
mkdir -p "$house"
# pip download takes the same arguments, with a project's path in place of `-e PATH`.
download=()
for arg in "$@"; do
  [ "$arg" = -e ] || download+=("$arg")
done
# The wheelhouse is also a source: what is already there resolves and is kept without a download.
# An older pip (a fresh venv's) ignores the variable; its own downloads are then retried whole.
PIP_RESUME_RETRIES=${PIP_RESUME_RETRIES:-10} "$here/retry.sh" "$py" -m pip download -q \
  --disable-pip-version-check --find-links "$house" -d "$house" "${download[@]}"
"$py" -m pip install -q --disable-pip-version-check --no-index --find-links "$house" "$@"
