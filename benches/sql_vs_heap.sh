#!/usr/bin/env bash
# Memory tables vs heap tables on the same server in the same run; prints ratios.
# Uses the local cluster of scripts/pg.sh (started if needed). BENCH_SECONDS sets the
# duration of each pgbench run (default 10); BENCH_CLIENTS the client count (default 4).
#
# Neither table has an index: this compares single-row insert transactions (OLTP
# write path, commit included), bulk insert, and full scans (aggregates computed in
# memory, conditions checked by the engine's row filter or by PostgreSQL).
set -euo pipefail
shopt -s inherit_errexit  # a failed statement inside $(timed ...) stops the script
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG="$ROOT/scripts/pg.sh"
SECS="${BENCH_SECONDS:-10}"
CLIENTS="${BENCH_CLIENTS:-4}"
PORT="${MEMFDW_PORT:-5499}"
PGBENCH="$(/usr/bin/pg_config --bindir)/pgbench"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$PG" start
psql_q() { "$PG" psql -XAtq -v ON_ERROR_STOP=1 "$@"; }
psql_q -c "CREATE EXTENSION IF NOT EXISTS memfdw" \
       -c "DROP FOREIGN TABLE IF EXISTS bench_mem" -c "DROP TABLE IF EXISTS bench_heap" \
       -c "CREATE FOREIGN TABLE bench_mem (id int NOT NULL, v int8, pad text) SERVER memfdw" \
       -c "CREATE TABLE bench_heap (id int NOT NULL, v int8, pad text)"

timed() { # prints milliseconds taken by a statement
    local s e
    s=$(date +%s%N)
    psql_q -c "$1" >/dev/null || { echo "failed: $1" >&2; exit 1; }
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo "== bulk insert of 500000 rows (ms, lower is better)"
hm=$(timed "INSERT INTO bench_heap SELECT g, g, 'padding-' || g FROM generate_series(1, 500000) g")
mm=$(timed "INSERT INTO bench_mem SELECT g, g, 'padding-' || g FROM generate_series(1, 500000) g")
echo "heap $hm  memory $mm  speedup x$(ratio "$hm" "$mm")"

echo "== full scans (ms, lower is better; default settings both sides, best of 3)"
psql_q -c "VACUUM ANALYZE bench_heap" -c "ANALYZE bench_mem" >/dev/null
best3() { # the fastest of three runs of a statement, in ms
    local a b c
    a=$(timed "$1"); b=$(timed "$1"); c=$(timed "$1")
    printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -n | head -1
}
for q in "SELECT count(*), sum(v) FROM {t}" \
         "SELECT count(*), sum(v) FROM {t} WHERE v % 10 = 3" \
         "SELECT count(*), sum(v) FROM {t} WHERE v < 50000" \
         "SELECT * FROM {t} WHERE v = 77777"; do
    hs=$(best3 "${q//\{t\}/bench_heap}")
    ms=$(best3 "${q//\{t\}/bench_mem}")
    echo "$q: heap $hs  memory $ms  speedup x$(ratio "$hs" "$ms")"
done

echo "== single-row insert transactions, ${SECS}s each (tps, higher is better)"
for t in heap mem; do
    echo "\\set id random(1, 1000000000)" >"$TMP/$t.sql"
    echo "INSERT INTO bench_$t VALUES (:id, :id, 'x');" >>"$TMP/$t.sql"
done
run_tps() {
    "$PGBENCH" -h /tmp -p "$PORT" -U postgres -n -M prepared -c "$CLIENTS" -j "$((CLIENTS < 2 ? CLIENTS : 2))" -T "$SECS" \
        -f "$TMP/$1.sql" postgres 2>/dev/null | awk '/^tps/ { printf "%d", $3 }'
}
for sc in on off; do
    for c in 1 4 8; do
        CLIENTS=$c
        export PGOPTIONS="-c synchronous_commit=$sc"
        htps=$(run_tps heap)
        before=$(psql_q -c "SELECT records || ' ' || syncs FROM memfdw.redo_stats()")
        mtps=$(run_tps mem)
        after=$(psql_q -c "SELECT records || ' ' || syncs FROM memfdw.redo_stats()")
        per=$(awk -v b="$before" -v a="$after" 'BEGIN { split(b, x, " "); split(a, y, " "); r = y[1] - x[1]; if (r > 0) printf "%.2f", (y[2] - x[2]) / r; else print "n/a" }')
        echo "synchronous_commit=$sc clients=$c: heap $htps  memory $mtps tps  ratio x$(ratio "$mtps" "$htps")  syncs/commit $per"
        unset PGOPTIONS
    done
done
psql_q -c "DROP FOREIGN TABLE bench_mem" -c "DROP TABLE bench_heap"
