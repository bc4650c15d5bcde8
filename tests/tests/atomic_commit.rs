//! A transaction writing heap and memory tables commits both or neither: failures
//! PostgreSQL raises after memfdw's PRE_COMMIT (its serialization check, an ON COMMIT
//! action) leave no memory change, and a crash between memfdw's redo record and
//! PostgreSQL's commit record leaves neither part after recovery.

use memfdw_e2e::{sqlstate, Cluster, Rng};
use postgres::Client;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn setup(c: &Cluster) -> Client {
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (k int PRIMARY KEY) SERVER memfdw; \
         CREATE TABLE h (k int PRIMARY KEY)",
    )
    .unwrap();
    s
}

fn keys(s: &mut Client, table: &str) -> BTreeSet<i32> {
    s.query(&format!("SELECT k FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_serialization_failure_at_commit_leaves_no_memory_change() {
    let c = Cluster::start();
    let mut a = setup(&c);
    let mut b = c.connect();
    a.batch_execute(
        "CREATE TABLE acct (id int PRIMARY KEY, v int); INSERT INTO acct VALUES (1, 0), (2, 0)",
    )
    .unwrap();
    // Write skew on a heap table: the first committer dooms the other, which fails in
    // PostgreSQL's pre-commit check, after memfdw's PRE_COMMIT.
    a.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT v FROM acct WHERE id = 1")
        .unwrap();
    b.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT v FROM acct WHERE id = 2")
        .unwrap();
    a.batch_execute("UPDATE acct SET v = v + 1 WHERE id = 2")
        .unwrap();
    b.batch_execute("UPDATE acct SET v = v + 1 WHERE id = 1; INSERT INTO m VALUES (42)")
        .unwrap();
    a.batch_execute("COMMIT").unwrap();
    let e = b.batch_execute("COMMIT").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("40001"), "{e}");
    assert!(
        keys(&mut a, "m").is_empty(),
        "the memory insert of the failed commit"
    );
    // The key is free again.
    a.batch_execute("INSERT INTO m VALUES (42)").unwrap();
}

#[test]
fn an_on_commit_failure_leaves_no_memory_change() {
    let c = Cluster::start();
    let mut s = setup(&c);
    // Truncating `parent` at commit fails: `child` references it (0A000), after
    // memfdw's PRE_COMMIT.
    let e = s
        .batch_execute(
            "BEGIN; \
             INSERT INTO m VALUES (7); INSERT INTO h VALUES (7); \
             CREATE TEMP TABLE parent (id int PRIMARY KEY) ON COMMIT DELETE ROWS; \
             CREATE TEMP TABLE child (pid int REFERENCES parent); \
             COMMIT",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    let _ = s.batch_execute("ROLLBACK");
    assert!(keys(&mut s, "m").is_empty());
    assert!(keys(&mut s, "h").is_empty());
    s.batch_execute("INSERT INTO m VALUES (7)").unwrap();
}

#[test]
fn a_crash_between_memfdw_and_postgresql_commit_records_keeps_neither() {
    let c = Cluster::start();
    let mut s = setup(&c);
    s.batch_execute("INSERT INTO m VALUES (1); INSERT INTO h VALUES (1)")
        .unwrap();
    // Parked after memfdw's PRE_COMMIT (its record durable), before PostgreSQL's commit.
    let conn = c.conn_str();
    let parked = std::thread::spawn(move || {
        let mut p = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        p.batch_execute(
            "SET memfdw.debug_pause_after_prepare = '20s'; \
             BEGIN; INSERT INTO h VALUES (2); INSERT INTO m VALUES (2); COMMIT",
        )
        .is_ok()
    });
    std::thread::sleep(Duration::from_millis(1500));
    c.kill9();
    assert!(
        !parked.join().unwrap(),
        "the parked commit cannot have succeeded"
    );
    c.restart();
    let mut s = c.connect_retry(Duration::from_secs(60));
    assert_eq!(keys(&mut s, "h"), BTreeSet::from([1]));
    assert_eq!(keys(&mut s, "m"), BTreeSet::from([1]), "{}", c.log_text());
    assert!(
        c.log_text().contains("skipped 1 logged commits"),
        "recovery says what it skipped"
    );
}

#[test]
fn kill_9_rounds_keep_heap_and_memory_keys_equal() {
    let c = Cluster::start();
    drop(setup(&c));
    let acked: Arc<Mutex<BTreeSet<i32>>> = Arc::default();
    let mut rng = Rng(17);
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (conn, stop, acked) = (c.conn_str(), stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let Ok(mut s) = postgres::Client::connect(&conn, postgres::NoTls) else {
                        return;
                    };
                    let mut k = round * 1_000_000 + w * 100_000;
                    while !stop.load(Ordering::Relaxed) {
                        k += 1;
                        let sql = format!(
                            "BEGIN; INSERT INTO h VALUES ({k}); INSERT INTO m VALUES ({k}); COMMIT"
                        );
                        if s.batch_execute(&sql).is_err() {
                            break;
                        }
                        acked.lock().unwrap().insert(k);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        c.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        c.restart();
        let mut s = c.connect_retry(Duration::from_secs(60));
        let (h, m) = (keys(&mut s, "h"), keys(&mut s, "m"));
        assert_eq!(h, m, "round {round}: heap and memory keys differ");
        let acked = acked.lock().unwrap();
        assert!(
            acked.is_subset(&m),
            "round {round}: acknowledged commits lost"
        );
        assert!(!acked.is_empty());
    }
}
