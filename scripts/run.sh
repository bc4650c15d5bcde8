#!/usr/bin/env bash
# Starts the local cluster (scripts/pg.sh), loads the demo, and opens psql; without a
# terminal, runs the demo queries and says how to connect.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG="$ROOT/scripts/pg.sh"

"$PG" start
# (Re)load the demo unless its tables are there and hold data (memory tables come
# back empty after a restart until the redo log lands).
if ! "$PG" psql -XAtq -c "SELECT count(*) > 0 FROM accounts" 2>/dev/null | grep -q t; then
    "$PG" psql -Xq -v ON_ERROR_STOP=1 -f "$ROOT/sql/demo.sql" >/dev/null
fi
PORT="${MEMFDW_PORT:-5499}"
if [ -t 0 ] && [ -t 1 ]; then
    echo "memfdw demo: tables accounts and history are memory tables. \\q to leave; 'make stop' stops the server."
    exec "$PG" psql -X
else
    "$PG" psql -X -f "$ROOT/sql/demo_queries.sql"
    echo
    echo "memfdw is running on port $PORT. Connect with:"
    echo "  psql -h /tmp -p $PORT -U postgres     (or: scripts/pg.sh psql)"
    echo "Stop it with: make stop"
fi
