#!/usr/bin/env bash
# A local PostgreSQL 15 cluster with memfdw preloaded, under target/pgdata.
#   scripts/pg.sh start     initialise (first time) and start; idempotent
#   scripts/pg.sh stop      stop it
#   scripts/pg.sh psql ...  run psql against it
#   scripts/pg.sh status
# Environment: MEMFDW_PORT (default 5499), MEMFDW_MAX_MEMORY (default 1GB).
# PostgreSQL refuses to run as root: as root, the server runs as user "postgres".
set -euo pipefail
# A Rust backtrace setting would make pgrx append backtraces to the DETAIL of every
# error the server reports; the server never needs one.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGBIN="$(/usr/bin/pg_config --bindir)"
DATA="${MEMFDW_PGDATA:-$ROOT/target/pgdata}"
PORT="${MEMFDW_PORT:-5499}"
SOCK="${MEMFDW_SOCKDIR:-/tmp}"
MAXMEM="${MEMFDW_MAX_MEMORY:-1GB}"

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

init() {
    if [ -f "$DATA/PG_VERSION" ]; then
        return
    fi
    mkdir -p "$DATA"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DATA"
    chmod 700 "$DATA"
    as_owner "$PGBIN/initdb" -D "$DATA" -A trust -U postgres --no-instructions >/dev/null
    cat >>"$DATA/postgresql.conf" <<CONF

# memfdw
shared_preload_libraries = 'memfdw'
memfdw.max_memory = '$MAXMEM'
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 50
shared_buffers = 256MB
fsync = on
CONF
}

case "${1:-start}" in
start)
    init
    SO="$(/usr/bin/pg_config --pkglibdir)/memfdw.so"
    if as_owner "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 && [ "$SO" -nt "$DATA/postmaster.pid" ]; then
        echo "memfdw.so was rebuilt: restarting the server to load it"
        as_owner "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
    if ! as_owner "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_owner "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >/dev/null
    fi
    ;;
stop-if-running)
    if [ -f "$DATA/PG_VERSION" ] && as_owner "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        echo "stopping the local memfdw cluster (memfdw.so is about to be replaced)"
        as_owner "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
stop)
    if [ -f "$DATA/PG_VERSION" ]; then
        as_owner "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
restart)
    "$0" stop
    "$0" start
    ;;
status)
    as_owner "$PGBIN/pg_ctl" -D "$DATA" status
    ;;
psql)
    shift
    exec "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -d postgres "$@"
    ;;
*)
    echo "usage: $0 start|stop|stop-if-running|restart|status|psql [args]" >&2
    exit 2
    ;;
esac
