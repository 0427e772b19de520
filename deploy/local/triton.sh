#!/usr/bin/env bash
# Triton Inference Server from the nvidia-pytriton wheel (its bundled tritonserver, python
# backend), in its own virtualenv .venv-triton, serving model_repository/ on 127.0.0.1.
#   triton.sh start|stop|status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
log="$MERC_RUN_DIR/logs/triton.log"
pidfile="$MERC_RUN_DIR/pids/triton.pid"
VENV="${MERC_TRITON_VENV:-$REPO/.venv-triton}"
PYTRITON_VERSION=0.7.0

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

install() {
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pytriton" 2>/dev/null; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "nvidia-pytriton==$PYTRITON_VERSION"
  fi
  # The python backend stub links libpython3.11.so.1.0 (Debian's, unless link_libpython finds the venv's).
  if ! ls /usr/lib/*-linux-gnu/libpython3.11.so.1.0 >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11 >/dev/null
  fi
  SERVER_DIR=$("$VENV/bin/python" -c "import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent / 'tritonserver')")
  LIBS="$SERVER_DIR/../../nvidia_pytriton.libs"
  link_libpython
  local stub="$SERVER_DIR/backends/python/triton_python_backend_stub"
  if ! cmp -s "$SERVER_DIR/python_backend_stubs/3.11/triton_python_backend_stub" "$stub"; then
    cp "$SERVER_DIR/python_backend_stubs/3.11/triton_python_backend_stub" "$stub"
  fi
}

# The models run in the project's virtualenv (EXECUTION_ENV_PATH), whose standard library
# belongs to the interpreter that made it. The stub prepends <env>/lib to its library path,
# so a link there to that interpreter's own libpython keeps the two from mixing versions
# (Debian's 3.11.2 libpython cannot load a newer 3.11's compiled stdlib modules).
link_libpython() {
  local venv="${MERC_MODELS_VENV:-$REPO/.venv}" lib
  [ -x "$venv/bin/python" ] || { echo "no $venv: run 'make install' first" >&2; exit 1; }
  lib=$("$venv/bin/python" -c "import sysconfig, os; p = os.path.join(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME') or ''); print(p if sysconfig.get_config_var('Py_ENABLE_SHARED') and os.path.isfile(p) else '')")
  if [ -n "$lib" ]; then
    ln -sf "$lib" "$venv/lib/$(basename "$lib")"
  fi
}

start() {
  if running; then echo "triton already running (pid $(cat "$pidfile"))"; return; fi
  install
  mkdir -p "$MERC_MODEL_REPOSITORY"
  # The python models run in the project's .venv (their config names it as
  # EXECUTION_ENV_PATH); the stub finds the bundled CUDA-runtime stubs here.
  LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}" nohup "$SERVER_DIR/bin/tritonserver" \
    --model-repository="$MERC_MODEL_REPOSITORY" \
    --backend-directory="$SERVER_DIR/backends" \
    --http-address=127.0.0.1 --http-port="$MERC_TRITON_HTTP_PORT" \
    --grpc-address=127.0.0.1 --grpc-port="$MERC_TRITON_GRPC_PORT" \
    --metrics-address=127.0.0.1 --metrics-port="$MERC_TRITON_METRICS_PORT" \
    --allow-metrics=true --log-verbose=0 \
    >>"$log" 2>&1 &
  echo $! >"$pidfile"
  local i
  for ((i = 0; i < 360; i++)); do
    running || die_with_log "tritonserver exited" "$log"
    if curl -sf "http://127.0.0.1:$MERC_TRITON_HTTP_PORT/v2/health/ready" >/dev/null 2>&1; then
      echo "triton ready on $MERC_TRITON_URL (gRPC), models: $(ls "$MERC_MODEL_REPOSITORY" | tr '\n' ' ')"
      return
    fi
    sleep 0.5
  done
  die_with_log "triton not ready after 180 s" "$log"
}

stop() {
  stop_pidfile triton "$pidfile"
  # python-backend stubs outlive a killed server
  pkill -9 -f triton_python_backend_stub 2>/dev/null || true
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "triton running (pid $(cat "$pidfile"))"; else echo "triton stopped"; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
