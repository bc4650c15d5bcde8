//! A statement that needs a unique key another transaction inserted and has not
//! committed waits for that transaction, as on heap tables: then it raises 23505 if
//! the other committed, or goes on if it aborted; `INSERT ... ON CONFLICT DO NOTHING`
//! waits the same way and then skips, never storing a second row with the key.

use memfdw_e2e::{sqlstate, Cluster};
use postgres::Client;
use std::time::{Duration, Instant};

fn setup() -> (Cluster, Client, Client) {
    let c = Cluster::start();
    let mut a = c.connect();
    a.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE u (k int PRIMARY KEY, who text) SERVER memfdw",
    )
    .unwrap();
    let b = c.connect();
    (c, a, b)
}

/// Runs `sql` in another session, returning (SQLSTATE or None, how long it took).
fn in_thread(
    c: &Cluster,
    sql: &'static str,
) -> std::thread::JoinHandle<(Option<String>, Duration, u64)> {
    let conn = c.conn_str();
    std::thread::spawn(move || {
        let mut s = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        let t = Instant::now();
        let r = s.execute(sql, &[]);
        let el = t.elapsed();
        match r {
            Ok(n) => (None, el, n),
            Err(e) => (sqlstate(&e), el, 0),
        }
    })
}

#[test]
fn a_second_inserter_of_a_key_waits_for_the_first() {
    let (c, mut a, _b) = setup();
    for commit in [true, false] {
        a.batch_execute("BEGIN; INSERT INTO u VALUES (1, 'a')")
            .unwrap();
        let t = in_thread(&c, "INSERT INTO u VALUES (1, 'b')");
        std::thread::sleep(Duration::from_millis(400));
        assert!(!t.is_finished(), "the second inserter waits");
        a.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
            .unwrap();
        let (state, took, _) = t.join().unwrap();
        assert!(took >= Duration::from_millis(350));
        let who: Vec<String> = a
            .query("SELECT who FROM u WHERE k = 1", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if commit {
            assert_eq!(state.as_deref(), Some("23505"));
            assert_eq!(who, vec!["a"]);
        } else {
            assert_eq!(state, None, "the first aborted: the second goes on");
            assert_eq!(who, vec!["b"]);
        }
        a.batch_execute("DELETE FROM u").unwrap();
    }
    // A waiter can be cancelled by lock_timeout, like any lock wait.
    a.batch_execute("BEGIN; INSERT INTO u VALUES (2, 'a')")
        .unwrap();
    let conn = c.conn_str();
    let mut s = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
    s.batch_execute("SET lock_timeout = '200ms'").unwrap();
    let e = s.execute("INSERT INTO u VALUES (2, 'b')", &[]).unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55P03"), "{e}");
    a.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn on_conflict_do_nothing_waits_and_skips() {
    let (c, mut a, mut b) = setup();
    b.batch_execute("INSERT INTO u VALUES (5, 'old') ON CONFLICT DO NOTHING")
        .unwrap();
    let n = b
        .execute(
            "INSERT INTO u VALUES (5, 'again'), (6, 'new') ON CONFLICT DO NOTHING",
            &[],
        )
        .unwrap();
    assert_eq!(n, 1, "the row with a taken key is skipped");
    a.batch_execute("BEGIN; INSERT INTO u VALUES (7, 'a')")
        .unwrap();
    let t = in_thread(&c, "INSERT INTO u VALUES (7, 'b') ON CONFLICT DO NOTHING");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "waits for the uncommitted inserter");
    a.batch_execute("COMMIT").unwrap();
    let (state, _, n) = t.join().unwrap();
    assert_eq!((state, n), (None, 0), "skipped once the first committed");
    let rows: Vec<(i32, String)> = a
        .query("SELECT k, who FROM u ORDER BY k", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![(5, "old".into()), (6, "new".into()), (7, "a".into())]
    );
}

#[test]
fn an_update_to_a_key_being_inserted_waits_too() {
    let (c, mut a, mut b) = setup();
    b.batch_execute("INSERT INTO u VALUES (1, 'x')").unwrap();
    a.batch_execute("BEGIN; INSERT INTO u VALUES (2, 'a')")
        .unwrap();
    let t = in_thread(&c, "UPDATE u SET k = 2 WHERE k = 1");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished());
    a.batch_execute("COMMIT").unwrap();
    let (state, _, _) = t.join().unwrap();
    assert_eq!(state.as_deref(), Some("23505"));
}
