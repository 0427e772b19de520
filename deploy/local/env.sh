# Defaults for the local stack; every value can be overridden from the environment.
# Every port sits below Linux's ephemeral range (32768-60999): a listener there can
# collide with the local end of some outgoing connection and fail to bind.
# Sourced by stack.sh, kafka.sh, postgres.sh, triton.sh, services.sh and test.sh.
REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
MERC_RUN_DIR="${MERC_RUN_DIR:-$REPO/.run}"

# Where Kafka and PostgreSQL are reached: loopback, or an address pods can reach
# (deploy/cluster/test.sh); with anything else they also listen beyond loopback.
MERC_STACK_HOST="${MERC_STACK_HOST:-127.0.0.1}"
MERC_KAFKA_PORT="${MERC_KAFKA_PORT:-19092}"
MERC_KAFKA_CONTROLLER_PORT="${MERC_KAFKA_CONTROLLER_PORT:-19093}"
MERC_KAFKA_PARTITIONS="${MERC_KAFKA_PARTITIONS:-3}"
MERC_KAFKA_HEAP="${MERC_KAFKA_HEAP:-512m}"
MERC_KAFKA_BOOTSTRAP="${MERC_KAFKA_BOOTSTRAP:-$MERC_STACK_HOST:$MERC_KAFKA_PORT}"
MERC_TOPIC_PREFIX="${MERC_TOPIC_PREFIX:-merc}"

MERC_PG_PORT="${MERC_PG_PORT:-25432}"
MERC_DATABASE_URL="${MERC_DATABASE_URL:-postgresql+psycopg://merc:merc@$MERC_STACK_HOST:$MERC_PG_PORT/merc}"

MERC_TRITON_HTTP_PORT="${MERC_TRITON_HTTP_PORT:-18000}"
MERC_TRITON_GRPC_PORT="${MERC_TRITON_GRPC_PORT:-18001}"
MERC_TRITON_METRICS_PORT="${MERC_TRITON_METRICS_PORT:-18002}"
MERC_TRITON_URL="${MERC_TRITON_URL:-127.0.0.1:$MERC_TRITON_GRPC_PORT}"
MERC_TRITON_START_TIMEOUT="${MERC_TRITON_START_TIMEOUT:-300}"
# cpu: every model's config.pbtxt (KIND_CPU). gpu: their configs/gpu.pbtxt (KIND_GPU; generated from
# config.pbtxt by `make model-configs`), chosen by tritonserver's --model-config-name=gpu.
MERC_TRITON_DEVICE="${MERC_TRITON_DEVICE:-cpu}"
# The text tier Triton serves (merc.models.tiers), and embedded mode loads: minilm, or mpnet (configs/mpnet.pbtxt,
# configs/gpu-mpnet.pbtxt with MERC_TRITON_DEVICE=gpu).
MERC_TEXT_TIER="${MERC_TEXT_TIER:-minilm}"
MERC_MODEL_REPOSITORY="${MERC_MODEL_REPOSITORY:-$REPO/model_repository}"
# The virtualenv the python-backend models run in (their EXECUTION_ENV_PATH) and the one
# holding tritonserver (nvidia-pytriton pins numpy<2 and more, so it is kept apart).
MERC_MODELS_VENV="${MERC_MODELS_VENV:-$REPO/.venv}"
MERC_TRITON_VENV="${MERC_TRITON_VENV:-$REPO/.venv-triton}"

mkdir -p "$MERC_RUN_DIR/logs" "$MERC_RUN_DIR/pids"

# Can something connect to 127.0.0.1:$1 right now?
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until a TCP port on 127.0.0.1 accepts connections, or fail after $2 seconds.
wait_port() {
  local port=$1 seconds=${2:-60} i
  for ((i = 0; i < seconds * 4; i++)); do
    port_open "$port" && return 0
    sleep 0.25
  done
  return 1
}

# HTTP GET http://127.0.0.1:$1$2 answers 200 (plain bash: a fresh machine may lack curl).
http_ok() {
  local status
  status=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
    printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$1" >&3
    IFS= read -r line <&3 && echo "$line"' "$1" "$2" 2>/dev/null) || return 1
  [[ $status == HTTP/1.?" 200"* ]]
}

die_with_log() {
  echo "$1; last lines of $2:" >&2
  tail -n 50 "$2" >&2 || true
  exit 1
}

# Is the pid in file $1 alive and running a command line that contains $2?
# (A stale pid file may name a pid that now belongs to something else.)
pidfile_alive() {
  local pid
  [ -f "$1" ] && pid=$(cat "$1") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# Stop the process in a pid file (if it runs $3): SIGTERM, up to 30 s to exit, then SIGKILL.
# With $4=group, whatever is left of its process group (it was started with setsid) is killed too.
stop_pidfile() {
  local name=$1 pidfile=$2 match=$3 group=${4:-} pid
  if pidfile_alive "$pidfile" "$match"; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    [ "$group" = group ] && kill -9 -- "-$pid" 2>/dev/null || true
    echo "$name stopped"
  fi
  rm -f "$pidfile"
}

# Fail early, and clearly, when someone else already listens on a port we are about to bind.
ensure_port_free() {
  local name=$1 port
  shift
  for port in "$@"; do
    if port_open "$port"; then
      echo "$name: port 127.0.0.1:$port is already taken by a process this run dir ($MERC_RUN_DIR) did not start; stop it or set another port (see deploy/local/env.sh)" >&2
      exit 1
    fi
  done
}

# podman's configuration for this sandbox, written to $1 (then exported as CONTAINERS_CONF by the
# caller), with any further TOML in $2: the sandbox may not raise rlimits (podman's default ulimits
# make every container fail to start), and crun, podman's default runtime, refuses a hybrid cgroup
# layout ("cgroups in hybrid mode not supported"), so runc runs the containers. Installs runc.
write_containers_conf() {
  command -v runc >/dev/null || apt_install runc
  mkdir -p "$(dirname "$1")"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n%s' "${2:-}" >"$1"
}

# apt-get install, with `apt-get update` at most once a day across the scripts.
apt_install() {
  local stamp="$MERC_RUN_DIR/.apt-updated"
  command -v apt-get >/dev/null || { echo "need packages $* but there is no apt-get: install them by hand" >&2; exit 1; }
  echo "installing $* (apt-get)"
  ( # stack.sh starts components in parallel: one apt-get at a time
    flock 9
    if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
      apt-get update -qq -o Acquire::Retries=5 && touch "$stamp"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Acquire::Retries=5 -o DPkg::Lock::Timeout=300 "$@" >/dev/null
  ) 9>"$MERC_RUN_DIR/.apt.lock"
}
