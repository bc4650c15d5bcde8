//! What an operator can see: per-table access statistics
//! (`memfdw.stat_user_tables`, like `pg_stat_user_tables`), CREATE INDEX in
//! `pg_stat_progress_create_index`, checkpoints and recovery in `memfdw.progress()`,
//! and recovery's progress (the background worker is not in `pg_stat_activity`).

use memfdw_e2e::Cluster;
use postgres::Client;
use std::time::{Duration, Instant};

fn stats(s: &mut Client, table: &str) -> Vec<i64> {
    let r = s
        .query_one(
            "SELECT seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins, n_tup_upd, \
             n_tup_del, n_live_tup, analyze_count FROM memfdw.stat_user_tables WHERE relname = $1",
            &[&table],
        )
        .unwrap();
    (0..9).map(|i| r.get(i)).collect()
}

#[test]
fn access_statistics_count_like_pg_stat_user_tables() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE t (id int PRIMARY KEY, v int) SERVER memfdw; \
         INSERT INTO t SELECT g, g FROM generate_series(1, 100) g; \
         UPDATE t SET v = 0 WHERE id <= 10; \
         DELETE FROM t WHERE id = 100",
    )
    .unwrap();
    // The UPDATE and DELETE found their rows through the primary key (two index
    // scans) and the statements wrote 100 + 10 + 1 rows.
    let before = stats(&mut s, "t");
    assert_eq!(before[4..8], [100, 10, 1, 99], "{before:?}");
    s.batch_execute("SELECT count(*) FROM t; SELECT * FROM t WHERE id = 7")
        .unwrap();
    let after = stats(&mut s, "t");
    assert_eq!(after[0] - before[0], 1, "one full scan");
    assert_eq!(after[1] - before[1], 99, "of 99 rows");
    assert_eq!(after[2] - before[2], 1, "one index scan");
    assert_eq!(after[3] - before[3], 1, "of one row");
    let last: Option<std::time::SystemTime> = s
        .query_one(
            "SELECT last_analyze FROM memfdw.stat_user_tables WHERE relname = 't'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(last.is_none());
    // ANALYZE is recorded; counters survive TRUNCATE and ALTER (as heap's do).
    s.batch_execute(
        "ANALYZE t; TRUNCATE t; INSERT INTO t VALUES (1, 1); \
         ALTER FOREIGN TABLE t ADD COLUMN w int",
    )
    .unwrap();
    let now = stats(&mut s, "t");
    assert_eq!(now[8], 1, "analyze_count");
    assert_eq!(now[4], 101, "inserts survive TRUNCATE and ALTER");
    assert_eq!(now[7], 1, "live rows");
    let last: Option<std::time::SystemTime> = s
        .query_one(
            "SELECT last_analyze FROM memfdw.stat_user_tables WHERE relname = 't'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(last.is_some());
    // A role without privileges on the table does not see it.
    s.batch_execute("CREATE ROLE nobody LOGIN; GRANT USAGE ON SCHEMA memfdw TO nobody")
        .unwrap();
    let mut other = c.connect_as("nobody", "postgres");
    let n: i64 = other
        .query_one("SELECT count(*) FROM memfdw.stat_user_tables", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn progress_of_index_builds_checkpoints_and_recovery() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE big (id int, v text) SERVER memfdw; \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 400000) g",
    )
    .unwrap();
    let relid: u32 = s
        .query_one("SELECT 'big'::regclass::oid", &[])
        .unwrap()
        .get(0);
    // Another session watches pg_stat_progress_create_index while indexes build.
    let mut seen = None;
    for attempt in 0..5 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            let mut w = c.connect();
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(60)
                {
                    let rows = w
                        .query(
                            "SELECT relid, phase, tuples_total FROM pg_stat_progress_create_index",
                            &[],
                        )
                        .unwrap();
                    if let Some(r) = rows.first() {
                        let got: (u32, String, i64) = (r.get(0), r.get(1), r.get(2));
                        return Some(got);
                    }
                }
                None
            })
        };
        s.batch_execute(&format!(
            "CREATE INDEX big_v{attempt} ON big (v); DROP INDEX big_v{attempt}"
        ))
        .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        seen = watcher.join().unwrap();
        if seen.is_some() {
            break;
        }
    }
    let (rel, phase, total) = seen.expect("an index build seen in pg_stat_progress_create_index");
    assert_eq!(rel, relid);
    assert_eq!(phase, "building index");
    assert_eq!(total, 400_000);
    // Nothing is left once it is done.
    let n: i64 = s
        .query_one("SELECT count(*) FROM pg_stat_progress_create_index", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // A checkpoint's counts.
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    let r = s
        .query_one(
            "SELECT state, tables_done, tables_total, records_done FROM memfdw.progress() \
             WHERE operation = 'checkpoint'",
            &[],
        )
        .unwrap();
    let got: (String, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(got, ("done".to_string(), 1, 1, 400_000));
    // Recovery after a crash, and the worker in pg_stat_activity.
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect();
    let n: i64 = s.query_one("SELECT count(*) FROM big", &[]).unwrap().get(0);
    assert_eq!(n, 400_000);
    let r = s
        .query_one(
            "SELECT state, tables_done, records_done > 0 FROM memfdw.progress() \
             WHERE operation = 'recovery'",
            &[],
        )
        .unwrap();
    let got: (String, i64, bool) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(got, ("done".to_string(), 1, true));
    // The worker is a shared-memory-only background worker: it is not in
    // pg_stat_activity (PostgreSQL lists only workers connected to a database), and
    // a role cannot terminate or cancel it.
    let workers: i64 = s
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'memfdw'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(workers, 0);
}

/// `memfdw.table_memory()`: a table's memory by component, consistent with
/// `memfdw.tables()` and the table's shape, shown only to those with privileges on it.
#[test]
fn table_memory_by_component() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE tm (id int PRIMARY KEY, v text, w int) SERVER memfdw; \
         CREATE INDEX tm_w ON tm (w); CREATE INDEX tm_v ON tm (v); \
         INSERT INTO tm SELECT g, repeat('x', 100), g % 10 FROM generate_series(1, 5000) g; \
         CREATE ROLE nobody_here LOGIN; GRANT USAGE ON SCHEMA memfdw TO nobody_here",
    )
    .unwrap();
    // A primary-key lookup (after the rows are committed, so that it plans one).
    s.batch_execute("SELECT * FROM tm WHERE id = 7").unwrap();
    let rows: Vec<(String, i64, Option<f64>)> = s
        .query(
            "SELECT component, bytes, bytes_per_row FROM memfdw.table_memory() \
              WHERE table_name = 'tm' ORDER BY component",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.0 == name)
            .unwrap_or_else(|| panic!("{name} missing: {rows:?}"))
    };
    let data: i64 = s
        .query_one(
            "SELECT data_bytes FROM memfdw.tables() WHERE table_name = 'tm'",
            &[],
        )
        .unwrap()
        .get(0);
    // (memfdw.tables() counts each buffer's 8-byte header with the row data.)
    let packed = get("row data").1;
    assert!(
        packed <= data && data <= packed + 8 * 5000,
        "{packed} vs {data}"
    );
    // Each buffer holds its row: at least the row data, less than twice it.
    let buffers = get("row buffers (blocks holding the row data)").1;
    assert!(buffers >= data && buffers < 2 * data, "{buffers} vs {data}");
    assert!(get("records").2.unwrap() >= 32.0);
    assert!(get("row-id index").1 > 0);
    // Integer keys are in B+trees (their nodes counted: a few 1-KiB blocks, well
    // under the 75 bytes a skip-list entry takes), text keys in a skip list
    // (estimated).
    for ix in ["tm_pkey", "tm_w"] {
        let (_, bytes, per_row) = get(&format!("index {ix} (B+tree nodes)"));
        assert!(*bytes > 0 && bytes % 1024 == 0, "{ix}: {bytes}");
        assert!(per_row.unwrap() < 50.0, "{ix}: {per_row:?}");
    }
    assert!(get("index tm_v (skip list, estimated)").1 > 0);
    // The primary key was looked up: its point cache is in use; tm_w has none.
    assert!(get("index tm_pkey point cache").1 > 0);
    assert!(rows.iter().all(|r| r.0 != "index tm_w point cache"));
    // Nothing about tables one holds no privilege on.
    let mut other = c.connect_as("nobody_here", "postgres");
    let n: i64 = other
        .query_one("SELECT count(*) FROM memfdw.table_memory()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
