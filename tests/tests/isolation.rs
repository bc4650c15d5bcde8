//! Isolation levels through SQL, as PostgreSQL's: REPEATABLE READ reads the snapshot
//! of its start and refuses lost updates (40001) but allows write skew; SERIALIZABLE
//! also refuses write skew and phantoms (40001); READ COMMITTED queues updates.

use memfdw_e2e::{sqlstate, Cluster};
use postgres::Client;

fn setup() -> (Cluster, Client, Client) {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE doc (id int PRIMARY KEY, oncall bool, shift int) SERVER memfdw; \
         INSERT INTO doc VALUES (1, true, 1), (2, true, 1), (3, false, 2)",
    )
    .unwrap();
    let other = c.connect();
    (c, s, other)
}

fn state(r: Result<(), postgres::Error>) -> Option<String> {
    r.err().map(|e| sqlstate(&e).unwrap_or_default())
}

#[test]
fn write_skew_is_refused_under_serializable_only() {
    let (_c, mut a, mut b) = setup();
    for level in ["SERIALIZABLE", "REPEATABLE READ"] {
        a.batch_execute("UPDATE doc SET oncall = true WHERE id IN (1, 2)")
            .unwrap();
        // Each doctor goes off call if somebody else is still on call.
        a.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .unwrap();
        b.batch_execute(&format!("BEGIN ISOLATION LEVEL {level}"))
            .unwrap();
        let na: i64 = a
            .query_one("SELECT count(*) FROM doc WHERE oncall AND shift = 1", &[])
            .unwrap()
            .get(0);
        let nb: i64 = b
            .query_one("SELECT count(*) FROM doc WHERE oncall AND shift = 1", &[])
            .unwrap()
            .get(0);
        assert_eq!((na, nb), (2, 2));
        let ra = a
            .batch_execute("UPDATE doc SET oncall = false WHERE id = 1")
            .and_then(|_| a.batch_execute("COMMIT"));
        let rb = b
            .batch_execute("UPDATE doc SET oncall = false WHERE id = 2")
            .and_then(|_| b.batch_execute("COMMIT"));
        let (sa, sb) = (state(ra), state(rb));
        assert_eq!(sa, None, "{level}: the first committer wins");
        let on: i64 = a
            .query_one("SELECT count(*) FROM doc WHERE oncall", &[])
            .unwrap()
            .get(0);
        if level == "SERIALIZABLE" {
            assert_eq!(sb.as_deref(), Some("40001"), "{level}");
            let _ = b.batch_execute("ROLLBACK");
            assert_eq!(on, 1, "{level}: somebody stays on call");
        } else {
            // Snapshot isolation, as PostgreSQL's REPEATABLE READ: both commit.
            assert_eq!(sb, None, "{level}");
            assert_eq!(on, 0, "{level}: write skew");
        }
    }
    // READ COMMITTED allows it, as in PostgreSQL.
    a.batch_execute("UPDATE doc SET oncall = true WHERE id IN (1, 2)")
        .unwrap();
    a.batch_execute("BEGIN; SELECT count(*) FROM doc WHERE oncall")
        .unwrap();
    b.batch_execute("BEGIN; SELECT count(*) FROM doc WHERE oncall")
        .unwrap();
    a.batch_execute("UPDATE doc SET oncall = false WHERE id = 1; COMMIT")
        .unwrap();
    b.batch_execute("UPDATE doc SET oncall = false WHERE id = 2; COMMIT")
        .unwrap();
}

#[test]
fn snapshot_levels_never_show_newer_data_and_refuse_lost_updates() {
    let (_c, mut a, mut b) = setup();
    // A row changed after the start reads as it was at the start.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let s1: i32 = a
        .query_one("SELECT shift FROM doc WHERE id = 3", &[])
        .unwrap()
        .get(0);
    assert_eq!(s1, 2);
    b.batch_execute("UPDATE doc SET shift = 9 WHERE id = 3")
        .unwrap();
    let s2: i32 = a
        .query_one("SELECT shift FROM doc WHERE id = 3", &[])
        .unwrap()
        .get(0);
    assert_eq!(s2, 2, "the snapshot's version");
    // ... and updating it is a lost update: 40001.
    let r = a.batch_execute("UPDATE doc SET shift = shift + 1 WHERE id = 3");
    assert_eq!(state(r).as_deref(), Some("40001"));
    a.batch_execute("ROLLBACK").unwrap();
    // A phantom (a row inserted after the start) is not shown either; a read-only
    // serializable transaction commits, a writing one fails.
    for writes in [false, true] {
        a.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .unwrap();
        let n: i64 = a
            .query_one("SELECT count(*) FROM doc WHERE id > 10", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, writes as i64, "rows inserted before");
        b.batch_execute(&format!(
            "INSERT INTO doc VALUES ({}, false, 3)",
            11 + writes as i32
        ))
        .unwrap();
        let n: i64 = a
            .query_one("SELECT count(*) FROM doc WHERE id > 10", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, writes as i64, "the snapshot");
        let mut r = Ok(());
        if writes {
            r = a.batch_execute("UPDATE doc SET shift = shift WHERE id = 2");
        }
        let r = r.and_then(|_| a.batch_execute("COMMIT"));
        if writes {
            assert_eq!(state(r).as_deref(), Some("40001"));
            let _ = a.batch_execute("ROLLBACK");
        } else {
            assert_eq!(state(r), None, "read only: serializable at its snapshot");
        }
    }
    // Lost update: the second updater of a row fails instead of overwriting.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM doc WHERE id = 1")
        .unwrap();
    b.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; UPDATE doc SET shift = shift + 1 WHERE id = 1",
    )
    .unwrap();
    let waiter = std::thread::spawn(move || {
        let r = a.batch_execute("UPDATE doc SET shift = shift + 10 WHERE id = 1");
        let st = state(r);
        let _ = a.batch_execute("ROLLBACK");
        st
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    b.batch_execute("COMMIT").unwrap();
    assert_eq!(waiter.join().unwrap().as_deref(), Some("40001"));
    let shift: i32 = b
        .query_one("SELECT shift FROM doc WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(shift, 2);
    // READ COMMITTED: the same race queues and both increments land.
    let mut c2 = _c.connect();
    c2.batch_execute("BEGIN; UPDATE doc SET shift = shift + 1 WHERE id = 1")
        .unwrap();
    let t = std::thread::spawn(move || {
        b.batch_execute("UPDATE doc SET shift = shift + 10 WHERE id = 1")
            .unwrap();
        b
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    c2.batch_execute("COMMIT").unwrap();
    let mut b = t.join().unwrap();
    let shift: i32 = b
        .query_one("SELECT shift FROM doc WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(shift, 13);
}
