//! Snapshots through SQL, under concurrent transfers between accounts of a memory
//! table (the total never changes): a READ COMMITTED `sum()` is always exact, a
//! REPEATABLE READ transaction reads its snapshot in every statement without errors,
//! `SERIALIZABLE READ ONLY DEFERRABLE` never fails, `pg_dump` of the live database
//! succeeds and restores to a database whose total holds, and a long reader shows in
//! `memfdw.snapshots()` and holds versions only until it ends.

use memfdw_e2e::{sqlstate, Cluster, Rng};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCOUNTS: i64 = 200;
const TOTAL: i64 = ACCOUNTS * 1000;

fn setup(c: &Cluster, db: &str) {
    let mut s = c.connect_as("postgres", db);
    s.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS memfdw; \
         CREATE FOREIGN TABLE bank (id int PRIMARY KEY, v bigint NOT NULL) SERVER memfdw; \
         INSERT INTO bank SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g"
    ))
    .unwrap();
}

/// Sessions moving amounts between random accounts until `stop`; returns how many
/// transfers committed.
fn transfers(
    c: &Cluster,
    db: &'static str,
    n: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..n)
        .map(|w| {
            let mut s = c.connect_as("postgres", db);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(w as u64 * 7919 + 1);
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = 1 + rng.below(ACCOUNTS as u64) as i32;
                    let b = 1 + rng.below(ACCOUNTS as u64) as i32;
                    let amount = rng.below(50) as i64;
                    let r = s.batch_execute(&format!(
                        "BEGIN; UPDATE bank SET v = v - {amount} WHERE id = {a}; \
                         UPDATE bank SET v = v + {amount} WHERE id = {b}; COMMIT"
                    ));
                    match r {
                        Ok(()) => done += 1,
                        Err(e) => {
                            // Two transfers crossing each other deadlock, as on heap.
                            let st = sqlstate(&e).unwrap_or_default();
                            assert!(st == "40P01" || st == "40001", "transfer: {e}");
                            let _ = s.batch_execute("ROLLBACK");
                        }
                    }
                }
                done
            })
        })
        .collect()
}

fn sum(s: &mut Client) -> i64 {
    s.query_one("SELECT sum(v)::bigint FROM bank", &[])
        .unwrap()
        .get(0)
}

#[test]
fn reads_see_one_snapshot_under_concurrent_transfers() {
    let c = Cluster::start();
    setup(&c, "postgres");
    let stop = Arc::new(AtomicBool::new(false));
    let writers = transfers(&c, "postgres", 3, stop.clone());
    let mut r = c.connect();
    // READ COMMITTED: every statement reads one snapshot.
    for i in 0..300 {
        assert_eq!(sum(&mut r), TOTAL, "read committed sum #{i}");
    }
    // ... also through the index, a row at a time, in one statement.
    for _ in 0..20 {
        let n: i64 = r
            .query_one(
                "SELECT sum((SELECT v FROM bank b WHERE b.id = g))::bigint \
                 FROM generate_series(1, $1::int) g",
                &[&(ACCOUNTS as i32)],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, TOTAL, "one statement, many index lookups");
    }
    // REPEATABLE READ: every statement reads the transaction's snapshot, no errors.
    for _ in 0..20 {
        r.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .unwrap();
        let first: Vec<(i32, i64)> = r
            .query("SELECT id, v FROM bank ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|x| (x.get(0), x.get(1)))
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        let again: Vec<(i32, i64)> = r
            .query("SELECT id, v FROM bank ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|x| (x.get(0), x.get(1)))
            .collect();
        assert_eq!(first, again, "repeatable read reads its snapshot");
        assert_eq!(first.iter().map(|x| x.1).sum::<i64>(), TOTAL);
        let one: i64 = r
            .query_one("SELECT v FROM bank WHERE id = 7", &[])
            .unwrap()
            .get(0);
        assert_eq!(one, first[6].1, "index lookup at the same snapshot");
        r.batch_execute("COMMIT").unwrap();
    }
    // SERIALIZABLE READ ONLY DEFERRABLE never fails.
    for _ in 0..20 {
        r.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE")
            .unwrap();
        assert_eq!(sum(&mut r), TOTAL);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(sum(&mut r), TOTAL);
        r.batch_execute("COMMIT").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let moved: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(moved > 50, "transfers ran meanwhile: {moved}");
    assert_eq!(sum(&mut r), TOTAL);
}

#[test]
fn a_long_reader_holds_versions_until_it_ends() {
    let c = Cluster::start();
    setup(&c, "postgres");
    let mut reader = c.connect();
    reader
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(sum(&mut reader), TOTAL);
    let vxid: String = reader
        .query_one(
            "SELECT virtualtransaction FROM pg_locks \
             WHERE pid = pg_backend_pid() AND locktype = 'virtualxid'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut w = c.connect();
    for _ in 0..5 {
        w.batch_execute("UPDATE bank SET v = v + 1 WHERE id <= 10")
            .unwrap();
        w.batch_execute("UPDATE bank SET v = v - 1 WHERE id <= 10")
            .unwrap();
    }
    let (holder, versions, bytes): (Option<String>, i64, i64) = {
        let row = w
            .query_one(
                "SELECT oldest_holder, versions, version_bytes FROM memfdw.snapshots()",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        holder.as_deref(),
        Some(vxid.as_str()),
        "the reader holds the horizon"
    );
    assert_eq!(versions, 100, "ten rows, ten updates each");
    assert!(bytes > 0);
    // The reader still sees its snapshot, and writers were never blocked by it.
    assert_eq!(sum(&mut reader), TOTAL);
    reader.batch_execute("COMMIT").unwrap();
    // The background worker reclaims them soon after, without further commits.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (versions, queued): (i64, i64) = {
            let row = w
                .query_one(
                    "SELECT versions, queued_commits FROM memfdw.snapshots()",
                    &[],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        if versions == 0 && queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {versions} versions, {queued} queued"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs PostgreSQL client program `tool` against the cluster; Err(stderr) on failure.
#[test]
fn pg_dump_of_a_live_database_restores_to_a_consistent_state() {
    let c = Cluster::start();
    c.connect().batch_execute("CREATE DATABASE live").unwrap();
    setup(&c, "live");
    let stop = Arc::new(AtomicBool::new(false));
    let writers = transfers(&c, "live", 3, stop.clone());
    let dump = c.dir.join("live.dump");
    for (i, extra) in [&[][..], &["--serializable-deferrable"][..], &[][..]]
        .iter()
        .enumerate()
    {
        let mut args = vec!["--include-foreign-data=memfdw", "-Fc", "-f"];
        args.push(dump.to_str().unwrap());
        args.extend_from_slice(extra);
        args.push("live");
        c.run_tool("pg_dump", &args)
            .unwrap_or_else(|e| panic!("pg_dump #{i} under writes: {e}"));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    c.connect()
        .batch_execute("CREATE DATABASE restored")
        .unwrap();
    c.run_tool(
        "pg_restore",
        &["-d", "restored", "--exit-on-error", dump.to_str().unwrap()],
    )
    .unwrap_or_else(|e| panic!("pg_restore: {e}"));
    let mut r = c.connect_as("postgres", "restored");
    let (n, total): (i64, i64) = {
        let row = r
            .query_one("SELECT count(*), sum(v)::bigint FROM bank", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((n, total), (ACCOUNTS, TOTAL), "the dump is one snapshot");
}
