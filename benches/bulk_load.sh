#!/usr/bin/env bash
# Bulk loads into memory tables vs heap tables, same server, same run, alternating
# (heap, memory, heap, memory, ...): `INSERT ... SELECT` and `COPY ... FROM` a file of
# BULK_ROWS pgbench_accounts-like rows (default 1000000) into a new table with a
# primary key. Each pair: CREATE, sync, timed load, DROP, CHECKPOINT and
# memfdw.checkpoint() (so that no checkpoint of one load runs during the next).
# BULK_REPS pairs per load (default 3); prints every pair, the medians and their ratio.
# Uses the local cluster of scripts/pg.sh (started if needed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROWS="${BULK_ROWS:-1000000}"
REPS="${BULK_REPS:-3}"
PG="bash $ROOT/scripts/pg.sh"
$PG start >/dev/null
P() { $PG psql -d postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
P -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS memfdw" >/dev/null

# The file COPY reads: readable by the server's user.
FILE="$(mktemp /tmp/memfdw-bulk-XXXXXX.copy)"
trap 'rm -f "$FILE"' EXIT
P -c "\\copy (SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, $ROWS) g) TO '$FILE'"
chmod 644 "$FILE"

COLS="(aid int PRIMARY KEY, bid int, abalance int, filler char(84))"
timed() {
    # Milliseconds of one statement, as psql's \timing reports it.
    P -c "\\timing on" -c "$1" | awk '/^Time:/ {print $2}'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

for load in insert copy; do
    case $load in
    insert) sql="INSERT INTO bulk_t SELECT g, (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, $ROWS) g" ;;
    copy) sql="COPY bulk_t FROM '$FILE'" ;;
    esac
    : >"$FILE.heap"
    : >"$FILE.mem"
    for r in $(seq 1 "$REPS"); do
        for kind in heap mem; do
            if [ $kind = heap ]; then
                P -c "CREATE TABLE bulk_t $COLS" >/dev/null
            else
                P -c "CREATE FOREIGN TABLE bulk_t $COLS SERVER memfdw" >/dev/null
            fi
            sync
            sleep 1
            t=$(timed "$sql")
            echo "$t" >>"$FILE.$kind"
            if [ $kind = heap ]; then P -c "DROP TABLE bulk_t" >/dev/null; else P -c "DROP FOREIGN TABLE bulk_t" >/dev/null; fi
            P -c "CHECKPOINT" >/dev/null
            P -c "SELECT memfdw.checkpoint()" >/dev/null
            printf '%-6s pair %d %-4s %10s ms\n' "$load" "$r" "$kind" "$t"
        done
    done
    h=$(median <"$FILE.heap")
    m=$(median <"$FILE.mem")
    awk -v l="$load" -v n="$ROWS" -v h="$h" -v m="$m" 'BEGIN {
        printf "%-6s %s rows: heap median %s ms, memory median %s ms, memory/heap speed x%.2f\n", l, n, h, m, h / m
    }'
    rm -f "$FILE.heap" "$FILE.mem"
done
