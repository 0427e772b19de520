#!/usr/bin/env bash
# Triton Inference Server from the nvidia-pytriton wheel (its bundled tritonserver and python
# backend), in its own virtualenv .venv-triton, serving $MERC_MODEL_REPOSITORY on 127.0.0.1.
#   triton.sh start|stop|status
#
# Python models run in the project's virtualenv: their config.pbtxt names it with
#   parameters: { key: "EXECUTION_ENV_PATH", value: { string_value: "$$TRITON_MODEL_DIRECTORY/../../.venv" } }
# The backend runs `source <env>/bin/activate && exec env LD_LIBRARY_PATH=<env>/lib:$LD_LIBRARY_PATH
# triton_python_backend_stub ...` (a plain venv directory works; no tar.gz needed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
log="$MERC_RUN_DIR/logs/triton.log"
pidfile="$MERC_RUN_DIR/pids/triton.pid"
VENV="$MERC_TRITON_VENV"
PYTRITON_VERSION=0.7.0

running() { pidfile_alive "$pidfile" tritonserver; }

install() {
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pytriton" 2>/dev/null; then
    echo "triton: installing nvidia-pytriton==$PYTRITON_VERSION into $VENV (the wheelhouse makes the next time offline)"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$REPO/deploy/wheelhouse.sh" "$VENV/bin/python" -c "$REPO/deploy/requirements/triton-local.txt" \
      "nvidia-pytriton==$PYTRITON_VERSION" >>"$log" 2>&1 \
      || die_with_log "triton: pip install nvidia-pytriton failed" "$log"
  fi
  SERVER_DIR=$("$VENV/bin/python" -c "import pytriton, pathlib; print(pathlib.Path(pytriton.__file__).parent / 'tritonserver')")
  LIBS=$(cd "$SERVER_DIR/../.." && pwd)/nvidia_pytriton.libs
  # The stub must match the Python of the models' virtualenv (3.11 here).
  local pyver=3.11 stub="$SERVER_DIR/backends/python/triton_python_backend_stub"
  [ -x "$MERC_MODELS_VENV/bin/python" ] && pyver=$("$MERC_MODELS_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ -f "$SERVER_DIR/python_backend_stubs/$pyver/triton_python_backend_stub" ] \
    || { echo "triton: pytriton ships no python backend stub for Python $pyver" >&2; exit 1; }
  if ! cmp -s "$SERVER_DIR/python_backend_stubs/$pyver/triton_python_backend_stub" "$stub"; then
    cp "$SERVER_DIR/python_backend_stubs/$pyver/triton_python_backend_stub" "$stub"
  fi
  # The stub links libpython$pyver.so.1.0 (Debian package libpython$pyver; models with an
  # EXECUTION_ENV_PATH get their interpreter's own one, see link_libpython).
  if ! ls /usr/lib/*-linux-gnu/libpython"$pyver".so.1.0 >/dev/null 2>&1; then
    apt_install "libpython$pyver"
  fi
  link_libpython
}

# The shared libpython of the interpreter that made the models' virtualenv, if it has one.
models_libpython() {
  [ -x "$MERC_MODELS_VENV/bin/python" ] || return 0
  "$MERC_MODELS_VENV/bin/python" -c "import sysconfig, os; v = sysconfig.get_config_var; p = os.path.join(v('LIBDIR') or '', v('INSTSONAME') or ''); print(p if v('Py_ENABLE_SHARED') and os.path.isfile(p) else '')"
}

# The stub runs with <env>/lib first on LD_LIBRARY_PATH but with the standard library of the
# interpreter that made the venv. A link there to that interpreter's own libpython keeps the
# two the same version (Debian's 3.11.2 libpython cannot load a newer 3.11's compiled stdlib
# modules, e.g. pyenv's 3.11.7).
link_libpython() {
  local lib
  if [ ! -x "$MERC_MODELS_VENV/bin/python" ]; then
    echo "triton: warning: no $MERC_MODELS_VENV yet ('make install' makes it); python models that name it in EXECUTION_ENV_PATH will not load" >&2
    return 0
  fi
  lib=$(models_libpython)
  if [ -n "$lib" ] && [ "$(readlink "$MERC_MODELS_VENV/lib/$(basename "$lib")" 2>/dev/null)" != "$lib" ]; then
    ln -sfn "$lib" "$MERC_MODELS_VENV/lib/$(basename "$lib")"
  fi
}

# The log's tail is mostly tables: repeat the error lines of the last start after it.
die_triton() {
  local errors
  errors=$(awk '/^=== .* tritonserver start/ { n = 0 } /^E[0-9][0-9][0-9][0-9] / { e[++n] = $0 } END { for (i = 1; i <= n; i++) print e[i] }' "$log" 2>/dev/null | tail -n 20)
  { tail -n 50 "$log"; [ -z "$errors" ] || printf '\nerrors of this start:\n%s\n' "$errors"; } >&2
  echo "$1 (full log: $log)" >&2
  exit 1
}

# Whether the launched process lives. Not `running`: for a moment after `launch` the child has not
# exec'd tritonserver yet (its command line is still this script's), and the name check then called
# a starting server gone: a second one was launched beside it and the start failed on a busy machine.
launched_alive() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# 0 ready; 1 the server exited; the timeout is fatal.
wait_ready() {
  local i
  for ((i = 0; i < MERC_TRITON_START_TIMEOUT * 2; i++)); do
    launched_alive || return 1
    http_ok "$MERC_TRITON_HTTP_PORT" /v2/health/ready && return 0
    sleep 0.5
  done
  die_triton "triton not ready after $MERC_TRITON_START_TIMEOUT s"
}

launch() {
  local config=() device_args=()
  case "$MERC_TRITON_DEVICE" in
    cpu) ;;
    gpu) config+=(gpu) ;;
    *) echo "triton: MERC_TRITON_DEVICE must be cpu or gpu, not '$MERC_TRITON_DEVICE'" >&2; exit 2 ;;
  esac
  case "$MERC_TEXT_TIER" in
    minilm) ;;
    mpnet) config+=(mpnet) ;;
    *) echo "triton: MERC_TEXT_TIER must be minilm or mpnet, not '$MERC_TEXT_TIER'" >&2; exit 2 ;;
  esac
  # Each model's configs/<name>.pbtxt (merc.models.triton_configs): gpu, mpnet or gpu-mpnet.
  if ((${#config[@]})); then
    device_args=(--model-config-name="$(IFS=-; echo "${config[*]}")")
  fi
  echo "=== $(date -Is) tritonserver start, models from $MERC_MODEL_REPOSITORY ($MERC_TRITON_DEVICE configs, text tier $MERC_TEXT_TIER)" >>"$log"
  # setsid: its own process group, so `stop` also ends python-backend stubs it leaves behind.
  # nvidia_pytriton.libs holds the bundled shared libraries (CUDA runtime stub, etc.).
  LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" nohup setsid "$SERVER_DIR/bin/tritonserver" \
    --model-repository="$MERC_MODEL_REPOSITORY" \
    --backend-directory="$SERVER_DIR/backends" \
    --http-address=127.0.0.1 --http-port="$MERC_TRITON_HTTP_PORT" \
    --grpc-address=127.0.0.1 --grpc-port="$MERC_TRITON_GRPC_PORT" \
    --metrics-address=127.0.0.1 --metrics-port="$MERC_TRITON_METRICS_PORT" \
    --allow-metrics=true --allow-gpu-metrics=false --log-verbose=0 "${device_args[@]}" \
    >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

start() {
  if running; then
    echo "triton already running (pid $(cat "$pidfile"))"
    wait_ready || die_triton "tritonserver exited"
  else
    rm -f "$pidfile"
    ensure_port_free triton "$MERC_TRITON_HTTP_PORT" "$MERC_TRITON_GRPC_PORT" "$MERC_TRITON_METRICS_PORT"
    install
    mkdir -p "$MERC_MODEL_REPOSITORY"
    launch
    if ! wait_ready; then
      # Seen once: a python-backend stub died importing torch while four models loaded
      # side by side ("could not parse dispatch key"); a second start came up.
      echo "triton: the server exited while loading models; starting it once more (log: $log)" >&2
      stop_pidfile triton "$pidfile" tritonserver group >/dev/null 2>&1 || true
      launch
      wait_ready || die_triton "tritonserver exited"
    fi
  fi
  echo "triton ready on 127.0.0.1:$MERC_TRITON_GRPC_PORT gRPC / $MERC_TRITON_HTTP_PORT HTTP, models: $(ls "$MERC_MODEL_REPOSITORY" | tr '\n' ' ')"
}

case "${1:-status}" in
  start) start ;;
  stop) stop_pidfile triton "$pidfile" tritonserver group ;;
  status) if running; then echo "triton running (pid $(cat "$pidfile"), 127.0.0.1:$MERC_TRITON_GRPC_PORT)"; else echo "triton stopped"; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
