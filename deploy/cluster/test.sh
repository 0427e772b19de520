#!/usr/bin/env bash
# `make test-k8s`: MERC as users deploy it, on a real single-node Kubernetes cluster built here.
#   1. the images (deploy/images/build.sh: gateway, fusion, encoder, Triton; sizes reported), and
#      docker-compose.yml run on them (deploy/images/compose-test.sh: up, one conversation, down)
#   2. the cluster (deploy/cluster/cluster.sh up: control plane from the official sources,
#      containerd + runc + CNI from Debian) and the images loaded into its containerd
#   3. Kafka and PostgreSQL outside the cluster (deploy/local, listening on the node's address: the
#      chart's external settings), then tests/k8s: helm install, every pod Ready, helm test, one
#      encoder scaled and both replicas serving, helm upgrade and a fusion pod deleted while
#      conversations flow (0 lost, 0 duplicated), helm uninstall leaving nothing behind
# Report: $MERC_RUN_DIR/reports/k8s.json. Exit status: non-zero on any failure.
# Do not run it beside `make test` or `make up`: they share the local stack's ports.
#   MERC_K8S_KEEP=1         leave the cluster and the stack running afterwards (to look around)
#   MERC_K8S_MIN_FREE_GB=30 free disk it insists on before starting (see below)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
# At its peak a run holds a PyTorch layer being committed (podman, under /var/tmp and
# /var/lib/containers) and old and new images in the node's containerd (under .run): a disk that
# fills halfway fails a build after many minutes, so say so at once.
need_gb="${MERC_K8S_MIN_FREE_GB:-30}"
for dir in "$REPO" /var/lib/containers /var/tmp; do
  [ -d "$dir" ] || continue
  free_gb=$(($(df -Pk "$dir" | awk 'NR == 2 {print $4}') / 1024 / 1024))
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "test-k8s: $free_gb GB free under $dir, $need_gb GB needed (MERC_K8S_MIN_FREE_GB); free some" \
      "(podman image prune, $REPO/.run/k8s/cluster/containerd) and run again" >&2
    exit 1
  fi
done
# The node's address: pods reach Kafka and PostgreSQL there.
MERC_STACK_HOST="${MERC_STACK_HOST:-$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')}"
[ -n "$MERC_STACK_HOST" ] || { echo "test-k8s: no IPv4 address to reach this node by" >&2; exit 1; }
export MERC_STACK_HOST
# A run directory of its own: the cluster run's Kafka and PostgreSQL data stay apart from `make test`'s.
export MERC_RUN_DIR="${MERC_K8S_RUN_DIR:-$REPO/.run/k8s}"
# shellcheck source=../local/env.sh
source "$REPO/deploy/local/env.sh"
REPORTS="$REPO/.run/reports"
mkdir -p "$REPORTS"
rm -f "$REPORTS/k8s.json"
timings="$MERC_RUN_DIR/timings.json"
echo "{}" >"$timings"

timed() {
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  python3 - "$timings" "$name" "$(($(date +%s) - start))" <<'PY'
import json, sys
path, name, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = json.load(open(path)); d[name] = seconds; json.dump(d, open(path, "w"))
PY
}

stop_all() {
  [ "${MERC_K8S_KEEP:-0}" = 1 ] && { echo "test-k8s: MERC_K8S_KEEP=1: cluster and stack left running ($("$REPO/deploy/cluster/cluster.sh" env | tr '\n' ' '))"; return; }
  "$REPO/deploy/cluster/cluster.sh" down || true
  "$REPO/deploy/local/stack.sh" down kafka postgres || true
}
trap stop_all EXIT

timed images env MERC_RUN_DIR="$REPO/.run" deploy/images/build.sh
timed deploy_tools make -s deploy-tools
# docker-compose.yml on the same images first: one host, no cluster (report .run/reports/compose.json).
timed compose env MERC_RUN_DIR="$REPO/.run" deploy/images/compose-test.sh
timed cluster_up deploy/cluster/cluster.sh up
eval "$(deploy/cluster/cluster.sh env)"
export PATH="$REPO/.tools/bin:$PATH"
timed images_load deploy/cluster/cluster.sh load localhost/merc:local-gateway localhost/merc:local-fusion \
  localhost/merc:local-encoder localhost/merc-triton:local
timed stack_up deploy/local/stack.sh up kafka postgres

export MERC_K8S_CLUSTER=1 MERC_KAFKA_BOOTSTRAP MERC_DATABASE_URL
set +e
"$REPO/.venv/bin/python" -m pytest tests/k8s -p no:cacheprovider -x "$@"
status=$?
set -e
"$REPO/.venv/bin/python" - "$REPORTS/k8s.json" "$timings" "$REPORTS/images.json" "$REPORTS/compose.json" "$status" <<'PY'
import json, sys, pathlib
out, timings, images, compose, status = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
report = json.loads(out.read_text()) if out.is_file() else {}
report["setup_seconds"] = json.load(open(timings))
report["images"] = json.load(open(images))
report["compose"] = json.load(open(compose))
report["passed"] = status == 0
out.write_text(json.dumps(report, indent=2))
PY
echo "test-k8s: report in $REPORTS/k8s.json"
exit "$status"
