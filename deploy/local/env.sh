# Defaults for the local stack; every value can be overridden from the environment.
# Every port sits below Linux's ephemeral range (32768-60999): a listener there can
# collide with the local end of some outgoing connection and fail to bind.
# Sourced by stack.sh, kafka.sh, postgres.sh, triton.sh, services.sh and test.sh.
REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
MERC_RUN_DIR="${MERC_RUN_DIR:-$REPO/.run}"

MERC_KAFKA_PORT="${MERC_KAFKA_PORT:-19092}"
MERC_KAFKA_CONTROLLER_PORT="${MERC_KAFKA_CONTROLLER_PORT:-19093}"
MERC_KAFKA_PARTITIONS="${MERC_KAFKA_PARTITIONS:-3}"
MERC_KAFKA_BOOTSTRAP="${MERC_KAFKA_BOOTSTRAP:-127.0.0.1:$MERC_KAFKA_PORT}"

MERC_PG_PORT="${MERC_PG_PORT:-25432}"
MERC_DATABASE_URL="${MERC_DATABASE_URL:-postgresql+psycopg://merc:merc@127.0.0.1:$MERC_PG_PORT/merc}"

MERC_TRITON_HTTP_PORT="${MERC_TRITON_HTTP_PORT:-18000}"
MERC_TRITON_GRPC_PORT="${MERC_TRITON_GRPC_PORT:-18001}"
MERC_TRITON_METRICS_PORT="${MERC_TRITON_METRICS_PORT:-18002}"
MERC_TRITON_URL="${MERC_TRITON_URL:-127.0.0.1:$MERC_TRITON_GRPC_PORT}"
MERC_MODEL_REPOSITORY="${MERC_MODEL_REPOSITORY:-$REPO/model_repository}"

mkdir -p "$MERC_RUN_DIR/logs" "$MERC_RUN_DIR/pids"

# Wait until a TCP port on 127.0.0.1 accepts connections, or fail after $2 seconds.
wait_port() {
  local port=$1 seconds=${2:-60} i
  for ((i = 0; i < seconds * 4; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.25
  done
  return 1
}

die_with_log() {
  echo "$1; last lines of $2:" >&2
  tail -n 50 "$2" >&2 || true
  exit 1
}

# Stop the process in a pid file: SIGTERM, up to 30 s to exit, then SIGKILL.
stop_pidfile() {
  local name=$1 pidfile=$2 pid
  if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    echo "$name stopped"
  fi
  rm -f "$pidfile"
}
