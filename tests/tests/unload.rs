//! `memfdw.unload` / `memfdw.load`: a table's rows leave memory (to a spill file, or
//! discarded) and come back with their indexes; the state survives crashes (old or
//! new, never half); an unloaded table refuses reads, writes and DDL with 55000 naming
//! `memfdw.load`; a table another session uses is refused at once (55006); only the
//! owner may unload or load; a damaged spill file is reported, not loaded; a crash in
//! the middle of either leaves the old state.

use memfdw_e2e::{one, plan, sqlstate, Cluster};
use postgres::Client;
use std::time::{Duration, Instant};

fn err(s: &mut Client, q: &str) -> (String, String) {
    let e = s.batch_execute(q).unwrap_err();
    let msg = e
        .as_db_error()
        .map(|d| format!("{} {}", d.message(), d.hint().unwrap_or("")))
        .unwrap_or_default();
    (sqlstate(&e).unwrap_or_default(), msg)
}

fn setup(s: &mut Client) {
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, email text NOT NULL UNIQUE, v numeric, note text) \
           SERVER memfdw; \
         CREATE TABLE h (id int PRIMARY KEY, email text NOT NULL UNIQUE, v numeric, note text); \
         INSERT INTO h SELECT g, 'e' || g, g * 1.5, CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('n', g % 50) END \
           FROM generate_series(1, 20000) g; \
         INSERT INTO m SELECT * FROM h; \
         CREATE INDEX m_v ON m (v)",
    )
    .unwrap();
}

/// The rows of `t`, as one digest (compared with the heap copy).
fn digest(s: &mut Client, t: &str) -> String {
    one(
        s,
        &format!("SELECT md5(string_agg(x::text, ',' ORDER BY id)) FROM {t} x"),
    )
}

fn state(s: &mut Client) -> (String, i64, Option<i64>) {
    let r = s
        .query_one(
            "SELECT state, rows, spill_bytes FROM memfdw.tables() WHERE table_name = 'm'",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

fn spill_files(c: &Cluster) -> usize {
    std::fs::read_dir(c.redo_dir().join("spill"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn spill_and_load_survive_crashes_with_their_indexes() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let want = digest(&mut s, "h");
    assert_eq!(digest(&mut s, "m"), want);
    let before: i64 = one(&mut s, "SELECT in_use_bytes FROM memfdw.memory()");

    assert_eq!(one::<i64>(&mut s, "SELECT memfdw.unload('m')"), 20000);
    let (st, rows, bytes) = state(&mut s);
    assert_eq!((st.as_str(), rows), ("spilled", 0));
    assert!(bytes.unwrap() > 20000 * 10, "{bytes:?}");
    assert_eq!(spill_files(&c), 1);
    // The memory is free at once for other tables.
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    let after: i64 = one(&mut s, "SELECT in_use_bytes FROM memfdw.memory()");
    assert!(after < before - 1_000_000, "{before} -> {after}");

    // Unloaded: reads, writes and DDL refuse, naming memfdw.load.
    for q in [
        "SELECT count(*) FROM m",
        "SELECT * FROM m WHERE id = 5",
        "INSERT INTO m VALUES (0, 'x', 0, '')",
        "UPDATE m SET v = 0 WHERE id = 1",
        "DELETE FROM m",
        "COPY (SELECT * FROM m) TO STDOUT",
        "TRUNCATE m",
        "ALTER TABLE m ADD COLUMN z int",
        "CREATE INDEX ON m (note)",
        "DROP INDEX m_v",
        "CREATE DATABASE copy_of_it TEMPLATE postgres",
    ] {
        let (code, msg) = err(&mut s, q);
        assert_eq!(code, "55000", "{q}: {msg}");
        assert!(msg.contains("memfdw.load("), "{q}: {msg}");
    }
    // ANALYZE skips it (a database-wide ANALYZE must not fail on it).
    s.batch_execute("ANALYZE m").unwrap();
    s.batch_execute("ANALYZE").unwrap();

    // A crash keeps it spilled; the file is still there after a checkpoint.
    let mut s = c.crash_and_restart();
    assert_eq!(state(&mut s).0, "spilled");
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    assert_eq!(spill_files(&c), 1);
    assert_eq!(err(&mut s, "SELECT count(*) FROM m").0, "55000");

    // Load: rows and indexes back, unique keys enforced again. In a repeatable read
    // transaction whose snapshot came first: the rows keep their TIDs, and the
    // engine's TIDs stayed above them across the restart (the log that held them is
    // gone).
    s.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM h"), 20000);
    assert_eq!(one::<i64>(&mut s, "SELECT memfdw.load('m')"), 20000);
    assert_eq!(digest(&mut s, "m"), want);
    s.batch_execute("COMMIT").unwrap();
    assert_eq!(digest(&mut s, "m"), want);
    assert!(plan(&mut s, "SELECT * FROM m WHERE email = 'e77'")
        .contains("index scan using m_email_key"));
    assert_eq!(
        one::<i32>(&mut s, "SELECT id FROM m WHERE email = 'e77'"),
        77
    );
    assert_eq!(
        err(&mut s, "INSERT INTO m VALUES (20001, 'e5', 0, '')").0,
        "23505"
    );
    s.batch_execute(
        "INSERT INTO m VALUES (20001, 'new', 1, 'n'); UPDATE m SET v = -1 WHERE id = 3",
    )
    .unwrap();
    s.batch_execute(
        "INSERT INTO h VALUES (20001, 'new', 1, 'n'); UPDATE h SET v = -1 WHERE id = 3",
    )
    .unwrap();
    let want = digest(&mut s, "h");

    // A crash before any checkpoint: replay reads the spill file again.
    let mut s = c.crash_and_restart();
    assert_eq!(state(&mut s).0, "loaded");
    assert_eq!(digest(&mut s, "m"), want);
    // A checkpoint covers the loaded rows: the file goes; another crash keeps them.
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    assert_eq!(spill_files(&c), 0);
    let mut s = c.crash_and_restart();
    assert_eq!(digest(&mut s, "m"), want);
}

#[test]
fn transactions_refusals_and_privileges() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let want = digest(&mut s, "h");

    // Rolled back: nothing changes, and the file it wrote goes at the next checkpoint.
    s.batch_execute("BEGIN; SELECT memfdw.unload('m')").unwrap();
    assert_eq!(err(&mut s, "SELECT count(*) FROM m").0, "55000");
    s.batch_execute("ROLLBACK").unwrap();
    assert_eq!(digest(&mut s, "m"), want);
    assert_eq!(spill_files(&c), 1);
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    assert_eq!(spill_files(&c), 0);

    // Not after a write to it in the same transaction, nor twice.
    s.batch_execute("BEGIN; UPDATE m SET v = 0 WHERE id = 1")
        .unwrap();
    assert_eq!(err(&mut s, "SELECT memfdw.unload('m')").0, "55006");
    s.batch_execute("ROLLBACK").unwrap();

    // Another session that read it in an open transaction: refused at once.
    let mut other = c.connect();
    other
        .batch_execute("BEGIN; SELECT count(*) FROM m")
        .unwrap();
    let t = Instant::now();
    let (code, msg) = err(&mut s, "SELECT memfdw.unload('m')");
    assert_eq!(code, "55006", "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2));
    other.batch_execute("COMMIT").unwrap();
    // An open cursor of this session: refused too (as TRUNCATE).
    s.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT * FROM m; FETCH 1 FROM c")
        .unwrap();
    assert_eq!(err(&mut s, "SELECT memfdw.unload('m')").0, "55006");
    s.batch_execute("ROLLBACK").unwrap();

    // Bad input.
    assert_eq!(err(&mut s, "SELECT memfdw.unload('m', 'evict')").0, "22023");
    assert_eq!(err(&mut s, "SELECT memfdw.unload('h')").0, "42809");
    assert_eq!(err(&mut s, "SELECT memfdw.load('nope')").0, "42P01");
    assert_eq!(one::<i64>(&mut s, "SELECT memfdw.load('m')"), 0); // loaded already

    // Only the owner.
    s.batch_execute(
        "CREATE ROLE bob LOGIN; GRANT ALL ON m TO bob; GRANT USAGE ON SCHEMA memfdw TO bob",
    )
    .unwrap();
    let mut bob = c.connect_as("bob", "postgres");
    for q in ["SELECT memfdw.unload('m')", "SELECT memfdw.load('m')"] {
        assert_eq!(err(&mut bob, q).0, "42501", "{q}");
    }

    // Discard: rows gone, definition kept; load gives an empty usable table; a crash
    // keeps the state.
    assert_eq!(
        one::<i64>(&mut s, "SELECT memfdw.unload('m', mode => 'discard')"),
        20000
    );
    assert_eq!(state(&mut s), ("discarded".into(), 0, None));
    let mut s = c.crash_and_restart();
    assert_eq!(state(&mut s).0, "discarded");
    assert_eq!(one::<i64>(&mut s, "SELECT memfdw.load('m')"), 0);
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 0);
    s.batch_execute("INSERT INTO m VALUES (1, 'a', 1, 'x')")
        .unwrap();
    assert_eq!(
        err(&mut s, "INSERT INTO m VALUES (2, 'a', 1, 'x')").0,
        "23505"
    );

    // A spilled table can be dropped; its file goes at the next checkpoint.
    s.batch_execute("SELECT memfdw.unload('m')").unwrap();
    assert_eq!(spill_files(&c), 1);
    s.batch_execute("DROP FOREIGN TABLE m").unwrap();
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    assert_eq!(spill_files(&c), 0);
}

/// A crash in the middle of an unload or a load (the spill file written or read, the
/// transaction not committed) leaves the table as it was: loaded with its rows, or
/// spilled with its file; the unload's orphan file goes at the next checkpoint.
#[test]
fn a_crash_in_the_middle_leaves_the_old_state() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let want = digest(&mut s, "h");
    s.batch_execute("BEGIN; SELECT memfdw.unload('m')").unwrap();
    assert_eq!(spill_files(&c), 1);
    let mut s = c.crash_and_restart();
    assert_eq!(state(&mut s).0, "loaded");
    assert_eq!(digest(&mut s, "m"), want);
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    assert_eq!(spill_files(&c), 0);

    s.batch_execute("SELECT memfdw.unload('m')").unwrap();
    s.batch_execute("BEGIN; SELECT memfdw.load('m')").unwrap();
    let mut s = c.crash_and_restart();
    assert_eq!(state(&mut s).0, "spilled");
    assert_eq!(spill_files(&c), 1);
    assert_eq!(one::<i64>(&mut s, "SELECT memfdw.load('m')"), 20000);
    assert_eq!(digest(&mut s, "m"), want);
}

#[test]
fn a_damaged_or_missing_spill_file_is_reported_not_loaded() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    s.batch_execute("SELECT memfdw.unload('m')").unwrap();
    let dir = c.redo_dir().join("spill");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();
    let (code, msg) = err(&mut s, "SELECT memfdw.load('m')");
    assert_eq!(code, "XX001", "{msg}");
    assert!(msg.contains("damaged"), "{msg}");
    assert_eq!(state(&mut s).0, "spilled");
    // Cut short.
    std::fs::write(&file, &good[..good.len() - 10]).unwrap();
    assert_eq!(err(&mut s, "SELECT memfdw.load('m')").0, "XX001");
    // Missing.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(err(&mut s, "SELECT memfdw.load('m')").0, "58030");
    // Put back whole: it loads.
    std::fs::write(&file, &good).unwrap();
    memfdw_e2e::chown_postgres(&file);
    assert_eq!(one::<i64>(&mut s, "SELECT memfdw.load('m')"), 20000);
    assert_eq!(digest(&mut s, "m"), digest(&mut s, "h"));
}
