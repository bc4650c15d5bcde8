#!/usr/bin/env bash
# Recovery time of a memory table with a primary key: ROWS rows (default 1000000, about
# 100 bytes of row data each) recovered (a) from the redo log only and (b) from a
# checkpoint, after kill -9 of the whole server. Prints restart-to-usable time (from
# `pg_ctl start` to the first answered query on the table) and memfdw's own summary.
# Runs its own cluster (target/pgdata-recovery, port 5497): the local demo cluster is
# never killed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${ROWS:-1000000}"
export MEMFDW_PGDATA="$ROOT/target/pgdata-recovery"
export MEMFDW_PORT=5497
export MEMFDW_MAX_MEMORY="${MEMFDW_MAX_MEMORY:-2GB}"
PG="$ROOT/scripts/pg.sh"
PGBIN="$(/usr/bin/pg_config --bindir)"
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_q() { "$PG" psql -XAtq -v ON_ERROR_STOP=1 "$@"; }

"$PG" stop
rm -rf "$MEMFDW_PGDATA"
"$PG" start
trap '"$PG" stop; rm -rf "$MEMFDW_PGDATA"' EXIT

kill9() {
    local pid
    pid=$(head -1 "$MEMFDW_PGDATA/postmaster.pid")
    pkill -9 -P "$pid" || true
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    sleep 0.2
}

restart_to_usable() { # prints seconds from pg_ctl start to an answered query
    local s e
    s=$(date +%s%N)
    # Not `pg_ctl -w`: it polls every 100 ms. Connect as soon as the server accepts
    # connections; the query itself waits for memfdw's recovery.
    as_owner "$PGBIN/pg_ctl" -D "$MEMFDW_PGDATA" -l "$MEMFDW_PGDATA/server.log" start >/dev/null
    until n=$(psql_q -c "SELECT count(*) FROM rec WHERE id = 42" 2>/dev/null); do
        sleep 0.005
        [ $(( $(date +%s%N) - s )) -lt 120000000000 ] || { echo "server did not start" >&2; exit 1; }
    done
    e=$(date +%s%N)
    [ "$n" = 1 ] || { echo "row 42 missing after recovery" >&2; exit 1; }
    awk -v ns=$((e - s)) 'BEGIN { printf "%.2f", ns / 1e9 }'
}

psql_q -c "CREATE EXTENSION memfdw" \
       -c "CREATE FOREIGN TABLE rec (id int PRIMARY KEY, v int8, pad text) SERVER memfdw"
per=$((ROWS / 10))
for i in $(seq 0 9); do
    psql_q -c "INSERT INTO rec SELECT g, g * 7, repeat('x', 80) FROM generate_series($((i * per + 1)), $(((i + 1) * per))) g"
done
psql_q -c "SELECT 'rows ' || rows || ', ' || pg_size_pretty(data_bytes) || ' of row data' FROM memfdw.tables() WHERE table_name = 'rec'"

summary() { grep "memfdw: recovered" "$MEMFDW_PGDATA/server.log" | tail -1 | sed 's/.*memfdw: /  memfdw: /'; }

kill9
echo "== from the redo log only ($ROWS rows)"
echo "  restart to usable: $(restart_to_usable) s"
summary

psql_q -c "SELECT memfdw.checkpoint()" >/dev/null
kill9
echo "== from a checkpoint ($ROWS rows)"
echo "  restart to usable: $(restart_to_usable) s"
summary
