#!/usr/bin/env bash
# PostgreSQL from Debian's package, in a cluster of our own (initdb/pg_ctl, not the system
# cluster) on 127.0.0.1:$MERC_PG_PORT, with role and database merc/merc.
#   postgres.sh start|stop|status
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user. Its
# data dir is $MERC_RUN_DIR/postgres when that user can reach it, otherwise
# /var/lib/postgresql/merc-<hash of the run dir>. The server's own log is server.log in the
# data dir (the run dir may not be writable by `postgres`); this script's log is logs/postgres.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$here/env.sh"
log="$MERC_RUN_DIR/logs/postgres.log"

find_bin() { BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); [ -n "$BIN" ] && [ -x "$BIN/initdb" ]; }

ensure_installed() {
  find_bin || { apt_install postgresql; find_bin; } || { echo "postgres: no /usr/lib/postgresql/*/bin/initdb after installing" >&2; exit 1; }
}

as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

# The data dir (created and handed to `postgres` when $1 = create).
data_dir() {
  local d="$MERC_RUN_DIR/postgres" alt
  alt="/var/lib/postgresql/merc-$(echo "$MERC_RUN_DIR" | sha256sum | cut -c1-12)"
  if [ "$(id -u)" != 0 ]; then
    [ "${1:-}" = create ] && mkdir -p "$d"
    echo "$d"; return
  fi
  if [ -f "$alt/PG_VERSION" ]; then echo "$alt"; return; fi
  if [ "${1:-}" = create ]; then
    mkdir -p "$d" && chown postgres:postgres "$d" && chmod 700 "$d"
    if ! runuser -u postgres -- test -w "$d"; then
      rmdir "$d" 2>/dev/null || true
      mkdir -p "$alt" && chown postgres:postgres "$alt" && chmod 700 "$alt"
      d=$alt
    fi
  fi
  echo "$d"
}

# Unix socket paths are limited to 107 bytes: a deep data dir puts its socket in /tmp.
socket_dir() { if [ ${#1} -le 80 ]; then echo "$1"; else echo /tmp; fi; }

# Beyond loopback (MERC_STACK_HOST, for pods): password logins from anywhere (scram, as on loopback).
allow_stack_host() {
  [ "$MERC_STACK_HOST" = 127.0.0.1 ] && return 0
  grep -q '^# deploy/local/postgres.sh: MERC_STACK_HOST' "$1/pg_hba.conf" && return 0
  printf '# deploy/local/postgres.sh: MERC_STACK_HOST\nhost all all 0.0.0.0/0 scram-sha-256\n' | as_pg tee -a "$1/pg_hba.conf" >/dev/null
}

is_up() { [ -f "$1/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }

start() {
  ensure_installed
  local dir sock
  dir=$(data_dir create)
  sock=$(socket_dir "$dir")
  if [ ! -f "$dir/PG_VERSION" ]; then
    echo "=== $(date -Is) initdb $dir" >>"$log"
    as_pg "$BIN/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$log" 2>&1 \
      || die_with_log "postgres: initdb failed" "$log"
    cat >>"$dir/postgresql.conf" <<CONF
# deploy/local/postgres.sh
listen_addresses = '127.0.0.1'
port = $MERC_PG_PORT
unix_socket_directories = '$sock'
max_connections = 100
shared_buffers = 64MB
CONF
  fi
  if is_up "$dir"; then
    echo "postgres already running (data in $dir)"
  else
    ensure_port_free postgres "$MERC_PG_PORT"
    echo "=== $(date -Is) pg_ctl start" >>"$log"
    allow_stack_host "$dir"
    local listen=127.0.0.1
    [ "$MERC_STACK_HOST" = 127.0.0.1 ] || listen="127.0.0.1,$MERC_STACK_HOST"
    as_pg "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $MERC_PG_PORT -c listen_addresses=$listen" start >>"$log" 2>&1 \
      || die_with_log "postgres did not start" "$dir/server.log"
  fi
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$MERC_PG_PORT" -t 60 || die_with_log "postgres not ready" "$dir/server.log"
  as_pg "$BIN/psql" -h "$sock" -p "$MERC_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt <<'SQL' >>"$log" 2>&1 || die_with_log "postgres: creating role/database merc failed" "$log"
SELECT 'CREATE ROLE merc LOGIN PASSWORD ''merc''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'merc') \gexec
SELECT 'CREATE DATABASE merc OWNER merc' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'merc') \gexec
SQL
  echo "postgres ready on 127.0.0.1:$MERC_PG_PORT (PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'), data in $dir)"
}

stop() {
  find_bin || return 0 # not installed: nothing of ours can be running
  local dir
  dir=$(data_dir)
  if is_up "$dir"; then
    as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >>"$log" 2>&1 || die_with_log "postgres did not stop" "$dir/server.log"
    echo "postgres stopped"
  fi
}

status() {
  local dir
  if find_bin && dir=$(data_dir) && is_up "$dir"; then
    echo "postgres running (127.0.0.1:$MERC_PG_PORT, data in $dir)"
  else
    echo "postgres stopped"
  fi
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
