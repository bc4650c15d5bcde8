//! `memfdw.import` / `memfdw.import_resume`: batches committed in key order, with
//! duplicates stopping the job (nothing of the failing batch stored), skipped or
//! recorded; resumed after an error, a cancel or a crash without loading a row twice;
//! progress visible; only the target's owner imports, and each user sees only their
//! jobs.

use memfdw_e2e::{one, sqlstate, Cluster};
use postgres::Client;
use std::time::Duration;

fn setup(s: &mut Client) {
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE src (id int PRIMARY KEY, email text NOT NULL, v int); \
         INSERT INTO src SELECT g, 'e' || g, g FROM generate_series(1, 20000) g; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, email text NOT NULL UNIQUE, v int) \
           SERVER memfdw",
    )
    .unwrap();
}

#[test]
fn batches_duplicates_and_progress() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    // A first import in batches of 3,000, by the target's primary key.
    let job: i64 = one(
        &mut s,
        "CALL memfdw.import('m', 'SELECT * FROM src WHERE id <= 10000', batch_rows => 3000)",
    );
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 10000);
    let (state, done, batches, est): (String, i64, i64, i64) = {
        let r = s
            .query_one(
                "SELECT state, rows_done, batches, estimated_total FROM memfdw.import_progress WHERE job = $1",
                &[&job],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!((state.as_str(), done, batches), ("done", 10000, 4));
    assert!(est > 1000, "estimate {est}");

    // A duplicate stops the job: the batches before it are in, nothing of its batch.
    s.batch_execute("INSERT INTO m VALUES (15500, 'other', 0)")
        .unwrap();
    let e = s
        .batch_execute(
            "CALL memfdw.import('m', 'SELECT * FROM src WHERE id > 10000', batch_rows => 2000)",
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    let job2: i64 = one(&mut s, "SELECT max(job) FROM memfdw.import_jobs");
    assert_eq!(
        one::<String>(
            &mut s,
            &format!("SELECT state FROM memfdw.import_jobs WHERE job = {job2}")
        ),
        "failed"
    );
    // Batches of 2,000 after 10,000: 10,001-12,000, ..., 14,001-16,000 holds 15,500.
    assert_eq!(
        one::<i64>(&mut s, "SELECT count(*) FROM m"),
        10000 + 4000 + 1
    );
    assert_eq!(
        one::<i64>(
            &mut s,
            "SELECT count(*) FROM m WHERE id BETWEEN 14001 AND 16000"
        ),
        1
    );
    // Fixed, resumed: it goes on from the failed batch, every row once.
    // (CALL alone: a procedure that commits cannot run in a multi-statement query.)
    s.batch_execute("DELETE FROM m WHERE id = 15500").unwrap();
    s.batch_execute(&format!("CALL memfdw.import_resume({job2})"))
        .unwrap();
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 20000);
    assert_eq!(
        one::<i64>(
            &mut s,
            "SELECT count(*) FROM (SELECT * FROM m EXCEPT SELECT * FROM src) x"
        ),
        0
    );

    // skip and record: rows whose keys are taken are left out, counted, recorded.
    s.batch_execute("TRUNCATE m; INSERT INTO m SELECT id, email, -1 FROM src WHERE id % 10 = 0")
        .unwrap();
    let j3: i64 = one(
        &mut s,
        "CALL memfdw.import('m', 'SELECT * FROM src', on_duplicate => 'skip', batch_rows => 4096)",
    );
    let r = s
        .query_one(
            "SELECT rows_done, rows_skipped FROM memfdw.import_jobs WHERE job = $1",
            &[&j3],
        )
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (18000, 2000));
    assert_eq!(
        one::<i64>(&mut s, "SELECT count(*) FROM m WHERE v = -1"),
        2000
    );
    s.batch_execute(
        "TRUNCATE m; INSERT INTO m SELECT id + 100000, 'e' || id, -1 FROM src WHERE id % 1000 = 7",
    )
    .unwrap();
    let j4: i64 = one(
        &mut s,
        "CALL memfdw.import('m', 'SELECT * FROM src', on_duplicate => 'record')",
    );
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 20000);
    let recorded: Vec<String> = s
        .query(
            "SELECT key::text || ' ' || (\"row\"->>'email') FROM m_import_conflicts WHERE job = $1 ORDER BY (key->>'id')::int",
            &[&j4],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(recorded.len(), 20);
    assert_eq!(recorded[0], r#"{"id": 7} e7"#);

    // Bad input.
    for (q, code) in [
        ("CALL memfdw.import('src', 'SELECT 1')", "42809"),
        (
            "CALL memfdw.import('m', 'SELECT * FROM src', on_duplicate => 'maybe')",
            "22023",
        ),
        (
            "CALL memfdw.import('m', 'SELECT * FROM src', batch_rows => 0)",
            "22023",
        ),
        ("CALL memfdw.import('m', 'SELECT * FROM nosuch')", "42P01"),
        (
            "CALL memfdw.import('m', 'SELECT * FROM src', order_by => 'nope')",
            "42703",
        ),
        ("CALL memfdw.import_resume(424242)", "42704"),
    ] {
        let e = s.batch_execute(q).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{q}: {e}");
    }
    // Refused jobs leave no job behind.
    assert_eq!(
        one::<i64>(&mut s, "SELECT count(*) FROM memfdw.import_jobs"),
        4
    );
    // order_by must identify rows: NULL keys and keys shared by rows are errors (the
    // job fails; rows before the batch stay).
    s.batch_execute("TRUNCATE m").unwrap();
    for (q, code) in [
        (
            "CALL memfdw.import('m', 'SELECT id, email, v FROM src WHERE id <= 100 \
               UNION ALL SELECT 1000000, ''n'', NULL', order_by => 'v', batch_rows => 30)",
            "22004",
        ),
        (
            "CALL memfdw.import('m', 'SELECT id, email, v / 2 AS v FROM src WHERE id <= 100', \
               order_by => 'v', batch_rows => 30)",
            "22023",
        ),
    ] {
        s.batch_execute("TRUNCATE m").unwrap();
        let e = s.batch_execute(q).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{q}: {e}");
    }
    // A key of two columns, not the target's primary key.
    s.batch_execute("TRUNCATE m").unwrap();
    let j5: i64 = one(
        &mut s,
        "CALL memfdw.import('m', 'SELECT id, email, v % 7 AS v FROM src', \
           order_by => 'v, id', batch_rows => 999)",
    );
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 20000);
    assert_eq!(
        one::<i64>(
            &mut s,
            &format!("SELECT rows_done FROM memfdw.import_jobs WHERE job = {j5}")
        ),
        20000
    );
    // It commits: not inside a transaction block.
    let e = s
        .batch_execute("BEGIN; CALL memfdw.import('m', 'SELECT * FROM src WHERE false')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("2D000"), "{e}");
    s.batch_execute("ROLLBACK").unwrap();

    // Only the target's owner imports; others do not see the jobs.
    s.batch_execute(
        "CREATE ROLE other LOGIN; GRANT ALL ON m, src TO other; \
         GRANT USAGE ON SCHEMA memfdw TO other",
    )
    .unwrap();
    let mut o = c.connect_as("other", "postgres");
    let e = o
        .batch_execute("CALL memfdw.import('m', 'SELECT * FROM src')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    assert_eq!(
        one::<i64>(&mut o, "SELECT count(*) FROM memfdw.import_progress"),
        0
    );
    let e = o
        .batch_execute(&format!("CALL memfdw.import_resume({job2})"))
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42704"), "{e}");
    // A superuser sees every job but does not run another user's: the job runs its
    // owner's SQL.
    s.batch_execute(
        "CREATE FOREIGN TABLE om (id int, email text, v int) SERVER memfdw; \
         ALTER FOREIGN TABLE om OWNER TO other",
    )
    .unwrap();
    o.batch_execute(
        "CALL memfdw.import('om', 'SELECT id, email, v FROM src', order_by => 'id', batch_rows => 5000)",
    )
    .unwrap();
    assert_eq!(one::<i64>(&mut o, "SELECT count(*) FROM om"), 20000);
    let oj: i64 = one(
        &mut s,
        "SELECT max(job) FROM memfdw.import_jobs WHERE owner = 'other'",
    );
    let e = s
        .batch_execute(&format!("CALL memfdw.import_resume({oj})"))
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
}

/// Waits until a session runs a CALL that waits for a lock.
fn wait_for_blocked_call(s: &mut Client) {
    let t0 = std::time::Instant::now();
    loop {
        let n: i64 = one(
            s,
            "SELECT count(*) FROM pg_stat_activity \
              WHERE query LIKE 'CALL memfdw.import%' AND wait_event_type = 'Lock'",
        );
        if n > 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the import never waited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cancel and a crash in the middle of a batch (the batch waits for a key another
/// transaction inserted): resumed, every row once.
#[test]
fn resumes_after_cancel_and_crash() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    // Key 5000 is being inserted by a transaction that stays open: the batch
    // 4001-5000 waits for it.
    let mut blocker = c.connect();
    blocker
        .batch_execute("BEGIN; INSERT INTO m VALUES (5000, 'zz', 0)")
        .unwrap();
    let mut runner = c.connect();
    let cancel = runner.cancel_token();
    let t = std::thread::spawn(move || {
        runner
            .batch_execute("CALL memfdw.import('m', 'SELECT * FROM src', batch_rows => 1000)")
            .unwrap_err()
    });
    wait_for_blocked_call(&mut s);
    cancel.cancel_query(postgres::NoTls).unwrap();
    let e = t.join().unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    let job: i64 = one(&mut s, "SELECT max(job) FROM memfdw.import_jobs");
    let progress = format!("SELECT rows_done FROM memfdw.import_jobs WHERE job = {job}");
    assert_eq!(one::<i64>(&mut s, &progress), 4000);
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 4000);

    // Resumed in another session, which waits again; the server crashes.
    let conn = c.conn_str();
    let t = std::thread::spawn(move || {
        let mut r = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        let _ = r.batch_execute(&format!("CALL memfdw.import_resume({job})"));
    });
    wait_for_blocked_call(&mut s);
    c.kill9();
    let _ = t.join();
    drop(blocker);
    c.restart();
    let mut s = c.connect_retry(Duration::from_secs(60));
    assert_eq!(one::<i64>(&mut s, &progress), 4000);
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 4000);
    s.batch_execute(&format!("CALL memfdw.import_resume({job})"))
        .unwrap();
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 20000);
    assert_eq!(
        one::<i64>(
            &mut s,
            "SELECT count(*) FROM (SELECT * FROM m EXCEPT SELECT * FROM src) x"
        ),
        0
    );
    assert_eq!(
        one::<String>(
            &mut s,
            &format!(
                "SELECT state || ' ' || rows_done || ' ' || rows_skipped \
                   FROM memfdw.import_jobs WHERE job = {job}"
            )
        ),
        "done 20000 0"
    );
}
