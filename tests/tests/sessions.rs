//! Memory tables shared by every session: visibility, concurrency, rollback, DDL.

use memfdw_e2e::{sqlstate, Cluster, Rng};

const CREATE_T: &str = "CREATE FOREIGN TABLE t (id int NOT NULL, name text, amount numeric, \
    at timestamptz, flag bool, f8 float8, b bytea, d date) SERVER memfdw";

fn setup() -> (Cluster, postgres::Client) {
    let c = Cluster::start();
    let mut s = c.connect();
    let timeout: String = s.query_one("SHOW lock_timeout", &[]).unwrap().get(0);
    assert_eq!(timeout, "1min", "the harness bounds every wait");
    s.batch_execute("CREATE EXTENSION memfdw").unwrap();
    (c, s)
}

fn count(s: &mut postgres::Client, sql: &str) -> i64 {
    s.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn the_issue_walkthrough_gives_the_same_answer_in_every_session() {
    let (c, mut s1) = setup();
    let mut s2 = c.connect();
    s1.batch_execute(CREATE_T).unwrap();
    s1.batch_execute(
        "INSERT INTO t SELECT g, 'n' || g, g * 1.5, '2024-01-01'::timestamptz + g * interval '1 min', \
         g % 2 = 0, g / 7.0, decode(md5(g::text), 'hex'), '2024-01-01'::date + g % 365 \
         FROM generate_series(1, 100000) g",
    )
    .unwrap();
    let q = "SELECT count(*)::text || '/' || sum(amount)::text FROM t";
    let a1: String = s1.query_one(q, &[]).unwrap().get(0);
    let a2: String = s2.query_one(q, &[]).unwrap().get(0);
    assert_eq!(a1, "100000/7500075000.0");
    assert_eq!(a1, a2);
    s1.batch_execute("UPDATE t SET name = 'x' WHERE id % 10 = 0; DELETE FROM t WHERE id > 90000")
        .unwrap();
    assert_eq!(count(&mut s2, "SELECT count(*) FROM t"), 90000);
    assert_eq!(
        count(&mut s2, "SELECT count(*) FROM t WHERE name = 'x'"),
        9000
    );
    // The same rows as a heap table built the same way.
    s2.batch_execute(
        "CREATE TABLE h AS SELECT g AS id, CASE WHEN g % 10 = 0 THEN 'x' ELSE 'n' || g END AS name, \
         g * 1.5 AS amount FROM generate_series(1, 90000) g",
    )
    .unwrap();
    assert_eq!(
        count(
            &mut s2,
            "SELECT count(*) FROM (SELECT id, name, amount FROM t EXCEPT ALL SELECT id, name, amount FROM h) x"
        ),
        0
    );
    s1.batch_execute("BEGIN; INSERT INTO t VALUES (-1); DELETE FROM t WHERE id < 50000; ROLLBACK")
        .unwrap();
    assert_eq!(count(&mut s2, "SELECT count(*) FROM t"), 90000);
    let before: i64 = s1
        .query_one("SELECT in_use_bytes FROM memfdw.memory()", &[])
        .unwrap()
        .get(0);
    s1.batch_execute("DROP FOREIGN TABLE t").unwrap();
    let after: i64 = s1
        .query_one("SELECT in_use_bytes FROM memfdw.memory()", &[])
        .unwrap()
        .get(0);
    assert!(
        after < before / 10,
        "memory not freed by DROP: {before} -> {after}"
    );
    assert_eq!(count(&mut s2, "SELECT count(*) FROM memfdw.tables()"), 0);
}

#[test]
fn commits_are_visible_to_all_uncommitted_only_to_their_transaction() {
    let (c, mut s1) = setup();
    let mut s2 = c.connect();
    s1.batch_execute(
        "CREATE FOREIGN TABLE v (id int, val text) SERVER memfdw; INSERT INTO v VALUES (1, 'a')",
    )
    .unwrap();
    s1.batch_execute("BEGIN; INSERT INTO v VALUES (2, 'b'); UPDATE v SET val = 'A' WHERE id = 1")
        .unwrap();
    // Own writes, in later statements of the same transaction.
    assert_eq!(count(&mut s1, "SELECT count(*) FROM v"), 2);
    let own: String = s1
        .query_one("SELECT val FROM v WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(own, "A");
    s1.batch_execute("DELETE FROM v WHERE id = 2").unwrap();
    assert_eq!(count(&mut s1, "SELECT count(*) FROM v"), 1);
    s1.batch_execute("INSERT INTO v VALUES (3, 'c')").unwrap();
    // Others see only the committed state.
    assert_eq!(count(&mut s2, "SELECT count(*) FROM v"), 1);
    let other: String = s2
        .query_one("SELECT val FROM v WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(other, "a");
    s1.batch_execute("COMMIT").unwrap();
    // Visible as soon as COMMIT returns.
    let rows: Vec<(i32, String)> = s2
        .query("SELECT id, val FROM v ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, "A".to_string()), (3, "c".to_string())]);
}

#[test]
fn six_concurrent_clients_inserting_disjoint_keys_end_with_the_exact_count() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE k (client int NOT NULL, id int NOT NULL, pad text) SERVER memfdw",
    )
    .unwrap();
    let conn = c.conn_str();
    let handles: Vec<_> = (0..6)
        .map(|client: i32| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let mut s = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
                for batch in 0..40 {
                    let mut tx = s.transaction().unwrap();
                    for i in 0..50 {
                        let id = batch * 50 + i;
                        tx.execute(
                            "INSERT INTO k VALUES ($1, $2, repeat('p', $2 % 50))",
                            &[&client, &id],
                        )
                        .unwrap();
                    }
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(count(&mut s, "SELECT count(*) FROM k"), 6 * 2000);
    assert_eq!(
        count(&mut s, "SELECT count(DISTINCT (client, id)) FROM k"),
        6 * 2000
    );
    assert_eq!(
        count(&mut s, "SELECT sum(id)::int8 FROM k"),
        6 * (1999 * 2000 / 2)
    );
    let rows: i64 = s
        .query_one(
            "SELECT rows FROM memfdw.tables() WHERE table_name = 'k'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 12000);
}

#[test]
fn rollback_and_failed_statements_leave_nothing_behind() {
    let (_c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE r (id int NOT NULL, v text) SERVER memfdw; \
         INSERT INTO r SELECT g, 'v' || g FROM generate_series(1, 1000) g",
    )
    .unwrap();
    let snapshot = |s: &mut postgres::Client| -> String {
        s.query_one(
            "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM r",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = snapshot(&mut s);
    s.batch_execute(
        "BEGIN; INSERT INTO r SELECT g, 'new' FROM generate_series(2000, 3000) g; \
         UPDATE r SET v = 'changed' WHERE id % 3 = 0; DELETE FROM r WHERE id < 500; ROLLBACK",
    )
    .unwrap();
    assert_eq!(snapshot(&mut s), before);
    // A statement failing half-way (NOT NULL violation on its 600th row) in autocommit.
    let e = s
        .batch_execute("INSERT INTO r SELECT g, 'x' FROM generate_series(1, 600) g UNION ALL SELECT NULL, 'bad'")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23502"));
    assert_eq!(snapshot(&mut s), before);
    // Savepoints roll back exactly what came after them.
    s.batch_execute(
        "BEGIN; DELETE FROM r WHERE id <= 10; SAVEPOINT a; UPDATE r SET v = 'no' WHERE id > 990; \
         INSERT INTO r VALUES (5000, 'no'); ROLLBACK TO SAVEPOINT a; COMMIT",
    )
    .unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM r"), 990);
    assert_eq!(count(&mut s, "SELECT count(*) FROM r WHERE v = 'no'"), 0);
    // A CREATE FOREIGN TABLE that is rolled back leaves no engine table.
    let tables = count(&mut s, "SELECT count(*) FROM memfdw.tables()");
    s.batch_execute("BEGIN; CREATE FOREIGN TABLE gone (x int) SERVER memfdw; INSERT INTO gone VALUES (1); ROLLBACK")
        .unwrap();
    assert_eq!(
        count(&mut s, "SELECT count(*) FROM memfdw.tables()"),
        tables
    );
    // A DROP that is rolled back keeps the data.
    s.batch_execute("BEGIN; DROP FOREIGN TABLE r; ROLLBACK")
        .unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM r"), 990);
}

#[test]
fn unsupported_keys_and_alter_are_refused_cleanly() {
    let (_c, mut s) = setup();
    // Arrays are stored, but memfdw has no key encoding for them.
    let e = s
        .batch_execute("CREATE FOREIGN TABLE bad (id int, tags text[] PRIMARY KEY) SERVER memfdw")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("\"tags\""), "{msg}");
    let exists: bool = s
        .query_one("SELECT to_regclass('bad') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists);
    assert_eq!(count(&mut s, "SELECT count(*) FROM memfdw.tables()"), 0);
    s.batch_execute("CREATE FOREIGN TABLE ok (id int) SERVER memfdw")
        .unwrap();
    let e = s
        .batch_execute("ALTER FOREIGN TABLE ok ADD PRIMARY KEY (id) DEFERRABLE")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
    let e = s
        .batch_execute("CREATE FOREIGN TABLE o2 (id int) SERVER memfdw OPTIONS (foo 'bar')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("HV00D"));
}

#[test]
fn concurrent_updates_of_one_row_never_lose_an_update() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE ctr (id int, n int) SERVER memfdw; INSERT INTO ctr VALUES (1, 0)",
    )
    .unwrap();
    let conn = c.conn_str();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let mut s = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
                let mut done = 0;
                let mut conflicts = 0;
                while done < 50 {
                    match s.batch_execute("UPDATE ctr SET n = n + 1 WHERE id = 1") {
                        Ok(()) => done += 1,
                        Err(e) if sqlstate(&e).as_deref() == Some("40001") => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // Optimistic concurrency: a conflicting commit fails with 40001 and is retried; no
    // increment is ever lost.
    let n: i32 = s.query_one("SELECT n FROM ctr", &[]).unwrap().get(0);
    assert_eq!(n, 200, "lost updates ({conflicts} conflicts retried)");
}

#[test]
fn random_statements_match_a_heap_table() {
    let (_c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE m (k int NOT NULL, a int, b text, c float8) SERVER memfdw; \
         CREATE TABLE h (k int NOT NULL, a int, b text, c float8)",
    )
    .unwrap();
    let mut rng = Rng(0x5eed);
    for step in 0..300 {
        let k = rng.below(200) as i32;
        let a = rng.below(50) as i32;
        let stmt = match rng.below(10) {
            0..=3 => format!(
                "INSERT INTO {{t}} VALUES ({k}, {a}, 'b{}', {}.5)",
                rng.below(9),
                rng.below(100)
            ),
            4..=5 => format!(
                "UPDATE {{t}} SET a = a + {a}, b = b || 'u' WHERE k % 7 = {}",
                k % 7
            ),
            6 => format!(
                "DELETE FROM {{t}} WHERE a > {} AND k % 5 = {}",
                40 + a % 10,
                k % 5
            ),
            7 => format!("UPDATE {{t}} SET c = NULL, b = NULL WHERE k = {k}"),
            8 => "INSERT INTO {t} SELECT k + 1000, a, b, c FROM {t} WHERE k % 17 = 3".to_string(),
            _ => format!("DELETE FROM {{t}} WHERE k = {k}"),
        };
        let in_txn = step % 11 == 0;
        for t in ["m", "h"] {
            let sql = stmt.replace("{t}", t);
            let sql = if in_txn {
                format!("BEGIN; {sql}; {sql}; ROLLBACK")
            } else {
                sql
            };
            s.batch_execute(&sql).unwrap();
        }
        if step % 25 == 0 {
            let q = |t: &str| {
                format!("SELECT coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x")
            };
            let m: String = s.query_one(&q("m"), &[]).unwrap().get(0);
            let h: String = s.query_one(&q("h"), &[]).unwrap().get(0);
            assert_eq!(m, h, "differs after step {step}: {stmt}");
        }
    }
    let agg = "SELECT count(*), sum(a)::int8, count(b), sum(c) FROM ";
    let m = s.query_one(&format!("{agg} m"), &[]).unwrap();
    let h = s.query_one(&format!("{agg} h"), &[]).unwrap();
    let as_tuple = |r: &postgres::Row| -> (i64, Option<i64>, i64, Option<f64>) {
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(as_tuple(&m), as_tuple(&h));
}

#[test]
fn copy_from_and_truncate_work_transactionally() {
    use std::io::Write;
    let (c, mut s) = setup();
    s.batch_execute("CREATE FOREIGN TABLE cp (id int NOT NULL, v text, d date) SERVER memfdw")
        .unwrap();
    let mut w = s.copy_in("COPY cp FROM STDIN (FORMAT csv)").unwrap();
    for i in 0..5000 {
        writeln!(w, "{i},\"v,{i}\",2024-01-{:02}", 1 + i % 28).unwrap();
    }
    w.write_all(b"5000,,\n").unwrap();
    assert_eq!(w.finish().unwrap(), 5001);
    let mut other = c.connect();
    assert_eq!(count(&mut other, "SELECT count(*) FROM cp"), 5001);
    assert_eq!(
        count(
            &mut other,
            "SELECT count(*) FROM cp WHERE v IS NULL AND d IS NULL"
        ),
        1
    );
    let v: String = other
        .query_one("SELECT v FROM cp WHERE id = 42", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "v,42");
    // A COPY that fails half-way leaves nothing.
    let mut w = s.copy_in("COPY cp FROM STDIN (FORMAT csv)").unwrap();
    w.write_all(b"9001,a,2024-01-01\n9002,b,not-a-date\n")
        .unwrap();
    assert!(w.finish().is_err());
    assert_eq!(count(&mut other, "SELECT count(*) FROM cp"), 5001);
    // TRUNCATE is transactional (others wait on its lock meanwhile, as with heap
    // tables).
    s.batch_execute("BEGIN; TRUNCATE cp; INSERT INTO cp VALUES (1, 'after', NULL)")
        .unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM cp"), 1);
    s.batch_execute("ROLLBACK").unwrap();
    assert_eq!(count(&mut other, "SELECT count(*) FROM cp"), 5001);
    s.batch_execute("TRUNCATE cp").unwrap();
    assert_eq!(count(&mut other, "SELECT count(*) FROM cp"), 0);
    let rows: i64 = other
        .query_one(
            "SELECT rows FROM memfdw.tables() WHERE table_name = 'cp'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}

#[test]
fn drop_database_drops_its_memory_tables() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE here (id int PRIMARY KEY) SERVER memfdw; INSERT INTO here VALUES (1)",
    )
    .unwrap();
    s.batch_execute("CREATE DATABASE other").unwrap();
    let mut o = postgres::Client::connect(
        &c.conn_str().replace("dbname=postgres", "dbname=other"),
        postgres::NoTls,
    )
    .unwrap();
    o.batch_execute(
        "CREATE EXTENSION memfdw; CREATE FOREIGN TABLE there (id int PRIMARY KEY, pad text) SERVER memfdw; \
         INSERT INTO there SELECT g, repeat('x', 200) FROM generate_series(1, 50000) g",
    )
    .unwrap();
    // Each database lists its own memory tables only.
    assert_eq!(count(&mut o, "SELECT count(*) FROM memfdw.tables()"), 1);
    drop(o);
    assert_eq!(count(&mut s, "SELECT count(*) FROM memfdw.tables()"), 1);
    let before: i64 = s
        .query_one("SELECT in_use_bytes FROM memfdw.memory()", &[])
        .unwrap()
        .get(0);
    s.batch_execute("DROP DATABASE other").unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM memfdw.tables()"), 1);
    assert_eq!(count(&mut s, "SELECT count(*) FROM here"), 1);
    let after: i64 = s
        .query_one("SELECT in_use_bytes FROM memfdw.memory()", &[])
        .unwrap()
        .get(0);
    assert!(
        after < before - 10_000_000,
        "memory not freed: {before} -> {after}"
    );
}

/// A transaction that never touches a memory table can be prepared (two-phase commit),
/// also when it creates a relation in a schema that has memory tables (memfdw then
/// looks up its index names without beginning an engine transaction); one that used a
/// memory table cannot.
#[test]
fn prepare_transaction_works_for_transactions_without_memory_tables() {
    let c = memfdw_e2e::Cluster::start();
    c.stop_fast();
    c.append_conf("max_prepared_transactions = 4\n");
    c.restart();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; CREATE FOREIGN TABLE m (id int PRIMARY KEY) SERVER memfdw",
    )
    .unwrap();
    s.batch_execute(
        "SET default_transaction_isolation = 'repeatable read'; \
         BEGIN; CREATE TABLE h (i int); PREPARE TRANSACTION 'p1'",
    )
    .unwrap();
    s.batch_execute("COMMIT PREPARED 'p1'").unwrap();
    s.batch_execute("BEGIN; INSERT INTO m VALUES (1)").unwrap();
    let e = s.batch_execute("PREPARE TRANSACTION 'p2'").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
}
