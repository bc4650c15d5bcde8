#!/usr/bin/env python3
"""OLTP benchmark protocol: memory tables against heap tables, same server, same run.

For each scale, workload and client count, runs heap and memory alternately
(heap, memory, heap, memory, ...) BENCH_REPS times each and reports per side the
median and spread of:
  tps            pgbench's, with --max-tries (failed and retried transactions are
                 counted and printed, never hidden)
  p95 ms         95th percentile latency from pgbench's per-transaction log
  cpu us/txn     CPU (user + system) of pgbench's backends per committed
                 transaction, from /proc/<pid>/stat over the middle of the run
  wal/txn        WAL fsyncs per commit (pg_stat_wal.wal_sync)
  memfdw/txn     memfdw redo log syncs per commit (memfdw.redo_stats())
and the memory/heap ratio of the medians. Every run starts after a checkpoint of
everything and includes one of its own side at mid-run (heap: PostgreSQL's
CHECKPOINT, its dirty pages; memory: memfdw.checkpoint() too, every memory table).

Workloads (BENCH_WORKLOADS, space-separated names):
  select       pgbench -S
  select_unprepared  pgbench -S -M simple (every statement parsed and planned, as
               clients that do not prepare statements send them)
  simple       pgbench -N
  tpcb         pgbench -b tpcb-like
  plpgsql      TPC-B as one plpgsql function call per transaction
  hot1 hot10 hot1000   UPDATE hot SET n = n + 1 WHERE id = random(1, K)
Settings: BENCH_SCALES (default "10"), BENCH_CLIENTS (default "1 8 32"; the hot-row
and plpgsql workloads use 8 only unless BENCH_ALL_CLIENTS=1), BENCH_SECONDS (default
30), BENCH_REPS (default 3), BENCH_OUT (default target/bench). Writes oltp.csv and
oltp_ratios.svg there. Uses the cluster of scripts/pg.sh (MEMFDW_MAX_MEMORY must hold
the memory tables: about 3 GB at scale 100).
"""

import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG = os.path.join(ROOT, "scripts", "pg.sh")
PORT = os.environ.get("MEMFDW_PORT", "5499")
BIN = subprocess.run(["/usr/bin/pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
SECS = int(os.environ.get("BENCH_SECONDS", "30"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
SCALES = os.environ.get("BENCH_SCALES", "10").split()
CLIENTS = [int(c) for c in os.environ.get("BENCH_CLIENTS", "1 8 32").split()]
WORKLOADS = os.environ.get(
    "BENCH_WORKLOADS", "select select_unprepared simple tpcb plpgsql hot1 hot10 hot1000"
).split()
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "target", "bench"))
AS_PG = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


def psql(db, sql):
    r = subprocess.run(
        AS_PG + [f"{BIN}/psql", "-h", "/tmp", "-p", PORT, "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db],
        input=sql, capture_output=True, text=True,
    )
    if r.returncode != 0:
        sys.exit(f"psql {db}: {r.stderr}")
    return r.stdout.strip()


def heap_db(scale):
    return f"memfdw_oltp_heap_{scale}"


def mem_db(scale):
    return f"memfdw_oltp_mem_{scale}"


HOT_K = {"hot1": 1, "hot10": 10, "hot1000": 1000}

TPCB_FUNCTION = """
CREATE OR REPLACE FUNCTION tpcb(p_aid int, p_bid int, p_tid int, p_delta int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE b int;
BEGIN
    UPDATE pgbench_accounts SET abalance = abalance + p_delta WHERE aid = p_aid;
    SELECT abalance INTO b FROM pgbench_accounts WHERE aid = p_aid;
    UPDATE pgbench_tellers SET tbalance = tbalance + p_delta WHERE tid = p_tid;
    UPDATE pgbench_branches SET bbalance = bbalance + p_delta WHERE bid = p_bid;
    INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
        VALUES (p_tid, p_bid, p_aid, p_delta, CURRENT_TIMESTAMP);
    RETURN b;
END $$;
"""


def prepare(scale):
    s = int(scale)
    psql("postgres", f"DROP DATABASE IF EXISTS {heap_db(scale)}; DROP DATABASE IF EXISTS {mem_db(scale)};")
    psql("postgres", f"CREATE DATABASE {heap_db(scale)}")
    psql("postgres", f"CREATE DATABASE {mem_db(scale)}")
    subprocess.run(
        AS_PG + [f"{BIN}/pgbench", "-h", "/tmp", "-p", PORT, "-i", "-q", "-s", scale, heap_db(scale)],
        check=True, capture_output=True,
    )
    hot = "".join(
        f"CREATE {{kind}} hot{k} (id int PRIMARY KEY, n int){{server}}; "
        f"INSERT INTO hot{k} SELECT g, 0 FROM generate_series(1, {k}) g; "
        for k in HOT_K.values()
    )
    # (The extension only for memfdw.redo_stats(): the same counters on both sides.)
    psql(
        heap_db(scale),
        "CREATE EXTENSION memfdw; " + hot.format(kind="TABLE", server="") + TPCB_FUNCTION + "VACUUM ANALYZE;",
    )
    psql(
        mem_db(scale),
        f"""
CREATE EXTENSION memfdw;
CREATE FOREIGN TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88)) SERVER memfdw;
CREATE FOREIGN TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84)) SERVER memfdw;
CREATE FOREIGN TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84)) SERVER memfdw;
CREATE FOREIGN TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22)) SERVER memfdw;
INSERT INTO pgbench_branches SELECT b, 0, '' FROM generate_series(1, {s}) b;
INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, '' FROM generate_series(1, 10 * {s}) t;
INSERT INTO pgbench_accounts SELECT a, (a - 1) / 100000 + 1, 0, '' FROM generate_series(1, 100000 * {s}) a;
ANALYZE pgbench_branches; ANALYZE pgbench_tellers; ANALYZE pgbench_accounts;
"""
        + hot.format(kind="FOREIGN TABLE", server=" SERVER memfdw")
        + TPCB_FUNCTION,
    )


def script_for(workload, scale, d):
    """pgbench arguments for a workload (custom scripts written to directory d)."""
    if workload == "select":
        return ["-S"]
    if workload == "select_unprepared":
        # (Overrides the run's -M prepared: -M must come before the script.)
        return ["-M", "simple", "-S"]
    if workload == "simple":
        return ["-N"]
    if workload == "tpcb":
        return ["-b", "tpcb-like"]
    path = os.path.join(d, f"{workload}.sql")
    with open(path, "w") as f:
        if workload == "plpgsql":
            f.write(
                f"\\set aid random(1, 100000 * {scale})\n\\set bid random(1, {scale})\n"
                f"\\set tid random(1, 10 * {scale})\n\\set delta random(-5000, 5000)\n"
                "SELECT tpcb(:aid, :bid, :tid, :delta);\n"
            )
        else:
            f.write(f"\\set id random(1, {HOT_K[workload]})\nUPDATE {workload} SET n = n + 1 WHERE id = :id;\n")
    os.chmod(path, 0o644)
    return ["-f", path]


def checkpoint(db, memory):
    """PostgreSQL's CHECKPOINT, and memfdw's if `memory`; memfdw's is retried while the
    background worker's own is running ("already running")."""
    sql = "CHECKPOINT; SELECT memfdw.checkpoint();" if memory else "CHECKPOINT"
    for _ in range(60):
        r = subprocess.run(
            AS_PG + [f"{BIN}/psql", "-h", "/tmp", "-p", PORT, "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", db],
            input=sql, capture_output=True, text=True,
        )
        if r.returncode == 0:
            return None
        if "already running" not in r.stderr:
            break
        time.sleep(1)
    return f"checkpoint in {db}: {r.stderr.strip()}"


def counters(db):
    """(commits, WAL fsyncs, memfdw log syncs) so far."""
    row = psql(
        db,
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
        "(SELECT wal_sync FROM pg_stat_wal), "
        "(SELECT syncs FROM memfdw.redo_stats())",
    )
    c, w, m = row.split("|")
    return int(c), int(w), int(m or 0)


def backend_cpu(db):
    """Total CPU seconds of pgbench's backends connected to db."""
    pids = psql(
        db,
        "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND application_name = 'pgbench'",
    ).split()
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total, len(pids)


def run_once(db, args, clients, d):
    """One pgbench run; returns a dict of figures."""
    logdir = tempfile.mkdtemp(dir=d)
    os.chmod(logdir, 0o777)
    cmd = AS_PG + [
        f"{BIN}/pgbench", "-h", "/tmp", "-p", PORT, "-n", "-M", "prepared", "-c", str(clients),
        "-j", str(min(clients, 2)), "-T", str(SECS), "-P", "1", "--max-tries=10", "-l",
        "--log-prefix", os.path.join(logdir, "tx"),
    ] + args + [db]
    # Each run starts from a checkpoint of everything, so that its mid-run checkpoint
    # writes what this run changed: without it, a memory run's CHECKPOINT wrote out the
    # heap pages the heap run before it had dirtied since its own checkpoint.
    err = checkpoint(db, True)
    if err:
        sys.exit(err)
    # Sync counts over the whole run, read once the run's backends have exited (they
    # flush their statistics then).
    before = counters(db)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=logdir)
    # CPU over the middle of the run (backends connected; a checkpoint inside it on
    # both sides), per transaction pgbench reports for the same seconds (-P 1).
    lead = max(1.0, SECS * 0.1)
    time.sleep(lead)
    t0 = time.monotonic() - start
    cpu0, _ = backend_cpu(db)
    time.sleep(max(0.5, SECS / 2 - lead))
    # (In its own connection, not waited for here: a checkpoint that takes seconds, as
    # memfdw's of a scale-100 database does, must not move the window's end past the
    # run's. Its backend is not one of pgbench's: its CPU is not counted, on either
    # side, as heap's checkpointer process is not.)
    ckpt_err = []
    ckpt = threading.Thread(target=lambda: ckpt_err.append(checkpoint(db, "heap" not in db)))
    ckpt.start()
    time.sleep(max(0.5, SECS / 2 - lead - 1.0))
    t1 = time.monotonic() - start
    cpu1, _ = backend_cpu(db)
    out, err = proc.communicate()
    ckpt.join()
    if ckpt_err != [None]:
        sys.exit(f"{ckpt_err}")
    for _ in range(50):
        if backend_cpu(db)[1] == 0:
            break
        time.sleep(0.1)
    after = counters(db)
    # Progress lines: "progress: 5.0 s, 60012.3 tps, ...": the second ending at 5.0.
    in_window = 0.0
    for m in re.finditer(r"progress: ([\d.]+) s, ([\d.]+) tps", err):
        end = float(m.group(1))
        if t0 + 1.0 <= end <= t1:
            in_window += float(m.group(2))
    window = max(1.0, sum(1 for m in re.finditer(r"progress: ([\d.]+) s", err) if t0 + 1.0 <= float(m.group(1)) <= t1))
    done = int(m.group(1)) if (m := re.search(r"number of transactions actually processed: (\d+)", out)) else 0
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1)) if "tps = " in out else 0.0
    if in_window:
        cpu_per = (cpu1 - cpu0) * 1e6 / in_window * (window / max(1.0, t1 - t0))
    else:
        # A run too short for whole progress seconds in the window: the run's rate.
        cpu_per = (cpu1 - cpu0) * 1e6 / max(1.0, tps * (t1 - t0))
    failed = int(m.group(1)) if (m := re.search(r"number of failed transactions: (\d+)", out)) else 0
    retried = int(m.group(1)) if (m := re.search(r"number of transactions retried: (\d+)", out)) else 0
    lat = []
    for name in os.listdir(logdir):
        with open(os.path.join(logdir, name)) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat.append(int(parts[2]))
    lat.sort()
    p95 = lat[int(len(lat) * 0.95)] / 1000.0 if lat else 0.0
    subprocess.run(["rm", "-rf", logdir])
    n = max(1, done)
    return {
        "tps": tps,
        "p95_ms": p95,
        "cpu_us_per_txn": cpu_per,
        "wal_syncs_per_txn": (after[1] - before[1]) / n,
        "memfdw_syncs_per_txn": (after[2] - before[2]) / n,
        "failed": failed,
        "retried": retried,
        "error": "" if proc.returncode == 0 else " ".join(err.strip().splitlines()[-1:]),
    }


def med(xs):
    return statistics.median(xs) if xs else 0.0


def svg(results, path):
    """A bar chart of memory/heap tps ratios per workload and client count."""
    bars = [(f"{r['workload']} c{r['clients']} s{r['scale']}", r["ratio"]) for r in results]
    w, bh, left = 640, 18, 190
    top = max([2.0] + [b[1] for b in bars])
    h = 30 + len(bars) * (bh + 4) + 20
    x = lambda v: left + (w - left - 20) * v / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<text x="10" y="16" font-size="13">memory / heap tps (median), line at 1.0</text>']
    for i, (label, v) in enumerate(bars):
        y = 30 + i * (bh + 4)
        color = "#2a7" if v >= 1.0 else "#c54"
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{label}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{x(v) - left:.1f}" height="{bh}" fill="{color}"/>')
        parts.append(f'<text x="{x(v) + 4:.1f}" y="{y + 13}">{v:.2f}</text>')
    parts.append(f'<line x1="{x(1.0):.1f}" y1="26" x2="{x(1.0):.1f}" y2="{h - 10}" stroke="#333" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["bash", PG, "start"], check=True, capture_output=True)
    work = tempfile.mkdtemp(prefix="memfdw-oltp-")
    os.chmod(work, 0o777)
    rows, summary = [], []
    print(f"== OLTP protocol: {SECS}s runs, {REPS} repetitions per side, alternating heap/memory, checkpoint mid-run")
    for scale in SCALES:
        prepare(scale)
        for workload in WORKLOADS:
            args = script_for(workload, scale, work)
            all_clients = workload in ("select", "simple", "tpcb") or os.environ.get("BENCH_ALL_CLIENTS")
            for clients in CLIENTS if all_clients else [8]:
                per = {"heap": [], "memory": []}
                for rep in range(REPS):
                    for side, db in (("heap", heap_db(scale)), ("memory", mem_db(scale))):
                        r = run_once(db, args, clients, work)
                        per[side].append(r)
                        rows.append({"scale": scale, "workload": workload, "clients": clients, "side": side, "rep": rep, **r})
                h = {k: med([r[k] for r in per["heap"]]) for k in per["heap"][0] if k != "error"}
                m = {k: med([r[k] for r in per["memory"]]) for k in per["memory"][0] if k != "error"}
                spread = lambda side: f"{min(r['tps'] for r in per[side]):.0f}-{max(r['tps'] for r in per[side]):.0f}"
                ratio = m["tps"] / h["tps"] if h["tps"] else 0.0
                cpu_ratio = m["cpu_us_per_txn"] / h["cpu_us_per_txn"] if h["cpu_us_per_txn"] else 0.0
                summary.append({"scale": scale, "workload": workload, "clients": clients, "ratio": ratio})
                print(
                    f"s{scale} {workload:8} c{clients:<3} heap {h['tps']:8.0f} tps [{spread('heap')}] p95 {h['p95_ms']:6.2f} ms "
                    f"cpu {h['cpu_us_per_txn']:6.0f} us wal {h['wal_syncs_per_txn']:.2f} fail {sum(r['failed'] for r in per['heap'])} | "
                    f"memory {m['tps']:8.0f} tps [{spread('memory')}] p95 {m['p95_ms']:6.2f} ms "
                    f"cpu {m['cpu_us_per_txn']:6.0f} us wal {m['wal_syncs_per_txn']:.2f} memfdw {m['memfdw_syncs_per_txn']:.2f} "
                    f"fail {sum(r['failed'] for r in per['memory'])} retried {sum(r['retried'] for r in per['memory'])} | "
                    f"ratio x{ratio:.2f} cpu x{cpu_ratio:.2f}",
                    flush=True,
                )
        if not os.environ.get("BENCH_KEEP"):
            psql("postgres", f"DROP DATABASE {heap_db(scale)}; DROP DATABASE {mem_db(scale)};")
    with open(os.path.join(OUT, "oltp.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        wr.writeheader()
        wr.writerows(rows)
    svg(summary, os.path.join(OUT, "oltp_ratios.svg"))
    subprocess.run(["rm", "-rf", work])
    print(f"wrote {OUT}/oltp.csv and {OUT}/oltp_ratios.svg")


if __name__ == "__main__":
    main()
