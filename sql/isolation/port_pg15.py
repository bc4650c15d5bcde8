#!/usr/bin/env python3
"""Ports PostgreSQL 15's isolation specs to memory tables.

Usage: port_pg15.py PG_SOURCE_DIR   (e.g. the tree of `apt-get source postgresql-15`)

For each spec in SPECS it copies src/test/isolation/specs/NAME.spec to
specs/pg_NAME.spec with only the tables' CREATE/DROP changed -- `CREATE TABLE t (...)
[WITH (...)]` becomes `CREATE FOREIGN TABLE t (...) SERVER memfdw`, `DROP TABLE`
becomes `DROP FOREIGN TABLE` -- and copies expected/NAME*.out unchanged to
expected/pg_NAME*.out. Every step stays as PostgreSQL wrote it. Where memfdw's
output differs, an alternative output (expected/pg_NAME_1.out, ...) is kept beside
PostgreSQL's and the reason is written in ALTERNATIVES below; this script never
writes alternatives, it only checks that each one it knows of still exists.

The ported files are committed; this script documents how they were made and
remakes them after a PostgreSQL minor release.
"""

import os
import re
import sys

# The specs that use plain tables, row locks, unique keys, savepoints,
# NOWAIT/SKIP LOCKED, timeouts, deadlocks and the three isolation levels.
SPECS = [
    # row-lock modes, savepoints, NOWAIT / SKIP LOCKED
    "aborted-keyrevoke",
    "delete-abort-savept",
    "delete-abort-savept-2",
    "tuplelock-conflict",
    "tuplelock-update",
    "tuplelock-upgrade-no-deadlock",
    "multixact-no-deadlock",
    "multixact-no-forget",
    "lock-committed-keyupdate",
    "lock-committed-update",
    "lock-update-delete",
    "lock-update-traversal",
    "nowait",
    "nowait-2",
    "nowait-3",
    "nowait-4",
    "skip-locked",
    "skip-locked-2",
    "skip-locked-3",
    "skip-locked-4",
    # deadlocks and timeouts
    "deadlock-simple",
    "deadlock-hard",
    "deadlock-soft",
    "deadlock-soft-2",
    "timeouts",
    # unique keys
    "insert-conflict-do-nothing",
    "insert-conflict-do-nothing-2",
    "read-write-unique",
    "read-write-unique-2",
    "read-write-unique-3",
    # isolation levels
    "simple-write-skew",
    "classroom-scheduling",
    "project-manager",
    "referential-integrity",
    "total-cash",
    "read-only-anomaly",
]

# Specs of the same kinds not ported yet, and why (see README "Current limits").
NOT_YET = {
    "insert-conflict-do-update": "ON CONFLICT with a conflict target or DO UPDATE",
    "insert-conflict-do-update-2": "ON CONFLICT DO UPDATE; expression index",
    "insert-conflict-do-update-3": "ON CONFLICT DO UPDATE",
    "read-write-unique-4": "a unique violation after reading the range is a "
    "serialization failure even when the inserter had not read it",
    "receipt-report": "SERIALIZABLE aborts a transaction that read a row a "
    "transaction committing first overwrote (SSI orders it first)",
    "two-ids": "as receipt-report",
    "read-only-anomaly-2": "as receipt-report",
    "read-only-anomaly-3": "as receipt-report",
}


def matching_paren(s, i):
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError("unbalanced parentheses")


def port(text):
    out = []
    pos = 0
    for m in re.finditer(r"CREATE TABLE\s+([\w.]+)\s*\(", text, re.I):
        if m.start() < pos:
            continue
        close = matching_paren(text, m.end() - 1)
        out.append(text[pos : m.start()])
        out.append(f"CREATE FOREIGN TABLE {m.group(1)} " + text[m.end() - 1 : close + 1])
        rest = close + 1
        w = re.match(r"\s*WITH\s*\(", text[rest:], re.I)
        if w:
            rest = matching_paren(text, rest + w.end() - 1) + 1
        out.append(" SERVER memfdw")
        pos = rest
    out.append(text[pos:])
    text = "".join(out)
    text = re.sub(r"DROP TABLE", "DROP FOREIGN TABLE", text, flags=re.I)
    return text


def main():
    src = os.path.join(sys.argv[1], "src", "test", "isolation")
    here = os.path.dirname(os.path.abspath(__file__))
    for name in SPECS:
        with open(os.path.join(src, "specs", name + ".spec")) as f:
            spec = f.read()
        header = (
            f"# PostgreSQL 15's isolation spec {name}.spec on memory tables: only the\n"
            "# tables' CREATE/DROP changed (sql/isolation/port_pg15.py).\n"
        )
        with open(os.path.join(here, "specs", f"pg_{name}.spec"), "w") as f:
            f.write(header + port(spec))
        for out in sorted(os.listdir(os.path.join(src, "expected"))):
            m = re.fullmatch(re.escape(name) + r"(_\d+)?\.out", out)
            if m:
                with open(os.path.join(src, "expected", out)) as f:
                    body = f.read()
                with open(os.path.join(here, "expected", "pg_" + out), "w") as f:
                    f.write(body)
    with open(os.path.join(here, "alternatives.txt")) as f:
        for alt in f.read().split("\n"):
            alt = alt.strip()
            if alt and not alt.startswith("#"):
                if not os.path.exists(os.path.join(here, "expected", alt)):
                    print(f"missing alternative output {alt}", file=sys.stderr)
    with open(os.path.join(here, "schedule_pg15"), "w") as f:
        f.write("".join(f"test: pg_{name}\n" for name in SPECS))
    print(f"ported {len(SPECS)} specs")


if __name__ == "__main__":
    main()
