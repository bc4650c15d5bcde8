#!/usr/bin/env bash
# Moving data in and out of memory, against heap tables on the same server in the same
# run: converting a pgbench_accounts-like heap table to a memory table, against
# INSERT INTO memtable SELECT and INSERT INTO heaptable SELECT (both with the primary
# key); CREATE INDEX on memory and heap; unloading (spill) and loading back. Prints
# rows per second and ratios. ROWS sets the table size (default 1,000,000).
set -euo pipefail
shopt -s inherit_errexit  # a failed statement inside $(ms ...) stops the script
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG="$ROOT/scripts/pg.sh"
ROWS="${ROWS:-1000000}"
DB=memfdw_moving_data

"$PG" start
"$PG" psql -XAtq -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
q() { "$PG" psql -XAtq -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
ms() { # milliseconds one statement takes (its own transaction, commit included)
    local s e
    s=$(date +%s%N)
    q -c "$1" >/dev/null || { echo "failed: $1" >&2; exit 1; }
    e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
}
rate() { awk -v n="$ROWS" -v t="$1" 'BEGIN { if (t == 0) t = 1; printf "%.0f", n / t * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'; }

q -c "CREATE EXTENSION memfdw" \
  -c "CREATE TABLE src (aid int PRIMARY KEY, bid int, abalance int, filler char(84))" \
  -c "INSERT INTO src SELECT g, g / 100000 + 1, 0, '' FROM generate_series(1, $ROWS) g" \
  -c "VACUUM ANALYZE src"
q -c "CREATE TABLE conv AS SELECT * FROM src" -c "ALTER TABLE conv ADD PRIMARY KEY (aid)"
q -c "CREATE FOREIGN TABLE mem (aid int PRIMARY KEY, bid int, abalance int, filler char(84)) SERVER memfdw" \
  -c "CREATE TABLE heap (aid int PRIMARY KEY, bid int, abalance int, filler char(84))"

echo "== $ROWS pgbench_accounts rows (rows/s, higher is better; each statement commits)"
t_conv=$(ms "SELECT memfdw.convert_to_memory('conv')")
t_mem=$(ms "INSERT INTO mem SELECT * FROM src")
t_heap=$(ms "INSERT INTO heap SELECT * FROM src")
echo "convert_to_memory            $(rate "$t_conv") rows/s ($t_conv ms)"
echo "INSERT INTO memory SELECT    $(rate "$t_mem") rows/s ($t_mem ms)   convert vs insert x$(ratio "$t_mem" "$t_conv")"
echo "INSERT INTO heap SELECT      $(rate "$t_heap") rows/s ($t_heap ms)   memory vs heap x$(ratio "$t_heap" "$t_mem")"

echo "== CREATE INDEX over $ROWS rows (ms, lower is better)"
for col in bid abalance; do
    tm=$(ms "CREATE INDEX mem_$col ON mem ($col)")
    th=$(ms "CREATE INDEX heap_$col ON heap ($col)")
    echo "on $col: memory $tm  heap $th  speedup x$(ratio "$th" "$tm")"
done

echo "== unload and load (rows/s)"
t_unload=$(ms "SELECT memfdw.unload('mem')")
bytes=$(q -c "SELECT spill_bytes FROM memfdw.tables() WHERE table_name = 'mem'")
t_load=$(ms "SELECT memfdw.load('mem')")
echo "unload (spill) $(rate "$t_unload") rows/s ($t_unload ms, $bytes bytes)  load $(rate "$t_load") rows/s ($t_load ms)"
q -c "SELECT count(*) = $ROWS FROM mem" | grep -q t || { echo "load lost rows" >&2; exit 1; }
"$PG" psql -XAtq -c "DROP DATABASE $DB" >/dev/null
