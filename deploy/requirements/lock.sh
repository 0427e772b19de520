#!/usr/bin/env bash
# Pins what pip resolves for REQUIREMENTS in a fresh virtualenv into OUT, a constraints file:
#   deploy/requirements/lock.sh OUT REQUIREMENT... [more pip install arguments]
# `make lock` writes both pin files this way; run `make test` after, since the pins are what the tests
# passed with. An extra `-c OLD` keeps OLD's versions where they still fit and resolves only the rest.
set -euo pipefail
out=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
"$(dirname "${BASH_SOURCE[0]}")/../retry.sh" "$work/venv/bin/python" -m pip install -q --disable-pip-version-check \
  --dry-run --ignore-installed --report "$work/plan.json" "$@"
"$work/venv/bin/python" - "$work/plan.json" "$out" "$*" <<'PY'
import json
import platform
import re
import sys

plan, out, asked = sys.argv[1:]
with open(plan) as f:
    report = json.load(f)
pins = sorted(
    f"{re.sub(r'[-_.]+', '-', item['metadata']['name']).lower()}=={item['metadata']['version']}"
    for item in report["install"]
    if "dir_info" not in item["download_info"]  # the project itself, installed from its checkout
)
env = report["environment"]
with open(out, "w") as f:
    f.write(
        f"# Written by deploy/requirements/lock.sh (`make lock`): what pip resolved for\n"
        f"#   {asked}\n"
        f"# on Python {env['python_full_version']}, {platform.system()} {env['platform_machine']}. "
        f"Pins, not requirements: pip installs only what is asked for, at these versions.\n"
    )
    f.write("\n".join(pins) + "\n")
print(f"lock: {len(pins)} pins in {out}")
PY
