#!/usr/bin/env bash
# sysbench's OLTP tests (lua oltp_*, --db-driver=pgsql) on heap tables and on memory
# tables, same server, same rows, same run; prints tps, errors and the memory/heap
# ratio for oltp_point_select, oltp_read_only, oltp_read_write, oltp_update_index and
# oltp_update_non_index.
# The heap side is database memfdw_sb_heap (sysbench prepare: sbtest1..N with a
# primary key and the secondary index k_N); the memory side is database memfdw_sb_mem,
# whose sbtest tables are memory tables with the same columns, keys and index, filled
# with the same rows. sysbench binds its integer parameters as it likes (the reason
# cross-type index conditions matter). Uses the cluster of scripts/pg.sh.
# SB_TABLES (default 1), SB_SIZE (default 100000), BENCH_SECONDS (default 10),
# BENCH_CLIENTS (default 8); BENCH_KEEP=1 keeps both databases.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG="$ROOT/scripts/pg.sh"
TABLES="${SB_TABLES:-1}"
SIZE="${SB_SIZE:-100000}"
SECS="${BENCH_SECONDS:-10}"
CLIENTS="${BENCH_CLIENTS:-8}"
PORT="${MEMFDW_PORT:-5499}"

command -v sysbench >/dev/null || { echo "sysbench is missing: run make setup" >&2; exit 1; }
"$PG" start
q() { "$PG" psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
q -c "DROP DATABASE IF EXISTS memfdw_sb_heap" -c "DROP DATABASE IF EXISTS memfdw_sb_mem" \
  -c "CREATE DATABASE memfdw_sb_heap" -c "CREATE DATABASE memfdw_sb_mem"

sb() { # test, database, more options...
    sysbench "$1" --db-driver=pgsql --pgsql-host=/tmp --pgsql-port="$PORT" \
        --pgsql-user=postgres --pgsql-db="$2" --tables="$TABLES" --table-size="$SIZE" "${@:3}"
}
sb oltp_common memfdw_sb_heap prepare >/dev/null

q -d memfdw_sb_mem -c "CREATE EXTENSION memfdw"
for i in $(seq 1 "$TABLES"); do
    q -d memfdw_sb_mem <<SQL
CREATE FOREIGN TABLE sbtest$i (
    id serial PRIMARY KEY,
    k integer DEFAULT 0 NOT NULL,
    c char(120) DEFAULT '' NOT NULL,
    pad char(60) DEFAULT '' NOT NULL) SERVER memfdw;
SQL
    q -d memfdw_sb_heap -c "COPY sbtest$i TO STDOUT" | q -d memfdw_sb_mem -c "COPY sbtest$i FROM STDIN"
    q -d memfdw_sb_mem -c "CREATE INDEX k_$i ON sbtest$i (k)" \
        -c "SELECT setval('sbtest${i}_id_seq', (SELECT max(id) FROM sbtest$i))" \
        -c "ANALYZE sbtest$i" >/dev/null
    q -d memfdw_sb_heap -c "ANALYZE sbtest$i"
done

run() { # test, database -> "tps errors"
    sb "$1" "$2" --threads="$CLIENTS" --time="$SECS" --report-interval=0 run 2>&1 |
        awk '/transactions:/ { gsub(/[(]/, "", $3); tps = $3 }
             /ignored errors:/ { err = $3 }
             END { printf "%s %s", (tps == "" ? 0 : tps), (err == "" ? 0 : err) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo "== sysbench $TABLES table(s) x $SIZE rows, $CLIENTS threads, ${SECS}s per run"
for t in oltp_point_select oltp_read_only oltp_read_write oltp_update_index oltp_update_non_index; do
    read -r h he <<<"$(run "$t" memfdw_sb_heap)"
    read -r m me <<<"$(run "$t" memfdw_sb_mem)"
    printf "%-22s heap %9.0f tps (%s errors)  memory %9.0f tps (%s errors)  ratio x%s\n" \
        "$t" "$h" "$he" "$m" "$me" "$(ratio "$m" "$h")"
done
if [ -z "${BENCH_KEEP:-}" ]; then
    q -c "DROP DATABASE memfdw_sb_heap" -c "DROP DATABASE memfdw_sb_mem"
fi
