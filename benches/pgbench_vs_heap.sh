#!/usr/bin/env bash
# pgbench with memory tables beside heap tables, same server, same scale, same run;
# prints tps and the memory/heap ratio for
#   -S          select-only (point lookups by primary key)
#   -N          simple-update (3 statements + insert, no branch/teller updates)
#   tpcb-like   TPC-B-like (hot branch and teller rows: row-lock queues)
# The heap side is database memfdw_bench_heap (pgbench -i); the memory side is
# database memfdw_bench_mem, whose pgbench_* tables are memory tables with the same
# keys, filled with the same rows. Uses the cluster of scripts/pg.sh.
# BENCH_SCALE (default 10), BENCH_SECONDS (default 10), BENCH_CLIENTS (default 8);
# BENCH_KEEP=1 keeps both databases for further runs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG="$ROOT/scripts/pg.sh"
SCALE="${BENCH_SCALE:-10}"
SECS="${BENCH_SECONDS:-10}"
CLIENTS="${BENCH_CLIENTS:-8}"
PORT="${MEMFDW_PORT:-5499}"
BIN="$(/usr/bin/pg_config --bindir)"

"$PG" start
q() { "$PG" psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
q -c "DROP DATABASE IF EXISTS memfdw_bench_heap" -c "DROP DATABASE IF EXISTS memfdw_bench_mem" \
  -c "CREATE DATABASE memfdw_bench_heap" -c "CREATE DATABASE memfdw_bench_mem"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
as_pg "$BIN/pgbench" -h /tmp -p "$PORT" -i -q -s "$SCALE" memfdw_bench_heap >/dev/null 2>&1

q -d memfdw_bench_mem <<SQL
CREATE EXTENSION memfdw;
CREATE FOREIGN TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88)) SERVER memfdw;
CREATE FOREIGN TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84)) SERVER memfdw;
CREATE FOREIGN TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84)) SERVER memfdw;
CREATE FOREIGN TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22)) SERVER memfdw;
INSERT INTO pgbench_branches SELECT b, 0, '' FROM generate_series(1, $SCALE) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, '' FROM generate_series(1, 10 * $SCALE) t;
INSERT INTO pgbench_accounts SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series(1, 100000 * $SCALE) a;
ANALYZE pgbench_branches; ANALYZE pgbench_tellers; ANALYZE pgbench_accounts;
SQL

run() { # database, pgbench mode flags -> tps
    as_pg "$BIN/pgbench" -h /tmp -p "$PORT" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" "${@:2}" "$1" 2>/dev/null |
        awk '/^tps/ { printf "%d", $3 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo "== pgbench scale $SCALE, $CLIENTS clients, ${SECS}s per run, -M prepared, synchronous_commit on"
for mode in "-S" "-N" "-b tpcb-like"; do
    # shellcheck disable=SC2086
    h=$(run memfdw_bench_heap $mode)
    # shellcheck disable=SC2086
    m=$(run memfdw_bench_mem $mode)
    echo "pgbench $mode: heap $h tps  memory $m tps  ratio x$(ratio "$m" "$h")"
done
if [ -z "${BENCH_KEEP:-}" ]; then
    q -c "DROP DATABASE memfdw_bench_heap" -c "DROP DATABASE memfdw_bench_mem"
fi
