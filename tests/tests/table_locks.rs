//! `LOCK TABLE` on memory tables works as on heap tables (PostgreSQL itself refuses
//! foreign tables), and serialization failures carry PostgreSQL's messages.

use memfdw_e2e::{sqlstate, Cluster};
use std::time::{Duration, Instant};

fn message(e: &postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

#[test]
fn lock_table_takes_postgresql_table_locks() {
    let c = Cluster::start();
    let mut a = c.connect();
    a.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, v int) SERVER memfdw; \
         CREATE TABLE h (id int); \
         INSERT INTO m VALUES (1, 1); \
         CREATE ROLE reader LOGIN; GRANT USAGE ON SCHEMA public TO reader; \
         GRANT SELECT ON m TO reader",
    )
    .unwrap();
    let mut b = c.connect();
    // Only in a transaction block, as on heap tables.
    let e = a.batch_execute("LOCK TABLE m").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P01"), "{e}");
    // A memory table and a heap table in one statement.
    a.batch_execute("BEGIN; LOCK TABLE m, h IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let held: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE relation IN ('m'::regclass, 'h'::regclass) \
             AND mode = 'AccessExclusiveLock' AND granted",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(held, 2);
    // NOWAIT fails at once; a waiter ends with lock_timeout.
    b.batch_execute("BEGIN").unwrap();
    let e = b
        .batch_execute("LOCK TABLE m IN SHARE MODE NOWAIT")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    b.batch_execute("ROLLBACK; BEGIN; SET LOCAL lock_timeout = '200ms'")
        .unwrap();
    let t = Instant::now();
    let e = b.query("SELECT * FROM m", &[]).unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(150));
    b.batch_execute("ROLLBACK").unwrap();
    // The waiter goes on when the holder commits.
    let conn = c.conn_str();
    let waiter = std::thread::spawn(move || {
        let mut b = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        let t = Instant::now();
        b.batch_execute("BEGIN; LOCK TABLE m IN ROW EXCLUSIVE MODE; UPDATE m SET v = 2; COMMIT")
            .unwrap();
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    a.batch_execute("COMMIT").unwrap();
    assert!(waiter.join().unwrap() >= Duration::from_millis(250));
    // Privileges: SELECT allows ACCESS SHARE only.
    let mut r = c.connect_as("reader", "postgres");
    r.batch_execute("BEGIN; LOCK TABLE m IN ACCESS SHARE MODE; ROLLBACK")
        .unwrap();
    let e = r
        .batch_execute("BEGIN; LOCK TABLE m IN EXCLUSIVE MODE")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    r.batch_execute("ROLLBACK").unwrap();
    // Opposite orders deadlock; PostgreSQL's detector ends one.
    a.batch_execute("BEGIN; LOCK TABLE m").unwrap();
    b.batch_execute("BEGIN; LOCK TABLE h").unwrap();
    let conn = c.conn_str();
    let _ = conn;
    let t = std::thread::spawn(move || {
        let r = b.batch_execute("LOCK TABLE m");
        let st = r.err().and_then(|e| sqlstate(&e));
        let _ = b.batch_execute("ROLLBACK");
        st
    });
    std::thread::sleep(Duration::from_millis(200));
    let ra = a.batch_execute("LOCK TABLE h");
    let sb = t.join().unwrap();
    let sa = ra.err().and_then(|e| sqlstate(&e));
    let _ = a.batch_execute("ROLLBACK");
    assert!(
        sa.as_deref() == Some("40P01") || sb.as_deref() == Some("40P01"),
        "a deadlock is detected: {sa:?} {sb:?}"
    );
}

#[test]
fn serialization_failures_carry_postgresql_messages() {
    let c = Cluster::start();
    let mut a = c.connect();
    a.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, v int) SERVER memfdw; \
         INSERT INTO m VALUES (1, 0), (2, 0), (3, 0)",
    )
    .unwrap();
    let mut b = c.connect();
    // REPEATABLE READ: a row updated since the snapshot.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM m")
        .unwrap();
    b.batch_execute("UPDATE m SET v = 1 WHERE id = 1").unwrap();
    let e = a
        .batch_execute("UPDATE m SET v = 5 WHERE id = 1")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("40001"));
    assert_eq!(
        message(&e),
        "could not serialize access due to concurrent update"
    );
    a.batch_execute("ROLLBACK").unwrap();
    // ... a row deleted since the snapshot.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM m")
        .unwrap();
    b.batch_execute("DELETE FROM m WHERE id = 2").unwrap();
    let e = a
        .batch_execute("UPDATE m SET v = 5 WHERE id = 2")
        .unwrap_err();
    assert_eq!(
        message(&e),
        "could not serialize access due to concurrent delete"
    );
    a.batch_execute("ROLLBACK").unwrap();
    // SERIALIZABLE: write skew.
    a.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT sum(v) FROM m")
        .unwrap();
    b.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT sum(v) FROM m")
        .unwrap();
    a.batch_execute("UPDATE m SET v = v + 1 WHERE id = 1")
        .unwrap();
    b.batch_execute("UPDATE m SET v = v + 1 WHERE id = 3")
        .unwrap();
    a.batch_execute("COMMIT").unwrap();
    let e = b.batch_execute("COMMIT").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("40001"));
    assert_eq!(
        message(&e),
        "could not serialize access due to read/write dependencies among transactions"
    );
    let detail = e.as_db_error().and_then(|d| d.detail()).unwrap_or_default();
    assert!(detail.starts_with("memfdw: "), "{detail}");
}
