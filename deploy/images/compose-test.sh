#!/usr/bin/env bash
# docker-compose.yml, really up on this machine: every service healthy, one conversation through the
# gateway with its events read back from Kafka, then `down -v`. Called by `make test-k8s`
# (deploy/cluster/test.sh); on its own:
#   deploy/images/compose-test.sh
# Needs MERC's four images (deploy/images/build.sh, `make images-local`) and the compose CLI
# (deploy/tools.sh, `make deploy-tools`). Report: <repo>/.run/reports/compose.json (the services
# healthy, seconds to healthy, events received, passed). Exit status: non-zero on any failure; the
# project is taken down (volumes included) whatever happens.
#
# There is no Docker engine here: compose talks to podman's Docker-compatible API
# (`podman system service`). What that needs, and this script supplies:
#   - the network backend netavark with aardvark-dns (Debian's packages): compose's network is a
#     podman bridge whose DNS answers the service names (kafka:9092, postgres:5432, triton:8001 ...).
#     The CNI dnsname plugin would do too, but netavark is podman 4's default backend, needs no CNI
#     config files, and leaves alone the CNI directory of a Kubernetes node on the same machine;
#   - healthchecks run: podman runs them from systemd timers, and there is no systemd here, so the
#     containers would stay `starting` and `depends_on: service_healthy` would never be met. A poller
#     below runs `podman healthcheck run` for every container of the project at its own interval,
#     which is what the timer does (podman still applies start_period and retries);
#   - apache/kafka:4.4.0 and postgres:15.14-bookworm cannot be pulled: local stand-ins are built
#     under those names (bases/kafka.Containerfile, bases/postgres.Containerfile say what they keep).
#     docker-compose.yml itself is run as users run it, with `--no-build` (the images are built).
# Published ports: the file's (127.0.0.1:28050, 28080, 29092, 25432, 18002) when they are free. The
# local stack (`make up`, test-k8s's Kafka and PostgreSQL) binds some of the same; rather than fail
# beside it, each published port then moves 1000 lower (an override file; Kafka's advertised host
# listener follows), and the report says which ports were used.
#   MERC_COMPOSE_TIMEOUT   seconds allowed for every service to become healthy (default 900)
#   MERC_CLI               the merc command that sends the conversation (default <repo>/.venv/bin/merc)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
# shellcheck source=../local/env.sh
source "$REPO/deploy/local/env.sh"
here="$REPO/deploy/images"
work="$MERC_RUN_DIR/compose-test"
log="$MERC_RUN_DIR/logs/compose-test.log"
REPORTS="$REPO/.run/reports"
report="$REPORTS/compose.json"
project="merc-compose-test"
timeout_s="${MERC_COMPOSE_TIMEOUT:-900}"
MERC_CLI="${MERC_CLI:-$REPO/.venv/bin/merc}"
COMPOSE="${MERC_COMPOSE:-$REPO/.tools/bin/docker-compose}"
mkdir -p "$work" "$REPORTS"
rm -f "$report"
: >"$log"

step() { echo "compose-test: $*"; echo "=== $(date -Is) $*" >>"$log"; }
run() { "$@" >>"$log" 2>&1 || die_with_log "compose-test: '$*' failed" "$log"; }

export CONTAINERS_CONF="$work/containers.conf"
write_containers_conf "$CONTAINERS_CONF" $'\n[network]\nnetwork_backend = "netavark"\n'

command -v podman >/dev/null || apt_install podman
[ -x /usr/lib/podman/aardvark-dns ] || apt_install netavark aardvark-dns
[ -x "$COMPOSE" ] || "$REPO/deploy/tools.sh"
[ -x "$MERC_CLI" ] || { echo "compose-test: no $MERC_CLI ('make install' creates it)" >&2; exit 1; }

# ---- the two stand-in bases ---------------------------------------------------------------------------
compose_image() { sed -n "s|^    image: \($1[^ ]*\)$|\1|p" "$REPO/docker-compose.yml" | head -n 1; }
KAFKA_IMAGE=$(compose_image apache/kafka)
POSTGRES_IMAGE=$(compose_image postgres)
[ -n "$KAFKA_IMAGE" ] && [ -n "$POSTGRES_IMAGE" ] || { echo "compose-test: docker-compose.yml names no apache/kafka or postgres image" >&2; exit 1; }
podman image exists localhost/merc-test/debian:bookworm \
  || { echo "compose-test: no localhost/merc-test/debian:bookworm: run deploy/images/build.sh (make images-local) first" >&2; exit 1; }

ctx="$work/bases"
mkdir -p "$ctx"
stamp=$(sha256sum "$REPO/deploy/local/kafka/pom.xml" | cut -c1-16)
if [ ! -f "$ctx/libs/.$stamp" ]; then
  step "Kafka jars (deploy/local/kafka/pom.xml, Maven; cached in ~/.m2)"
  command -v mvn >/dev/null || apt_install maven openjdk-17-jre-headless
  rm -rf "$ctx/libs" && mkdir -p "$ctx/libs"
  run mvn -q -B -f "$REPO/deploy/local/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$ctx/libs"
  touch "$ctx/libs/.$stamp"
fi
rm -rf "$ctx/kafka" && cp -a "$here/bases/kafka" "$ctx/kafka"
cp "$here/bases/postgres-entrypoint.sh" "$ctx/"
# A name without a registry is Docker Hub's: that is the name compose asks the engine for.
step "stand-in docker.io/$KAFKA_IMAGE (bases/kafka.Containerfile)"
run podman build --pull=never -f "$here/bases/kafka.Containerfile" -t "docker.io/$KAFKA_IMAGE" "$ctx"
step "stand-in docker.io/library/$POSTGRES_IMAGE (bases/postgres.Containerfile)"
run podman build --pull=never -f "$here/bases/postgres.Containerfile" -t "docker.io/library/$POSTGRES_IMAGE" "$ctx"

# ---- the report (written whatever happens) ---------------------------------------------------------
healthy_s="" events=0 analyze_status=-1 up_status="" shift_ports=0 GATEWAY_PORT=28050 KAFKA_PORT=29092
write_report() {
  local passed=$1
  python3 - "$report" "$work/ps.json" "$passed" "$healthy_s" "$events" "$(grep -c . examples/conversation.jsonl)" \
    "$analyze_status" "$shift_ports" "$GATEWAY_PORT" "$KAFKA_PORT" "$up_status" <<'PY'
import json, sys, pathlib
out, ps, passed, healthy_s, events, lines, analyze, shift, gw, kafka, up = sys.argv[1:12]
rows = []
p = pathlib.Path(ps)
if p.is_file():
    text = p.read_text().strip()
    # compose prints one JSON object per line (older releases: one array)
    rows = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
report = {
    "services_healthy": sorted(r["Service"] for r in rows if r.get("Health") == "healthy"),
    "services_completed": sorted(r["Service"] for r in rows if r.get("State") == "exited" and r.get("ExitCode") == 0),
    "services_other": {r["Service"]: f'{r.get("State")} {r.get("Health") or ""}'.strip()
                       for r in rows if r.get("Health") != "healthy"
                       and not (r.get("State") == "exited" and r.get("ExitCode") == 0)},
    "seconds_to_healthy": int(healthy_s) if up == "0" and healthy_s else None,
    "up_exit_status": int(up) if up else None,
    "conversation_lines": int(lines),
    "events_received": int(events),
    "analyze_exit_status": int(analyze),
    "published_ports_shifted_by": int(shift),
    "gateway": f"127.0.0.1:{gw}", "kafka": f"127.0.0.1:{kafka}",
    "passed": passed == "true",
}
pathlib.Path(out).write_text(json.dumps(report, indent=2) + "\n")
PY
}

# ---- podman's Docker API, and the teardown ------------------------------------------------------------
sock="$work/podman.sock"
service_pid="" poller_pid=""
compose_args=(-p "$project" -f "$REPO/docker-compose.yml")
compose() { DOCKER_HOST="unix://$sock" "$COMPOSE" "${compose_args[@]}" "$@"; }

teardown() {
  local status=$?
  set +e
  if [ -n "$service_pid" ]; then
    compose ps -a >>"$log" 2>&1
    compose logs --no-color --timestamps >"$work/services.log" 2>&1
    step "down -v (services' logs in $work/services.log)"
    compose down -v --remove-orphans --timeout 20 >>"$log" 2>&1 || echo "compose-test: 'down -v' failed (see $log)" >&2
  fi
  [ -n "$poller_pid" ] && kill "$poller_pid" 2>/dev/null
  [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null
  rm -f "$sock"
  [ -f "$report" ] || write_report false
  exit "$status"
}
trap teardown EXIT

step "podman system service on $sock"
rm -f "$sock"
setsid podman system service --time=0 "unix://$sock" >>"$log" 2>&1 </dev/null &
service_pid=$!
for _ in $(seq 1 60); do [ -S "$sock" ] && break; sleep 0.5; done
[ -S "$sock" ] || die_with_log "compose-test: podman system service did not open $sock" "$log"

# Every image by the name compose asks the engine for (podman resolves merc:local-gateway to
# localhost/merc:local-gateway): one missing would be pulled, and fail, deep inside `up`.
# shellcheck disable=SC2046 # one argument per image
missing=$(python3 - "$sock" $(compose config --images | sort -u) <<'PY'
import http.client, socket, sys

class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])

for image in sys.argv[2:]:
    engine = Engine("engine")
    engine.request("GET", f"/v1.41/images/{image}/json")
    if engine.getresponse().status != 200:
        print(image)
PY
)
[ -z "$missing" ] || { echo "compose-test: the engine has no image" $missing "(MERC's four: deploy/images/build.sh)" >&2; exit 1; }

# ---- published ports ----------------------------------------------------------------------------------
compose config --format json >"$work/config.json"
ports=$(python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["services"].values():
    for p in s.get("ports", []):
        print(p["published"])' "$work/config.json")
busy=""
for port in $ports; do port_open "$port" && busy="$busy $port"; done
if [ -n "$busy" ]; then
  shift_ports=1000
  step "ports${busy} are taken (the local stack?): publishing every port $shift_ports lower"
  python3 - "$work/config.json" "$shift_ports" >"$work/ports.override.yml" <<'PY'
import json, sys
services, shift = json.load(open(sys.argv[1]))["services"], int(sys.argv[2])
print("services:")
for name, s in services.items():
    if not s.get("ports"):
        continue
    print(f"  {name}:\n    ports: !override")
    moved = {}
    for p in s["ports"]:
        new = int(p["published"]) - shift
        moved[f"127.0.0.1:{p['published']}"] = f"127.0.0.1:{new}"
        print(f"      - \"{p.get('host_ip', '127.0.0.1')}:{new}:{p['target']}\"")
    # Kafka tells clients where to reconnect: its host listener moves with the port.
    env = {k: v for k, v in (s.get("environment") or {}).items() if v and any(o in v for o in moved)}
    if env:
        print("    environment:")
        for k, v in env.items():
            for old, new in moved.items():
                v = v.replace(old, new)
            print(f"      {k}: \"{v}\"")
PY
  compose_args+=(-f "$work/ports.override.yml")
  compose config --format json >"$work/config.json"
  ports=$(python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["services"].values():
    for p in s.get("ports", []):
        print(p["published"])' "$work/config.json")
  for port in $ports; do
    ! port_open "$port" || { echo "compose-test: port 127.0.0.1:$port is taken too" >&2; exit 1; }
  done
fi
published() { python3 -c 'import json, sys
for p in json.load(open(sys.argv[1]))["services"][sys.argv[2]]["ports"]:
    if int(p["target"]) == int(sys.argv[3]):
        print(p["published"])' "$work/config.json" "$1" "$2"; }
GATEWAY_PORT=$(published gateway 28050)
KAFKA_PORT=$(published kafka 29092)

# ---- healthchecks, as podman's systemd timer would run them ---------------------------------------
seconds() { # a Go duration as podman prints it (10s, 1m0s) -> whole seconds
  local d=$1 s=0
  [[ $d =~ ([0-9]+)m ]] && s=$((s + 60 * BASH_REMATCH[1]))
  [[ $d =~ ([0-9.]+)s$ ]] && s=$((s + ${BASH_REMATCH[1]%.*}))
  echo $((s > 0 ? s : 10))
}
health_poller() {
  declare -A next pid
  local now id interval ids
  while :; do
    now=$(date +%s)
    ids=$(podman ps -q --filter "label=com.docker.compose.project=$project" 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086 # $ids: one argument per container
      while read -r id interval; do
        [[ -n $interval && $interval != "<no value>" ]] || continue
        (( now >= ${next[$id]:-0} )) || continue
        [ -n "${pid[$id]:-}" ] && kill -0 "${pid[$id]}" 2>/dev/null && continue
        next[$id]=$((now + $(seconds "$interval")))
        podman healthcheck run "$id" >/dev/null 2>&1 &
        pid[$id]=$!
      done < <(podman inspect --format '{{.Id}} {{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval}}{{else}}<no value>{{end}}' $ids 2>/dev/null || true)
    fi
    sleep 1
  done
}
health_poller &
poller_pid=$!

# ---- up ---------------------------------------------------------------------------------------------
step "up -d --no-build --wait (at most ${timeout_s}s)"
start=$(date +%s)
set +e
compose up -d --no-build --wait --wait-timeout "$timeout_s" >>"$log" 2>&1
up_status=$?
set -e
healthy_s=$(($(date +%s) - start))
compose ps -a --format json >"$work/ps.json" 2>>"$log" || true

# ---- one conversation ---------------------------------------------------------------------------------
if [ "$up_status" = 0 ]; then
  step "all healthy after ${healthy_s}s; examples/conversation.jsonl through 127.0.0.1:$GATEWAY_PORT, its events back on the stream"
  set +e
  "$MERC_CLI" analyze --remote "127.0.0.1:$GATEWAY_PORT" \
    --timeout 120 --json examples/conversation.jsonl >"$work/events.jsonl" 2>>"$log"
  analyze_status=$?
  set -e
  events=$(grep -c . "$work/events.jsonl" || true)
else
  step "up failed (status $up_status) after ${healthy_s}s"
fi


passed=false
[ "$up_status" = 0 ] && [ "$analyze_status" = 0 ] && passed=true
write_report "$passed"
step "report in $report"
cat "$report"
[ "$passed" = true ] || { echo "compose-test: FAILED (log $log, services' logs $work/services.log)" >&2; exit 1; }
