#!/usr/bin/env bash
# Runs every test suite (make test) and ends with one summary line:
# "N passed, N failed" over all suites.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
status=0
for target in test-engine test-pgrx test-e2e; do
    echo "== make $target"
    make -C "$ROOT" --no-print-directory "$target" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "== make $target FAILED (exit $rc)"
        status=1
        break
    fi
done
# cargo's "test result: ok. N passed; M failed" lines, and the fork test's own line.
sum() { grep -Eo "[0-9]+ $1([;,]|$)" "$LOG" | awk '{ s += $1 } END { print s + 0 }'; }
passed=$(sum passed)
failed=$(sum failed)
passed=${passed:-0}
failed=${failed:-0}
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo
echo "$passed passed, $failed failed"
exit $status
