#!/usr/bin/env bash
# PostgreSQL from Debian's package, in a cluster of our own on 127.0.0.1 (not the system one).
#   postgres.sh start|stop|status
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
log="$MERC_RUN_DIR/logs/postgres.log"  # ours; the server's own log is in its data dir

ensure_installed() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing PostgreSQL from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
}

# PostgreSQL refuses to run as root: it runs as the `postgres` user, which must reach the data dir.
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

data_dir() {
  local d="$MERC_RUN_DIR/postgres"
  mkdir -p "$d"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$d"
    if ! runuser -u postgres -- test -w "$d"; then
      d="/var/lib/postgresql/merc-$(echo "$REPO" | sha256sum | cut -c1-12)"
      mkdir -p "$d" && chown postgres:postgres "$d"
    fi
  fi
  echo "$d"
}

start() {
  ensure_installed
  local dir
  dir=$(data_dir)
  local server_log="$dir/server.log"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_pg "$BIN/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >>"$log" 2>&1 \
      || die_with_log "initdb failed" "$log"
    cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $MERC_PG_PORT
unix_socket_directories = '$dir'
max_connections = 100
fsync = on
CONF
  fi
  if as_pg "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    echo "postgres already running"
  else
    as_pg "$BIN/pg_ctl" -D "$dir" -l "$server_log" -w -t 60 -o "-p $MERC_PG_PORT" start >>"$log" 2>&1 || die_with_log "postgres did not start" "$server_log"
  fi
  "$BIN/pg_isready" -h 127.0.0.1 -p "$MERC_PG_PORT" -t 30 >/dev/null || die_with_log "postgres not ready" "$server_log"
  as_pg "$BIN/psql" -h "$dir" -p "$MERC_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<'SQL' >>"$log" 2>&1 || die_with_log "creating role/database failed" "$log"
SELECT 'CREATE ROLE merc LOGIN PASSWORD ''merc''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'merc') \gexec
SELECT 'CREATE DATABASE merc OWNER merc' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'merc') \gexec
SQL
  echo "postgres ready on 127.0.0.1:$MERC_PG_PORT ($("$BIN/postgres" --version | awk '{print $3}'), data in $dir)"
}

stop() {
  ensure_installed
  local dir
  dir=$(data_dir)
  if [ -f "$dir/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null && echo "postgres stopped"
  fi
}

status() {
  ensure_installed
  if as_pg "$BIN/pg_ctl" -D "$(data_dir)" status >/dev/null 2>&1; then echo "postgres running"; else echo "postgres stopped"; fi
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
