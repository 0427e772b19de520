#!/usr/bin/env bash
# Start/stop MERC's own services (text/audio/vision encoders, fusion, gateway) as local processes
# against the Kafka, PostgreSQL and Triton that stack.sh started.
#   services.sh start [encoder-text|encoder-audio|encoder-vision|fusion|gateway|all]
#   services.sh stop  [...]    services.sh kill NAME (SIGKILL, for fault tests)    services.sh status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
PY="${MERC_PYTHON:-$REPO/.venv/bin/python}"
mkdir -p "$MERC_RUN_DIR/logs" "$MERC_RUN_DIR/pids"

export MERC_KAFKA_BOOTSTRAP MERC_DATABASE_URL MERC_TRITON_URL
export MERC_JOIN_WINDOW_MS="${MERC_JOIN_WINDOW_MS:-1500}"

ALL=(encoder-text encoder-audio encoder-vision fusion gateway)

port_of() {
  case "$1" in
    encoder-text) echo "${MERC_TEXT_ENCODER_PORT:-28061}" ;;
    encoder-audio) echo "${MERC_AUDIO_ENCODER_PORT:-28062}" ;;
    encoder-vision) echo "${MERC_VISION_ENCODER_PORT:-28063}" ;;
    fusion) echo "${MERC_FUSION_PORT:-28070}" ;;
    gateway) echo "${MERC_GATEWAY_PORT:-28050}" ;;
  esac
}

# Each service's Prometheus /metrics (HTTP, 127.0.0.1): the encoders share one program, so each gets its own.
metrics_port_of() {
  case "$1" in
    encoder-text) echo "${MERC_TEXT_ENCODER_METRICS_PORT:-29061}" ;;
    encoder-audio) echo "${MERC_AUDIO_ENCODER_METRICS_PORT:-29062}" ;;
    encoder-vision) echo "${MERC_VISION_ENCODER_METRICS_PORT:-29063}" ;;
    fusion) echo "${MERC_FUSION_METRICS_PORT:-29070}" ;;
    gateway) echo "${MERC_GATEWAY_METRICS_PORT:-29050}" ;;
  esac
}

pid_of() { cat "$MERC_RUN_DIR/pids/$1.pid" 2>/dev/null || true; }
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start_one() {
  local name=$1 port metrics
  port=$(port_of "$name")
  metrics=$(metrics_port_of "$name")
  if alive "$name"; then echo "$name already running (pid $(pid_of "$name"))"; return; fi
  case "$name" in
    encoder-text|encoder-audio|encoder-vision)
      env MERC_ENCODER_MODALITY="${name#encoder-}" MERC_ENCODER_PORT="$port" MERC_METRICS_PORT="$metrics" nohup "$PY" -m merc.encoder >>"$MERC_RUN_DIR/logs/$name.log" 2>&1 & ;;
    fusion) env MERC_FUSION_PORT="$port" MERC_METRICS_PORT="$metrics" MERC_FUSION_INSTANCE="${MERC_FUSION_INSTANCE:-local-0}" nohup "$PY" -m merc.fusion >>"$MERC_RUN_DIR/logs/$name.log" 2>&1 & ;;
    # Audio-only utterances get their words as text (Triton's transcriber) unless MERC_TRANSCRIBE_AUDIO=false:
    # on a laptop the transcript is worth its seconds of CPU; the chart and compose leave it to the operator.
    gateway) env MERC_GATEWAY_PORT="$port" MERC_METRICS_PORT="$metrics" MERC_HTTP_PORT="${MERC_HTTP_PORT:-28080}" \
      MERC_TRANSCRIBE_AUDIO="${MERC_TRANSCRIBE_AUDIO:-true}" MERC_TEXT_ENCODER_URL="127.0.0.1:$(port_of encoder-text)" \
      MERC_AUDIO_ENCODER_URL="127.0.0.1:$(port_of encoder-audio)" MERC_VISION_ENCODER_URL="127.0.0.1:$(port_of encoder-vision)" nohup "$PY" -m merc.gateway >>"$MERC_RUN_DIR/logs/$name.log" 2>&1 & ;;
    *) echo "unknown service $name" >&2; exit 2 ;;
  esac
  echo $! >"$MERC_RUN_DIR/pids/$name.pid"
  # Ready when gRPC health says SERVING.
  for _ in $(seq 1 120); do
    if ! alive "$name"; then echo "$name exited; last log lines:" >&2; tail -n 50 "$MERC_RUN_DIR/logs/$name.log" >&2; exit 1; fi
    if "$PY" -m merc.runtime.healthcheck "127.0.0.1:$port" >/dev/null 2>&1; then echo "$name ready on 127.0.0.1:$port"; return; fi
    sleep 0.5
  done
  echo "$name not ready after 60 s; last log lines:" >&2; tail -n 50 "$MERC_RUN_DIR/logs/$name.log" >&2; exit 1
}

stop_one() {
  local name=$1 sig=${2:-TERM} p
  p=$(pid_of "$name")
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    kill "-$sig" "$p" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    echo "$name stopped"
  fi
  rm -f "$MERC_RUN_DIR/pids/$name.pid"
}

targets() { if [ "${1:-all}" = all ]; then echo "${ALL[@]}"; else echo "$1"; fi; }

cmd=${1:-status}
case "$cmd" in
  start) for s in $(targets "${2:-all}"); do start_one "$s"; done ;;
  stop) for s in $(targets "${2:-all}" | tr ' ' '\n' | tac); do stop_one "$s"; done ;;
  kill) stop_one "${2:?service name}" KILL ;;
  status) for s in "${ALL[@]}"; do if alive "$s"; then echo "$s running (pid $(pid_of "$s"))"; else echo "$s stopped"; fi; done ;;
  *) echo "usage: $0 start|stop|kill|status [service]" >&2; exit 2 ;;
esac
