//! Rows that UPDATE, DELETE and SELECT FOR UPDATE target are locked as they are
//! fetched: concurrent increments queue up and all succeed (READ COMMITTED), waits end
//! with deadlock detection, lock_timeout, statement_timeout or cancel, NOWAIT and SKIP
//! LOCKED behave as in PostgreSQL, and a rolled-back savepoint releases its locks.

use memfdw_e2e::{sqlstate, Cluster};
use postgres::{Client, NoTls};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn setup() -> (Cluster, Client) {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE ctr (id int PRIMARY KEY, n int) SERVER memfdw; \
         INSERT INTO ctr VALUES (1, 0), (2, 0), (3, 0)",
    )
    .unwrap();
    (c, s)
}

fn n(s: &mut Client, id: i32) -> i32 {
    s.query_one("SELECT n FROM ctr WHERE id = $1", &[&id])
        .unwrap()
        .get(0)
}

#[test]
fn eight_sessions_incrementing_one_row_lose_nothing_and_fail_nothing() {
    let (c, mut s) = setup();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let mut s = c.connect();
            std::thread::spawn(move || {
                for i in 0..150 {
                    // Through the index and through a full scan, with and without a
                    // transaction block.
                    let sql = if i % 2 == 0 {
                        "UPDATE ctr SET n = n + 1 WHERE id = 1"
                    } else {
                        "UPDATE ctr SET n = n + 1 WHERE n >= 0 AND id + 0 = 1"
                    };
                    if w % 2 == 0 {
                        s.batch_execute(sql).unwrap();
                    } else {
                        s.batch_execute(&format!(
                            "BEGIN; {sql}; UPDATE ctr SET n = n + 1 WHERE id = 3; COMMIT"
                        ))
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(n(&mut s, 1), 8 * 150);
    assert_eq!(n(&mut s, 3), 4 * 150);
    // DELETE waits too, then sees the row gone or changed.
    let mut a = c.connect();
    a.batch_execute("BEGIN; UPDATE ctr SET n = -1 WHERE id = 2")
        .unwrap();
    let mut b = c.connect();
    let waiter = std::thread::spawn(move || {
        b.execute("DELETE FROM ctr WHERE id = 2 AND n = 0", &[])
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    a.batch_execute("COMMIT").unwrap();
    // The newest version (n = -1) no longer qualifies: nothing is deleted.
    assert_eq!(waiter.join().unwrap(), 0);
    assert_eq!(n(&mut s, 2), -1);
}

#[test]
fn waits_end_in_deadlock_detection_timeouts_or_cancel() {
    let (c, _s) = setup();
    // Deadlock: each holds one row and wants the other's.
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = [(1, 2), (2, 1)]
        .into_iter()
        .map(|(first, second)| {
            let mut s = c.connect();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                s.batch_execute("SET deadlock_timeout = '200ms'; BEGIN")
                    .unwrap();
                s.execute("UPDATE ctr SET n = n + 1 WHERE id = $1", &[&first])
                    .unwrap();
                barrier.wait();
                let r = s.execute("UPDATE ctr SET n = n + 1 WHERE id = $1", &[&second]);
                let st = r.err().map(|e| sqlstate(&e).unwrap_or_default());
                if st.is_some() {
                    s.batch_execute("ROLLBACK").unwrap();
                } else {
                    s.batch_execute("COMMIT").unwrap();
                }
                st
            })
        })
        .collect();
    let states: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(states.contains(&Some("40P01".to_string())), "{states:?}");
    assert!(states.contains(&None), "the other one goes on: {states:?}");

    let mut holder = c.connect();
    holder
        .batch_execute("BEGIN; SELECT * FROM ctr WHERE id = 1 FOR UPDATE")
        .unwrap();
    let mut s = c.connect();
    // lock_timeout
    let t = Instant::now();
    let e = s
        .batch_execute("SET lock_timeout = '300ms'; UPDATE ctr SET n = 5 WHERE id = 1")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"));
    assert!(t.elapsed() < Duration::from_secs(5));
    // statement_timeout
    let e = s
        .batch_execute(
            "SET lock_timeout = 0; SET statement_timeout = '300ms'; DELETE FROM ctr WHERE id = 1",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    s.batch_execute("SET statement_timeout = 0").unwrap();
    // NOWAIT and SKIP LOCKED
    let e = s
        .batch_execute("SELECT * FROM ctr WHERE id = 1 FOR UPDATE NOWAIT")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"));
    let ids: Vec<i32> = s
        .query("SELECT id FROM ctr ORDER BY id FOR UPDATE SKIP LOCKED", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [2, 3]);
    // Cancel from another connection.
    let cancel = s.cancel_token();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cancel.cancel_query(NoTls).unwrap();
    });
    let e = s
        .batch_execute("UPDATE ctr SET n = 7 WHERE id = 1")
        .unwrap_err();
    canceller.join().unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"));
    // After the holder ends, the row is free.
    holder.batch_execute("COMMIT").unwrap();
    s.batch_execute("UPDATE ctr SET n = 9 WHERE id = 1")
        .unwrap();
    assert_eq!(n(&mut s, 1), 9);
}

#[test]
fn a_rolled_back_savepoint_releases_its_row_locks() {
    let (c, mut s) = setup();
    s.batch_execute(
        "BEGIN; UPDATE ctr SET n = 1 WHERE id = 3; SAVEPOINT a; UPDATE ctr SET n = 1 WHERE id = 1",
    )
    .unwrap();
    let mut other = c.connect();
    other.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let e = other
        .batch_execute("UPDATE ctr SET n = 2 WHERE id = 1")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"));
    s.batch_execute("ROLLBACK TO a").unwrap();
    other
        .batch_execute("UPDATE ctr SET n = 2 WHERE id = 1")
        .unwrap();
    // The lock taken before the savepoint is still held.
    let e = other
        .batch_execute("UPDATE ctr SET n = 2 WHERE id = 3")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"));
    s.batch_execute("COMMIT").unwrap();
    assert_eq!(n(&mut other, 1), 2);
    assert_eq!(n(&mut other, 3), 1);
}

/// A waiter waits for the subtransaction that took the lock: rolling that savepoint
/// back lets it go on while the holder's transaction stays open. A savepoint that is
/// released keeps its locks, and locks its parent takes afterwards are waited for
/// like any other (NOWAIT fails at once, lock_timeout applies).
#[test]
fn waits_follow_the_subtransaction_that_took_the_lock() {
    let (c, mut s) = setup();
    s.batch_execute(
        "BEGIN; UPDATE ctr SET n = 1 WHERE id = 3; SAVEPOINT a; UPDATE ctr SET n = 1 WHERE id = 1",
    )
    .unwrap();
    let conn = c.conn_str();
    let waiter = std::thread::spawn(move || {
        let mut o = Client::connect(&conn, NoTls).unwrap();
        let t = Instant::now();
        o.batch_execute("UPDATE ctr SET n = 2 WHERE id = 1")
            .unwrap();
        t.elapsed()
    });
    std::thread::sleep(Duration::from_millis(500));
    s.batch_execute("ROLLBACK TO a").unwrap();
    let waited = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(3),
        "the waiter went on at the rollback, not at the end: {waited:?}"
    );
    s.batch_execute("ROLLBACK").unwrap();

    s.batch_execute(
        "BEGIN; SAVEPOINT b; SELECT id FROM ctr WHERE id = 2 FOR UPDATE; RELEASE b; \
         SELECT id FROM ctr WHERE id = 1 FOR UPDATE",
    )
    .unwrap();
    let mut other = c.connect();
    // (Without the holder's lock behind the row lock, NOWAIT would poll until this.)
    other.batch_execute("SET statement_timeout = '5s'").unwrap();
    let t = Instant::now();
    let e = other
        .batch_execute("SELECT id FROM ctr WHERE id = 1 FOR UPDATE NOWAIT")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"));
    assert!(t.elapsed() < Duration::from_secs(2), "NOWAIT did not wait");
    other.batch_execute("SET lock_timeout = '200ms'").unwrap();
    for id in [1, 2] {
        let e = other
            .batch_execute(&format!("UPDATE ctr SET n = 5 WHERE id = {id}"))
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "row {id}");
    }
    s.batch_execute("COMMIT").unwrap();
    other
        .batch_execute("UPDATE ctr SET n = 5 WHERE id IN (1, 2)")
        .unwrap();
}

/// A transaction waiting for a row goes on as soon as the holder's commit is installed,
/// not after the holder's log sync and the rest of its commit; what it then reads is
/// the committed row, and both updates survive.
#[test]
fn a_row_passes_to_its_waiter_before_the_holders_log_sync() {
    let c = Cluster::start();
    c.stop_fast();
    c.append_conf("memfdw.debug_log_sync_delay = 700\n");
    c.restart();
    let mut a = c.connect();
    a.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE hot (id int PRIMARY KEY, n int) SERVER memfdw; \
         INSERT INTO hot VALUES (1, 0)",
    )
    .unwrap();
    a.batch_execute("BEGIN; UPDATE hot SET n = n + 1 WHERE id = 1")
        .unwrap();
    let conn = c.conn_str();
    let waiter = std::thread::spawn(move || {
        let mut b = Client::connect(&conn, NoTls).unwrap();
        b.batch_execute("BEGIN").unwrap();
        let n: i32 = b
            .query_one("UPDATE hot SET n = n + 1 WHERE id = 1 RETURNING n", &[])
            .unwrap()
            .get(0);
        let updated = Instant::now();
        b.batch_execute("COMMIT").unwrap();
        (n, updated)
    });
    // Let the waiter queue up behind the row lock.
    std::thread::sleep(Duration::from_millis(300));
    a.batch_execute("COMMIT").unwrap();
    let committed = Instant::now();
    let (seen, updated) = waiter.join().unwrap();
    assert_eq!(seen, 2, "the waiter updated the committed row");
    assert!(
        updated + Duration::from_millis(300) < committed,
        "the waiter went on during the holder's log sync ({:?} before its COMMIT returned)",
        committed.saturating_duration_since(updated)
    );
    let total: i32 = a
        .query_one("SELECT n FROM hot WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, 2);
    // A waiter that finds the row gone depends on the delete it waited for: its
    // commit (nothing written) returns only once that delete is durable.
    a.batch_execute("BEGIN; DELETE FROM hot WHERE id = 1")
        .unwrap();
    let conn = c.conn_str();
    let waiter = std::thread::spawn(move || {
        let mut b = Client::connect(&conn, NoTls).unwrap();
        let n = b.execute("DELETE FROM hot WHERE id = 1", &[]).unwrap();
        (n, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    a.batch_execute("COMMIT").unwrap();
    let committed = Instant::now();
    let (deleted, done) = waiter.join().unwrap();
    assert_eq!(deleted, 0);
    assert!(
        done + Duration::from_millis(200) > committed,
        "the waiter's commit did not wait for the delete's log sync ({:?} early)",
        committed.saturating_duration_since(done)
    );
}
