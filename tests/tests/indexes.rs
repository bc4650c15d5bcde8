//! Keys and indexes through SQL: DDL surface and its refusals, results of index plans
//! against a heap table, sessions racing for one unique key, and indexes after a
//! crash.

use memfdw_e2e::{sqlstate, Cluster, Rng};
use postgres::Client;
use std::sync::{Arc, Barrier, Mutex};

fn setup() -> (Cluster, Client) {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute("CREATE EXTENSION memfdw").unwrap();
    (c, s)
}

fn err_state(s: &mut Client, sql: &str) -> String {
    let e = s.batch_execute(sql).expect_err(sql);
    sqlstate(&e).unwrap_or_else(|| panic!("{sql}: {e}"))
}

fn index_names(s: &mut Client, table: &str) -> Vec<String> {
    s.query(
        "SELECT index_name FROM memfdw.indexes() WHERE table_name = $1 ORDER BY 1",
        &[&table],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn explain(s: &mut Client, sql: &str) -> String {
    s.query(&format!("EXPLAIN {sql}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn keys_and_indexes_are_declared_with_ordinary_sql() {
    let (_c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE acc (id int PRIMARY KEY, owner text, branch int, \
         CONSTRAINT owner_branch UNIQUE (owner, branch)) SERVER memfdw",
    )
    .unwrap();
    assert_eq!(index_names(&mut s, "acc"), ["acc_pkey", "owner_branch"]);
    let notnull: bool = s
        .query_one(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'acc'::regclass AND attname = 'id'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(notnull, "primary-key columns are NOT NULL");
    s.batch_execute("INSERT INTO acc VALUES (1, 'a', 1), (2, 'a', NULL), (3, 'a', NULL)")
        .unwrap();
    let e = s
        .batch_execute("INSERT INTO acc VALUES (1, 'b', 1)")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"));
    let db = e.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"acc_pkey\""
    );
    assert_eq!(db.detail(), Some("Key (id)=(1) already exists."));
    assert_eq!(
        err_state(&mut s, "INSERT INTO acc VALUES (4, 'a', 1)"),
        "23505"
    );
    assert_eq!(
        err_state(&mut s, "UPDATE acc SET id = 1 WHERE id = 2"),
        "23505"
    );
    assert_eq!(
        err_state(&mut s, "INSERT INTO acc VALUES (NULL, 'z', 9)"),
        "23502"
    );
    // A failed statement leaves nothing behind.
    let n: i64 = s.query_one("SELECT count(*) FROM acc", &[]).unwrap().get(0);
    assert_eq!(n, 3);

    // CREATE INDEX on a populated table; unique builds meeting duplicates leave nothing.
    s.batch_execute("CREATE INDEX ON acc (branch)").unwrap();
    assert_eq!(
        err_state(&mut s, "CREATE UNIQUE INDEX owner_u ON acc (owner)"),
        "23505"
    );
    assert_eq!(
        index_names(&mut s, "acc"),
        ["acc_branch_idx", "acc_pkey", "owner_branch"]
    );
    // Refusals.
    for sql in [
        "CREATE INDEX ON acc USING hash (id)",
        "CREATE INDEX ON acc ((id + 1))",
        "CREATE INDEX ON acc (id) WHERE id > 0",
        "CREATE FOREIGN TABLE d (a int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED) SERVER memfdw",
    ] {
        let st = err_state(&mut s, sql);
        assert!(st == "0A000" || st == "42601", "{sql}: {st}");
    }
    // INCLUDE adds nothing to a memory index, but its columns must exist.
    assert_eq!(
        err_state(&mut s, "CREATE INDEX ON acc (id) INCLUDE (nosuch)"),
        "42703"
    );
    assert_eq!(
        err_state(&mut s, "CREATE INDEX acc_pkey ON acc (owner)"),
        "42P07"
    );
    assert_eq!(
        err_state(&mut s, "CREATE INDEX acc ON acc (owner)"),
        "42P07"
    );
    s.batch_execute("CREATE INDEX IF NOT EXISTS acc_pkey ON acc (owner)")
        .unwrap();
    assert_eq!(
        err_state(
            &mut s,
            "CREATE FOREIGN TABLE j (a jsonb PRIMARY KEY) SERVER memfdw"
        ),
        // PostgreSQL has a btree operator class for jsonb; memfdw no key encoding.
        "0A000"
    );
    assert_eq!(
        err_state(
            &mut s,
            "CREATE FOREIGN TABLE k (a int PRIMARY KEY, b int PRIMARY KEY) SERVER memfdw"
        ),
        "42P16"
    );
    let leftovers: i64 = s
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ('j', 'k', 'd')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0, "refused CREATE FOREIGN TABLE leaves no table");

    // Index DDL follows its transaction and savepoints.
    s.batch_execute("BEGIN; CREATE INDEX gone ON acc (owner); ROLLBACK")
        .unwrap();
    s.batch_execute(
        "BEGIN; SAVEPOINT a; CREATE INDEX gone2 ON acc (owner); ROLLBACK TO a; \
         CREATE INDEX kept ON acc (owner); DROP INDEX acc_branch_idx; COMMIT",
    )
    .unwrap();
    assert_eq!(
        index_names(&mut s, "acc"),
        ["acc_pkey", "kept", "owner_branch"]
    );
    s.batch_execute("BEGIN; DROP INDEX kept; ROLLBACK").unwrap();
    assert_eq!(
        index_names(&mut s, "acc"),
        ["acc_pkey", "kept", "owner_branch"]
    );
    s.batch_execute("DROP INDEX IF EXISTS nothing_here, public.kept")
        .unwrap();
    assert_eq!(err_state(&mut s, "DROP INDEX kept"), "42704");
    assert_eq!(index_names(&mut s, "acc"), ["acc_pkey", "owner_branch"]);
    // Heap-table indexes are PostgreSQL's business, also in a mixed DROP INDEX.
    s.batch_execute(
        "CREATE TABLE h (x int); CREATE INDEX h_x ON h (x); CREATE INDEX m_o ON acc (owner)",
    )
    .unwrap();
    s.batch_execute("DROP INDEX h_x, m_o").unwrap();
    let heap_idx: i64 = s
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'h_x'", &[])
        .unwrap()
        .get(0);
    assert_eq!(heap_idx, 0);
    assert_eq!(index_names(&mut s, "acc"), ["acc_pkey", "owner_branch"]);
    // Dropping the table drops its indexes.
    s.batch_execute("DROP FOREIGN TABLE acc").unwrap();
    let n: i64 = s
        .query_one("SELECT count(*) FROM memfdw.indexes()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// Rows of a query as text, in order.
fn rows(s: &mut Client, sql: &str) -> Vec<String> {
    s.query(&format!("SELECT x::text FROM ({sql}) x"), &[])
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

#[test]
fn index_plans_return_what_heap_tables_return() {
    let (_c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE m (id int PRIMARY KEY, grp int, val numeric, code text, ts timestamptz) SERVER memfdw; \
         CREATE INDEX m_grp_val ON m (grp, val); \
         CREATE UNIQUE INDEX m_code ON m (code); \
         CREATE INDEX m_ts ON m (ts); \
         CREATE TABLE h (id int PRIMARY KEY, grp int, val numeric, code text COLLATE \"C\", ts timestamptz); \
         CREATE INDEX ON h (grp, val); CREATE UNIQUE INDEX ON h (code); \
         CREATE TEMP TABLE probe (k int)",
    )
    .unwrap();
    let load = "SELECT g, CASE WHEN g % 11 = 0 THEN NULL ELSE g % 50 END, \
                CASE WHEN g % 13 = 0 THEN NULL ELSE round((g % 997) / 7.0, 2) END, \
                CASE WHEN g % 17 = 0 THEN NULL ELSE 'c' || g END, \
                '2024-01-01'::timestamptz + (g % 5000) * interval '1 minute' \
                FROM generate_series(1, 100000) g";
    s.batch_execute(&format!("INSERT INTO m {load}; INSERT INTO h {load}"))
        .unwrap();
    s.batch_execute(
        "INSERT INTO probe SELECT g * 4999 FROM generate_series(1, 20) g; ANALYZE probe",
    )
    .unwrap();
    // ANALYZE samples memory tables like heap tables.
    s.batch_execute("ANALYZE m; ANALYZE h").unwrap();
    let stats: i64 = s
        .query_one("SELECT count(*) FROM pg_stats WHERE tablename = 'm'", &[])
        .unwrap()
        .get(0);
    assert_eq!(stats, 5, "every column of m has statistics");
    let distinct: f32 = s
        .query_one(
            "SELECT n_distinct FROM pg_stats WHERE tablename = 'm' AND attname = 'grp'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        (49.0..=51.0).contains(&distinct),
        "n_distinct of grp: {distinct}"
    );
    // The planner picks the index where it should.
    let point = explain(&mut s, "SELECT * FROM m WHERE id = 4242");
    assert!(point.contains("index scan using m_pkey (point)"), "{point}");
    let join = explain(&mut s, "SELECT * FROM probe p JOIN m ON m.id = p.k");
    assert!(
        join.contains("Nested Loop") && join.contains("m_pkey"),
        "{join}"
    );
    let top = explain(&mut s, "SELECT * FROM m ORDER BY id DESC LIMIT 5");
    assert!(
        top.contains("ordered backward") && !top.contains("Sort"),
        "{top}"
    );

    let mut rng = Rng(99);
    for round in 0..4 {
        let a = rng.below(100_000) as i64;
        let b = a + rng.below(3000) as i64;
        let g = rng.below(55) as i64;
        let queries = [
            format!("SELECT * FROM TBL WHERE id = {a}"),
            format!("SELECT * FROM TBL WHERE id BETWEEN {a} AND {b} ORDER BY id"),
            format!("SELECT * FROM TBL WHERE id > {a} AND id < {b} ORDER BY id DESC LIMIT 17"),
            format!("SELECT * FROM TBL WHERE id IN ({a}, {b}, {a}, -5, NULL) ORDER BY id"),
            format!("SELECT id FROM TBL WHERE grp = {g} ORDER BY id"),
            format!("SELECT id, val FROM TBL WHERE grp = {g} AND val >= 10 AND val < 60 ORDER BY id"),
            format!("SELECT id FROM TBL WHERE grp = {g} ORDER BY val DESC NULLS FIRST, id LIMIT 30"),
            "SELECT id FROM TBL WHERE grp IS NULL AND val IS NULL ORDER BY id".to_string(),
            "SELECT count(*) FROM TBL WHERE val IS NOT NULL AND grp = 7".to_string(),
            format!("SELECT * FROM TBL WHERE code = 'c{a}'"),
            "SELECT id FROM TBL WHERE code IS NULL ORDER BY id LIMIT 50".to_string(),
            format!("SELECT id FROM TBL WHERE code > 'c{a}' ORDER BY code LIMIT 40"),
            format!("SELECT id, ts FROM TBL WHERE ts >= '2024-01-02'::timestamptz + {g} * interval '1 hour' ORDER BY ts, id LIMIT 25"),
            "SELECT p.k, TBL.code FROM probe p JOIN TBL ON TBL.id = p.k ORDER BY 1".to_string(),
            "SELECT p.k, count(*) FROM probe p JOIN TBL ON TBL.grp = p.k % 50 GROUP BY 1 ORDER BY 1".to_string(),
            "SELECT max(id), min(id) FROM TBL".to_string(),
        ];
        for q in &queries {
            let want = rows(&mut s, &q.replace("TBL", "h"));
            let got = rows(&mut s, &q.replace("TBL", "m"));
            assert_eq!(got, want, "round {round}: {q}");
        }
        // Change keys, including the primary key, and delete some rows, in both tables.
        let c = rng.below(100_000) as i64;
        let change = format!(
            "UPDATE TBL SET id = id + 200000, grp = grp + 1, code = code || 'x' WHERE id BETWEEN {c} AND {c} + 500; \
             UPDATE TBL SET val = val + 1 WHERE grp = {g}; \
             DELETE FROM TBL WHERE id % 97 = {r}",
            r = round
        );
        s.batch_execute(&change.replace("TBL", "m")).unwrap();
        s.batch_execute(&change.replace("TBL", "h")).unwrap();
    }
    // Own uncommitted key changes are found through the index, others' are not.
    s.batch_execute("BEGIN; UPDATE m SET id = -id WHERE id BETWEEN 10 AND 12; UPDATE h SET id = -id WHERE id BETWEEN 10 AND 12")
        .unwrap();
    for q in [
        "SELECT id FROM TBL WHERE id < 0 ORDER BY id",
        "SELECT id FROM TBL WHERE id BETWEEN -20 AND 20 ORDER BY id DESC",
    ] {
        assert_eq!(
            rows(&mut s, &q.replace("TBL", "m")),
            rows(&mut s, &q.replace("TBL", "h")),
            "{q}"
        );
    }
    s.batch_execute("ROLLBACK").unwrap();
}

#[test]
fn sessions_racing_for_one_key_exactly_one_wins() {
    let (c, mut s) = setup();
    s.batch_execute("CREATE FOREIGN TABLE u (k int PRIMARY KEY, who int) SERVER memfdw")
        .unwrap();
    const KEYS: i32 = 150;
    let barrier = Arc::new(Barrier::new(4));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let mut s = c.connect();
            let (barrier, outcomes) = (barrier.clone(), outcomes.clone());
            std::thread::spawn(move || {
                for k in 0..KEYS {
                    barrier.wait();
                    let r = if k % 2 == 0 {
                        s.execute("INSERT INTO u VALUES ($1, $2)", &[&k, &w])
                            .map(|_| ())
                    } else {
                        // In a transaction block: who comes second waits in its INSERT
                        // for the first to end (as on heap), then fails or goes on.
                        s.batch_execute("BEGIN").unwrap();
                        let ins = s.execute("INSERT INTO u VALUES ($1, $2)", &[&k, &w]);
                        match ins {
                            Ok(_) => s.batch_execute("COMMIT"),
                            Err(e) => {
                                s.batch_execute("ROLLBACK").unwrap();
                                Err(e)
                            }
                        }
                    };
                    let state = r.err().map(|e| sqlstate(&e).unwrap_or_default());
                    outcomes.lock().unwrap().push((k, w, state));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let outcomes = outcomes.lock().unwrap();
    for k in 0..KEYS {
        let wins: Vec<_> = outcomes
            .iter()
            .filter(|o| o.0 == k && o.2.is_none())
            .collect();
        assert!(wins.len() <= 1, "key {k} committed {} times", wins.len());
        for o in outcomes.iter().filter(|o| o.0 == k && o.2.is_some()) {
            let st = o.2.as_deref().unwrap();
            assert!(st == "23505" || st == "40001", "key {k}: {st}");
        }
        let rows = s.query("SELECT who FROM u WHERE k = $1", &[&k]).unwrap();
        assert_eq!(rows.len(), wins.len(), "key {k}");
        if let (Some(w), Some(r)) = (wins.first(), rows.first()) {
            assert_eq!(r.get::<_, i32>(0), w.1);
        }
    }
    let won = outcomes.iter().filter(|o| o.2.is_none()).count();
    assert!(
        won >= KEYS as usize * 9 / 10,
        "only {won} of {KEYS} keys were inserted"
    );
    let dup: i64 = s
        .query_one("SELECT count(*) - count(DISTINCT k) FROM u", &[])
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
}

#[test]
fn indexes_and_keys_come_back_after_kill_9() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE r (id int PRIMARY KEY, name text, n int) SERVER memfdw; \
         INSERT INTO r SELECT g, 'n' || g, g % 100 FROM generate_series(1, 20000) g; \
         CREATE INDEX r_n ON r (n); \
         CREATE UNIQUE INDEX r_name ON r (name); \
         CREATE INDEX r_gone ON r (n, id); \
         SELECT memfdw.checkpoint(); \
         UPDATE r SET id = id + 100000, name = name || 'u' WHERE id <= 1000; \
         DELETE FROM r WHERE id BETWEEN 5000 AND 5999; \
         DROP INDEX r_gone; \
         CREATE INDEX r_late ON r (n DESC)",
    )
    .unwrap();
    let before = index_names(&mut s, "r");
    let q = "SELECT id, name, n FROM r WHERE n = 42 ORDER BY id";
    let want = rows(&mut s, q);
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect_retry(std::time::Duration::from_secs(60));
    assert_eq!(index_names(&mut s, "r"), before);
    assert!(explain(&mut s, q).contains("index scan using r_n"));
    assert_eq!(rows(&mut s, q), want);
    let entries: Vec<i64> = s
        .query(
            "SELECT entries FROM memfdw.indexes() WHERE table_name = 'r'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(entries.iter().all(|&e| e == 19000), "{entries:?}");
    assert_eq!(
        err_state(&mut s, "INSERT INTO r VALUES (100001, 'x', 1)"),
        "23505"
    );
    assert_eq!(
        err_state(&mut s, "INSERT INTO r VALUES (-1, 'n1u', 1)"),
        "23505"
    );
    s.batch_execute("INSERT INTO r VALUES (1, 'n1', 1)")
        .unwrap();
    let one: String = s
        .query_one("SELECT name FROM r WHERE id = 100001", &[])
        .unwrap()
        .get(0);
    assert_eq!(one, "n1u");
}

/// Index DDL after TRUNCATE or a rewriting ALTER in the same transaction works on the
/// transaction's replacement of the table; ROLLBACK, savepoints and a crash leave the
/// right indexes.
#[test]
fn index_ddl_after_truncate_or_alter_in_the_same_transaction() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE tr (id int PRIMARY KEY, v text) SERVER memfdw;
         CREATE INDEX tr_v ON tr (v);
         INSERT INTO tr VALUES (1, 'a'), (2, 'b')",
    )
    .unwrap();
    // Rolled back: nothing changes.
    s.batch_execute(
        "BEGIN; TRUNCATE tr; CREATE UNIQUE INDEX tr_u ON tr (v); DROP INDEX tr_v; ROLLBACK",
    )
    .unwrap();
    assert_eq!(index_names(&mut s, "tr"), vec!["tr_pkey", "tr_v"]);
    let n: i64 = s.query_one("SELECT count(*) FROM tr", &[]).unwrap().get(0);
    assert_eq!(n, 2);
    // Committed, with a savepoint rolled back in between.
    s.batch_execute(
        "BEGIN; TRUNCATE tr; INSERT INTO tr VALUES (3, 'c'); \
         CREATE UNIQUE INDEX tr_u ON tr (v); DROP INDEX tr_v; \
         SAVEPOINT x; CREATE INDEX tr_w ON tr (v); ROLLBACK TO x; COMMIT",
    )
    .unwrap();
    assert_eq!(index_names(&mut s, "tr"), vec!["tr_pkey", "tr_u"]);
    assert_eq!(err_state(&mut s, "INSERT INTO tr VALUES (4, 'c')"), "23505");
    // A migration in one transaction: a column and its index.
    s.batch_execute(
        "BEGIN; ALTER FOREIGN TABLE tr ADD COLUMN w int DEFAULT 7; \
         CREATE INDEX tr_w ON tr (w); DROP INDEX tr_u; COMMIT",
    )
    .unwrap();
    assert_eq!(index_names(&mut s, "tr"), vec!["tr_pkey", "tr_w"]);
    let entries: i64 = s
        .query_one(
            "SELECT entries FROM memfdw.indexes() WHERE index_name = 'tr_w'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(entries, 1, "the row the ALTER rewrote is in the new index");
    // The same after a crash.
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect();
    assert_eq!(index_names(&mut s, "tr"), vec!["tr_pkey", "tr_w"]);
    s.batch_execute("INSERT INTO tr VALUES (4, 'c')").unwrap();
    assert_eq!(err_state(&mut s, "INSERT INTO tr VALUES (4, 'd')"), "23505");
}

/// Comparison values of another type of the column's operator family (as drivers bind
/// them), and LIKE / regular-expression prefixes, use the index and return what a heap
/// table returns, including values beyond the column type's range, values the column
/// type cannot hold exactly, infinities and NaN.
#[test]
fn cross_type_and_prefix_conditions_use_indexes_and_match_heap() {
    let (_c, mut s) = setup();
    let cols = "id bigint PRIMARY KEY, s smallint, i int, f real, f8 double precision, \
                d date, ts timestamp, tz timestamptz, t text";
    s.batch_execute(&format!(
        "SET TimeZone = 'America/New_York'; \
         CREATE FOREIGN TABLE m ({cols}) SERVER memfdw; \
         CREATE TABLE h ({cols}); \
         CREATE INDEX ON m (s); CREATE INDEX ON m (i); CREATE INDEX ON m (f); \
         CREATE INDEX ON m (f8); CREATE INDEX ON m (d); CREATE INDEX ON m (ts); \
         CREATE INDEX ON m (tz); CREATE INDEX ON m (t)"
    ))
    .unwrap();
    let load = "SELECT g, (g % 2000 - 1000)::smallint, g * 1000, g / 8.0 - 500, g / 3.0, \
                date '2024-03-01' + (g % 400 - 200), \
                timestamp '2024-03-09' + g * interval '7 minutes', \
                timestamptz '2024-03-09' + g * interval '11 minutes', \
                'k' || g FROM generate_series(1, 20000) g";
    let edges = "VALUES (-1, 32767::smallint, 2147483647, 'NaN'::real, 'Infinity'::float8, \
                 'infinity'::date, 'infinity'::timestamp, '-infinity'::timestamptz, 'k'), \
                 (-2, (-32768)::smallint, -2147483648, '-Infinity'::real, 'NaN'::float8, \
                 '-infinity'::date, '-infinity'::timestamp, 'infinity'::timestamptz, 'k\\%x')";
    for t in ["m", "h"] {
        s.batch_execute(&format!("INSERT INTO {t} {load}; INSERT INTO {t} {edges}"))
            .unwrap();
    }
    s.batch_execute("ANALYZE m; ANALYZE h").unwrap();
    let indexed = [
        "SELECT * FROM TBL WHERE id = 42::int",
        "SELECT * FROM TBL WHERE id = 42::smallint",
        "SELECT id FROM TBL WHERE id BETWEEN 10::int AND 20::int ORDER BY id",
        "SELECT id FROM TBL WHERE id IN (1::int, 5, 70000000000) ORDER BY id",
        "SELECT id FROM TBL WHERE s = 5 ORDER BY id",
        "SELECT id FROM TBL WHERE s = 5::bigint ORDER BY id",
        "SELECT id FROM TBL WHERE s = 100000 ORDER BY id",
        "~SELECT count(*) FROM TBL WHERE s < 100000",
        "~SELECT count(*) FROM TBL WHERE s > -100000::bigint",
        "SELECT count(*) FROM TBL WHERE s > 40000",
        "SELECT count(*) FROM TBL WHERE s <= -40000",
        "SELECT id FROM TBL WHERE s IN (3, 70000, -2) ORDER BY id",
        "SELECT id FROM TBL WHERE i = 5000::bigint ORDER BY id",
        "SELECT count(*) FROM TBL WHERE i > 3000000000",
        "~SELECT count(*) FROM TBL WHERE i >= -3000000000 AND i < 1000000::bigint",
        "SELECT id FROM TBL WHERE f = 2.375::float8 ORDER BY id",
        "SELECT id FROM TBL WHERE f = 0.1::float8 ORDER BY id",
        "~SELECT count(*) FROM TBL WHERE f < 0.1::float8",
        "~SELECT count(*) FROM TBL WHERE f > 0.1::float8",
        "SELECT count(*) FROM TBL WHERE f >= 1e300::float8",
        "SELECT count(*) FROM TBL WHERE f = 'NaN'::float8",
        "~SELECT count(*) FROM TBL WHERE f8 < 2.5::real",
        "SELECT count(*) FROM TBL WHERE f8 = 'NaN'::real",
        "SELECT id FROM TBL WHERE d = timestamp '2024-03-05' ORDER BY id",
        "SELECT id FROM TBL WHERE d = timestamp '2024-03-05 10:00' ORDER BY id",
        "~SELECT count(*) FROM TBL WHERE d < timestamp '2024-03-05 10:00'",
        "~SELECT count(*) FROM TBL WHERE d <= timestamp '2024-03-05 00:00'",
        "~SELECT count(*) FROM TBL WHERE d > timestamp '2024-03-05 10:00'",
        "~SELECT count(*) FROM TBL WHERE d >= timestamptz '2024-03-10 00:00-05'",
        "~SELECT count(*) FROM TBL WHERE d > timestamptz '2024-03-10 02:30-04'",
        "SELECT count(*) FROM TBL WHERE d = timestamptz '2024-03-12 00:00-04'",
        "SELECT count(*) FROM TBL WHERE d = 'infinity'::timestamp",
        "SELECT count(*) FROM TBL WHERE ts < date '2024-03-10'",
        "SELECT count(*) FROM TBL WHERE ts >= date '2024-03-10' AND ts < date '2024-03-11'",
        "SELECT count(*) FROM TBL WHERE ts = 'infinity'::date",
        // Beyond the timestamp range, but not beyond the column's infinities.
        "SELECT count(*) FROM TBL WHERE ts > '300000-01-01'::date",
        "SELECT count(*) FROM TBL WHERE ts < '-infinity'::date",
        "SELECT count(*) FROM TBL WHERE tz >= '294276-12-31 23:00'::timestamp",
        "SELECT count(*) FROM TBL WHERE tz < date '2024-03-10'",
        "SELECT count(*) FROM TBL WHERE tz >= date '2024-03-11' AND tz < date '2024-03-12'",
        "SELECT count(*) FROM TBL WHERE tz < timestamp '2024-03-10 03:00'",
        "SELECT count(*) FROM TBL WHERE tz = '-infinity'::timestamp",
        // A timestamp column against timestamptz values (ranges only), across the
        // session time zone's DST change of 2024-03-10.
        "SELECT id FROM TBL WHERE ts > timestamptz '2024-03-10 01:30-05' \
         AND ts < timestamptz '2024-03-10 04:00-04' ORDER BY id",
        "SELECT id FROM TBL WHERE ts < timestamptz '2024-03-09 01:00-05' ORDER BY id",
        "~SELECT count(*) FROM TBL WHERE ts >= timestamptz '2024-03-10 02:30-05'",
        "SELECT count(*) FROM TBL WHERE ts > 'infinity'::timestamptz",
        "SELECT count(*) FROM TBL WHERE ts < '-infinity'::timestamptz",
        "SELECT id FROM TBL WHERE t LIKE 'k123%' ORDER BY id",
        "SELECT id FROM TBL WHERE t LIKE 'k1_3' ORDER BY id",
        "SELECT id FROM TBL WHERE t LIKE 'k\\%%' ORDER BY id",
        "SELECT id FROM TBL WHERE t ~ '^k99' ORDER BY id",
        "SELECT id FROM TBL WHERE t ~ '^k(12|13)4$' ORDER BY id",
        "SELECT id FROM TBL WHERE t >= 'k19998' ORDER BY t LIMIT 5",
    ];
    // "~": not selective, the planner may prefer a full scan.
    for q in indexed {
        let (selective, q) = match q.strip_prefix('~') {
            Some(q) => (false, q),
            None => (true, q),
        };
        let want = rows(&mut s, &q.replace("TBL", "h"));
        let got = rows(&mut s, &q.replace("TBL", "m"));
        assert_eq!(got, want, "{q}");
        let plan = explain(&mut s, &q.replace("TBL", "m"));
        assert!(
            !selective || plan.contains("index scan using") && plan.contains("Index Cond"),
            "{q}:\n{plan}"
        );
    }
    // A prepared statement whose parameter is int4, against the bigint key, also as
    // a generic plan.
    s.batch_execute(
        "PREPARE p(int) AS SELECT id FROM m WHERE id = $1; SET plan_cache_mode = force_generic_plan",
    )
    .unwrap();
    let plan = explain(&mut s, "EXECUTE p(7)");
    assert!(plan.contains("(point)"), "{plan}");
    let id: i64 = s.query_one("EXECUTE p(7)", &[]).unwrap().get(0);
    assert_eq!(id, 7);
    // What the index cannot answer is still answered, by a scan.
    for q in [
        "SELECT count(*) FROM TBL WHERE ts = timestamptz '2024-03-10 01:00-05'",
        "SELECT count(*) FROM TBL WHERE ts IN (timestamptz '2024-03-10 01:00-05')",
        "SELECT count(*) FROM TBL WHERE t LIKE '%99'",
        "SELECT count(*) FROM TBL WHERE t ILIKE 'K12%'",
        "SELECT count(*) FROM TBL WHERE t ~ '(?i)^K12'",
    ] {
        assert_eq!(
            rows(&mut s, &q.replace("TBL", "m")),
            rows(&mut s, &q.replace("TBL", "h")),
            "{q}"
        );
    }
}

/// ILIKE and case-insensitive regular expressions use the index for their prefix
/// without case (digits, punctuation); LIKE and regular expressions on char(n) and
/// name columns use it too; all return what heap tables return.
#[test]
fn case_insensitive_char_and_name_patterns_use_indexes_and_match_heap() {
    let (_c, mut s) = setup();
    let cols = "id int PRIMARY KEY, t text COLLATE \"C\", c char(8) COLLATE \"C\", n name";
    s.batch_execute(&format!(
        "CREATE FOREIGN TABLE m ({cols}) SERVER memfdw; CREATE TABLE h ({cols}); \
         CREATE INDEX ON m (t); CREATE INDEX ON m (c); CREATE INDEX ON m (n)"
    ))
    .unwrap();
    let load = "SELECT g, g || CASE WHEN g % 2 = 0 THEN 'Ab' ELSE 'aB' END, \
                CASE WHEN g % 7 = 0 THEN (g % 100) || ' x' ELSE (g % 1000)::text END, \
                'n' || g FROM generate_series(1, 20000) g";
    for t in ["m", "h"] {
        s.batch_execute(&format!("INSERT INTO {t} {load}; ANALYZE {t}"))
            .unwrap();
    }
    for q in [
        "SELECT id FROM TBL WHERE t ILIKE '123%' ORDER BY id",
        "SELECT id FROM TBL WHERE t ILIKE '1234ab' ORDER BY id",
        "SELECT id FROM TBL WHERE t ~* '^123a' ORDER BY id",
        "SELECT id FROM TBL WHERE c LIKE '12%' ORDER BY id",
        "SELECT id FROM TBL WHERE c LIKE '14 %' ORDER BY id",
        "SELECT id FROM TBL WHERE c ~ '^99' ORDER BY id",
        "SELECT id FROM TBL WHERE c ILIKE '77%' ORDER BY id",
        "SELECT id FROM TBL WHERE n LIKE 'n123%' ORDER BY id",
        "SELECT id FROM TBL WHERE n ~ '^n1999' ORDER BY id",
    ] {
        let want = rows(&mut s, &q.replace("TBL", "h"));
        let got = rows(&mut s, &q.replace("TBL", "m"));
        assert!(!want.is_empty(), "{q}");
        assert_eq!(got, want, "{q}");
        let plan = explain(&mut s, &q.replace("TBL", "m"));
        assert!(
            plan.contains("index scan using") && plan.contains("Index Cond"),
            "{q}:\n{plan}"
        );
    }
    // A case-insensitive pattern that starts with a letter has no prefix: full scan,
    // same answer.
    let q = "SELECT count(*) FROM TBL WHERE n ILIKE 'N123%'";
    assert_eq!(
        rows(&mut s, &q.replace("TBL", "m")),
        rows(&mut s, &q.replace("TBL", "h"))
    );
}

/// A plain SELECT does not have PostgreSQL evaluate the integer key conditions its
/// index scan enforces (no `Filter` in EXPLAIN, as for a heap index scan), so the
/// scan alone must return the right rows: a snapshot taken before other sessions
/// moved, deleted and inserted keys sees the old keys through the index (the entries
/// of the new keys are there already), and every kind of integer comparison value
/// (other integer types, out of range, NULL, prepared parameters) matches heap.
#[test]
fn index_conditions_left_to_the_scan_see_each_snapshot_s_keys() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE m (id int PRIMARY KEY, grp int, val int) SERVER memfdw; \
         CREATE INDEX m_grp ON m (grp, val); \
         CREATE TABLE h (id int PRIMARY KEY, grp int, val int); \
         CREATE INDEX ON h (grp, val); \
         INSERT INTO m SELECT g, g % 10, g FROM generate_series(1, 2000) g; \
         INSERT INTO h SELECT g, g % 10, g FROM generate_series(1, 2000) g; \
         ANALYZE m; ANALYZE h",
    )
    .unwrap();
    let plan = explain(&mut s, "SELECT * FROM m WHERE id = 5");
    assert!(
        plan.contains("(point)") && !plan.contains("Filter"),
        "{plan}"
    );
    let plan = explain(&mut s, "SELECT * FROM m WHERE grp = 3 AND val > 100");
    assert!(plan.contains("m_grp") && !plan.contains("Filter"), "{plan}");
    // Locking and writing keep PostgreSQL's check (EvalPlanQual rechecks rows).
    let plan = explain(&mut s, "SELECT * FROM m WHERE id = 5 FOR UPDATE");
    assert!(plan.contains("Filter: (id = 5)"), "{plan}");
    let queries = [
        "SELECT * FROM TBL WHERE id = 5",
        "SELECT * FROM TBL WHERE id = 500005",
        "SELECT * FROM TBL WHERE id = 7",
        "SELECT * FROM TBL WHERE id = 2001",
        "SELECT id FROM TBL WHERE id BETWEEN 1 AND 12 ORDER BY id",
        "SELECT id FROM TBL WHERE id > 499999 ORDER BY id",
        "SELECT id FROM TBL WHERE id >= 1995::bigint ORDER BY id DESC",
        "SELECT id FROM TBL WHERE id < 4::smallint ORDER BY id",
        "SELECT count(*) FROM TBL WHERE id < 3000000000",
        "SELECT count(*) FROM TBL WHERE id > -3000000000::bigint",
        "SELECT count(*) FROM TBL WHERE id = 3000000000",
        "SELECT count(*) FROM TBL WHERE id = NULL::int",
        "SELECT id FROM TBL WHERE grp = 5 AND val > 1900 ORDER BY id",
        "SELECT id FROM TBL WHERE grp = 7 AND val <= 27 ORDER BY id",
        "SELECT id FROM TBL WHERE grp = 9 AND val = 500009",
    ];
    let both = |s: &mut Client| -> Vec<(Vec<String>, Vec<String>)> {
        queries
            .iter()
            .map(|q| {
                (
                    rows(s, &q.replace("TBL", "m")),
                    rows(s, &q.replace("TBL", "h")),
                )
            })
            .collect()
    };
    // A repeatable-read snapshot, then another session moves keys (primary key and
    // the second index), deletes and inserts, in both tables.
    s.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let before = both(&mut s);
    for (q, (m, h)) in queries.iter().zip(&before) {
        assert_eq!(m, h, "before: {q}");
    }
    let mut other = c.connect();
    for t in ["m", "h"] {
        other
            .batch_execute(&format!(
                "UPDATE {t} SET id = id + 500000, val = val + 500000 WHERE id IN (5, 9, 1999); \
                 DELETE FROM {t} WHERE id IN (7, 3, 1996); \
                 INSERT INTO {t} VALUES (2001, 5, 2001), (0, 7, 0)"
            ))
            .unwrap();
    }
    let during = both(&mut s);
    assert_eq!(
        during.iter().map(|x| &x.0).collect::<Vec<_>>(),
        before.iter().map(|x| &x.0).collect::<Vec<_>>(),
        "the snapshot sees the keys it started with"
    );
    s.batch_execute("COMMIT").unwrap();
    let after = both(&mut s);
    for (q, (m, h)) in queries.iter().zip(&after) {
        assert_eq!(m, h, "after: {q}");
    }
    assert_ne!(after, before, "the other session's changes are seen now");
    // Prepared statements with parameters of other integer types (as drivers bind).
    for v in [Some(500005i64), Some(5), Some(3_000_000_000), None] {
        let q = |t: &str| format!("SELECT count(*) FROM {t} WHERE id = $1::int8");
        let m: i64 = s.query_one(&q("m"), &[&v]).unwrap().get(0);
        let h: i64 = s.query_one(&q("h"), &[&v]).unwrap().get(0);
        assert_eq!(m, h, "id = {v:?}");
    }
}

/// Planners see the indexes of other transactions only once those commit, as
/// PostgreSQL's catalog snapshot hides an uncommitted index: a generic plan made while
/// another session's CREATE INDEX is open reads the table, still right after that
/// transaction rolls back; once a CREATE INDEX commits, cached plans are made again
/// and use it. (A plan that leaves its conditions to an index whose creator then rolls
/// back would otherwise have read the whole table without them: every row.)
#[test]
fn planners_use_another_transaction_s_index_only_once_it_commits() {
    let (c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE m (id int PRIMARY KEY, val int) SERVER memfdw;          INSERT INTO m SELECT g, g % 100 FROM generate_series(1, 5000) g; ANALYZE m",
    )
    .unwrap();
    s.batch_execute(
        "SET plan_cache_mode = force_generic_plan;          PREPARE q(int) AS SELECT count(*) FROM m WHERE val = $1;          PREPARE r(int) AS SELECT count(*) FROM m WHERE val >= $1 AND val < $1 + 2",
    )
    .unwrap();
    let count = |s: &mut Client, sql: &str| -> i64 { s.query_one(sql, &[]).unwrap().get(0) };
    let check = |s: &mut Client| {
        assert_eq!(count(s, "EXECUTE q(5)"), 50);
        assert_eq!(count(s, "EXECUTE r(5)"), 100);
        assert_eq!(count(s, "EXECUTE q(500)"), 0);
    };
    let mut other = c.connect();
    for end in ["ROLLBACK", "COMMIT"] {
        other
            .batch_execute("BEGIN; CREATE INDEX m_val ON m (val)")
            .unwrap();
        // The creating session plans with its index; this one does not.
        let own = explain(&mut other, "SELECT count(*) FROM m WHERE val = 5");
        assert!(own.contains("m_val"), "{own}");
        let plan = explain(&mut s, "EXECUTE q(5)");
        assert!(!plan.contains("m_val"), "{end}: {plan}");
        check(&mut s);
        other.batch_execute(end).unwrap();
        check(&mut s);
    }
    let plan = explain(&mut s, "EXECUTE q(5)");
    assert!(
        plan.contains("m_val") && !plan.contains("Filter"),
        "replanned with the committed index: {plan}"
    );
    check(&mut s);
    // An index created after a TRUNCATE or an ALTER of its table in the same
    // transaction is the replacement's, which the commit installs: planned as well.
    for (ddl, index) in [
        (
            "BEGIN; TRUNCATE m; INSERT INTO m SELECT g, g % 100 FROM generate_series(1, 5000) g; \
             CREATE INDEX m_val2 ON m (val, id); DROP INDEX m_val; COMMIT",
            "m_val2",
        ),
        (
            "BEGIN; ALTER FOREIGN TABLE m ADD COLUMN w int; \
             CREATE INDEX m_val3 ON m (val, w); DROP INDEX m_val2; COMMIT",
            "m_val3",
        ),
    ] {
        other.batch_execute(ddl).unwrap();
        let plan = explain(&mut s, "SELECT count(*) FROM m WHERE val = 5");
        assert!(plan.contains(index), "{ddl}: {plan}");
        check(&mut s);
    }
}

/// A cursor over an index range sees the rows as of its command: rows the transaction
/// gives other keys (or deletes) between fetches are still returned with the keys the
/// cursor's snapshot sees, as a heap table's cursor returns them.
#[test]
fn a_cursor_returns_rows_its_transaction_rekeys_between_fetches() {
    let (_c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE m (id int PRIMARY KEY, val int) SERVER memfdw; \
         CREATE INDEX m_val ON m (val); \
         CREATE TABLE h (id int PRIMARY KEY, val int); CREATE INDEX ON h (val); \
         INSERT INTO m SELECT g, g FROM generate_series(1, 5000) g; \
         INSERT INTO h SELECT g, g FROM generate_series(1, 5000) g; \
         ANALYZE m; ANALYZE h",
    )
    .unwrap();
    let run = |s: &mut Client, t: &str, order: &str| -> Vec<i32> {
        s.batch_execute(&format!(
            "BEGIN; DECLARE c CURSOR FOR SELECT id FROM {t} WHERE id BETWEEN 100 AND 4900 {order}"
        ))
        .unwrap();
        let mut got: Vec<i32> = s
            .query("FETCH 10 FROM c", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        // After the first fetch: keys moved out of the range and back, and a delete,
        // in the primary key and in the other index.
        s.batch_execute(&format!(
            "UPDATE {t} SET id = -id WHERE id IN (3000, 4000); \
             UPDATE {t} SET id = id + 100000 WHERE id = 4500; UPDATE {t} SET id = 4500 WHERE id = 104500; \
             UPDATE {t} SET val = -val WHERE id = 2000; DELETE FROM {t} WHERE id = 2500"
        ))
        .unwrap();
        got.extend(
            s.query("FETCH ALL FROM c", &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i32>(0)),
        );
        s.batch_execute("ROLLBACK").unwrap();
        got
    };
    for order in ["", "ORDER BY id", "ORDER BY id DESC"] {
        let (m, h) = (run(&mut s, "m", order), run(&mut s, "h", order));
        let sorted = |mut v: Vec<i32>| {
            v.sort();
            v
        };
        assert_eq!(m.len(), 4801, "{order}: every row of the range once");
        assert_eq!(sorted(m.clone()), sorted(h.clone()), "{order}");
        if !order.is_empty() {
            assert_eq!(m, h, "{order}");
        }
    }
}

/// Prepared statements run their plans many times, and each plan's lists are decoded
/// once per backend (`scan_plans`): statements of one session on one table, with
/// different indexes, directions, filters and columns, executed in turns with their
/// generic plans, return what the same statements return on a heap table; so they do
/// after every change that replans them (index created or dropped, column added, key
/// column's type changed, table truncated and refilled), in and out of transactions.
#[test]
fn prepared_plans_of_one_table_each_return_their_own_rows_through_ddl() {
    let (_c, mut s) = setup();
    s.batch_execute(
        "CREATE FOREIGN TABLE pm (id int PRIMARY KEY, grp int, v text) SERVER memfdw; \
         CREATE TABLE ph (id int PRIMARY KEY, grp int, v text); \
         CREATE INDEX pm_grp ON pm (grp); CREATE INDEX ph_grp ON ph (grp); \
         INSERT INTO pm SELECT g, g % 7, 'v' || g FROM generate_series(1, 300) g; \
         INSERT INTO ph SELECT * FROM pm; \
         SET plan_cache_mode = force_generic_plan",
    )
    .unwrap();
    let queries = [
        "SELECT v FROM {t} WHERE id = $1",
        "SELECT id, v FROM {t} WHERE grp = $1 % 7 ORDER BY id DESC",
        "SELECT grp::int FROM {t} WHERE id > $1 ORDER BY id LIMIT 5",
        "SELECT id FROM {t} WHERE v = 'v' || $1::int ORDER BY id",
        "SELECT count(*)::int FROM {t} WHERE grp = $1 % 7 AND id < $1",
    ];
    let prepare = |s: &mut Client| -> Vec<(postgres::Statement, postgres::Statement)> {
        queries
            .iter()
            .map(|q| {
                (
                    s.prepare(&q.replace("{t}", "pm")).unwrap(),
                    s.prepare(&q.replace("{t}", "ph")).unwrap(),
                )
            })
            .collect()
    };
    let text = |rows: Vec<postgres::Row>| -> Vec<String> {
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| match *r.columns()[i].type_() {
                        postgres::types::Type::INT4 => {
                            r.get::<_, Option<i32>>(i).map(|x| x.to_string())
                        }
                        postgres::types::Type::INT8 => {
                            r.get::<_, Option<i64>>(i).map(|x| x.to_string())
                        }
                        _ => r.get::<_, Option<String>>(i),
                    })
                    .map(|x| x.unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    };
    let check =
        |s: &mut Client, stmts: &[(postgres::Statement, postgres::Statement)], round: &str| {
            for k in [1i32, 7, 150, 299, 300, 301, 0, 42] {
                for (i, (m, h)) in stmts.iter().enumerate() {
                    let got = text(s.query(m, &[&k]).unwrap());
                    let want = text(s.query(h, &[&k]).unwrap());
                    assert_eq!(got, want, "{round}: query {i} with {k}");
                }
            }
        };
    let stmts = prepare(&mut s);
    check(&mut s, &stmts, "start");
    check(&mut s, &stmts, "again");
    let changes = [
        "CREATE UNIQUE INDEX pm_v ON pm (v); CREATE UNIQUE INDEX ph_v ON ph (v)",
        "DROP INDEX pm_grp; DROP INDEX ph_grp",
        "ALTER FOREIGN TABLE pm ADD COLUMN w int DEFAULT 3; ALTER TABLE ph ADD COLUMN w int DEFAULT 3",
        "UPDATE pm SET grp = grp + 1 WHERE id % 5 = 0; UPDATE ph SET grp = grp + 1 WHERE id % 5 = 0",
        "BEGIN; TRUNCATE pm; TRUNCATE ph; \
         INSERT INTO pm SELECT g, g % 5, 'v' || g, g FROM generate_series(100, 400) g; \
         INSERT INTO ph SELECT * FROM pm; COMMIT",
        "CREATE INDEX pm_grp ON pm (grp, id); CREATE INDEX ph_grp ON ph (grp, id)",
        "ALTER FOREIGN TABLE pm ALTER COLUMN grp TYPE bigint; ALTER TABLE ph ALTER COLUMN grp TYPE bigint",
    ];
    for change in changes {
        s.batch_execute(change).unwrap();
        check(&mut s, &stmts, change);
        // The same statements prepared again (new plans beside the old ones).
        let again = prepare(&mut s);
        check(&mut s, &again, change);
        check(&mut s, &stmts, change);
    }
    // Inside a transaction that truncates and refills the table: its plans read the
    // transaction's replacement.
    s.batch_execute(
        "BEGIN; TRUNCATE pm; TRUNCATE ph; \
         INSERT INTO pm SELECT g, g % 3, 'v' || g, 0 FROM generate_series(1, 50) g; \
         INSERT INTO ph SELECT * FROM pm",
    )
    .unwrap();
    check(&mut s, &stmts, "in the truncating transaction");
    s.batch_execute("ROLLBACK").unwrap();
    check(&mut s, &stmts, "after its rollback");
}
