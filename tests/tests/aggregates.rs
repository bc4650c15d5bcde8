//! Aggregates the engine computes itself (`Foreign Scan` with "aggregated in memory"):
//! the same answers as a heap table gives (types, NULLs, empty inputs, sums beyond 64
//! bits), with the table's conditions, the transaction's own writes, snapshots,
//! parameters and rescans, privileges and security-barrier views honoured; and what
//! the engine does not compute is left to PostgreSQL.

use memfdw_e2e::{plan, sqlstate, text_rows, Cluster};
use postgres::Client;

const COLUMNS: &str = "id int NOT NULL, a int2, b int4, c int8, d date, ts timestamp, \
                       tz timestamptz, o oid, mny money, t text, tm time, bo bool, \
                       vc varchar(10), cn char(3), bp bpchar";

/// A heap table `h` and a memory table `m` with the same rows: NULLs in every
/// nullable column, negative values, and int8 values whose sum passes 2^63.
fn setup(s: &mut Client) {
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE h ({COLUMNS}); CREATE FOREIGN TABLE m ({COLUMNS}) SERVER memfdw; \
         CREATE TABLE e ({COLUMNS}); CREATE FOREIGN TABLE me ({COLUMNS}) SERVER memfdw; \
         INSERT INTO h SELECT g, \
            CASE WHEN g % 5 = 0 THEN NULL ELSE (g % 300 - 150)::int2 END, \
            CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1000 - 500000 END, \
            CASE WHEN g % 11 = 0 THEN NULL WHEN g % 2 = 0 THEN 9000000000000000000 - g \
                 ELSE -g::int8 * 1000003 END, \
            CASE WHEN g = 9 THEN '-infinity' WHEN g % 13 = 0 THEN NULL \
                 ELSE date '2000-01-01' + (g % 4000 - 2000) END, \
            CASE WHEN g % 17 = 0 THEN NULL ELSE timestamp '2020-02-29 12:00' + g * interval '37 min' END, \
            CASE WHEN g = 7 THEN '-infinity' WHEN g = 8 THEN 'infinity' WHEN g % 19 = 0 THEN NULL \
                 ELSE timestamptz '2021-06-01 00:00+02' - g * interval '1 h' END, \
            CASE WHEN g % 23 = 0 THEN NULL WHEN g % 2 = 0 THEN (g * 3)::oid \
                 ELSE (4294967295 - g * 3)::oid END, \
            CASE WHEN g % 29 = 0 THEN NULL ELSE (g * 1.25 - 300)::money END, \
            CASE WHEN g % 3 = 0 THEN NULL ELSE 'x' || g END, \
            CASE WHEN g % 31 = 0 THEN NULL ELSE time '00:00:01' + g * interval '17 s' END, \
            CASE WHEN g % 37 = 0 THEN NULL ELSE g % 3 = 0 END, \
            CASE WHEN g % 41 = 0 THEN NULL ELSE 'v' || (g % 7) END, \
            (g % 5)::text, \
            CASE WHEN g % 2 = 0 THEN 'a'::bpchar ELSE ('a' || repeat(' ', g % 3))::bpchar END \
         FROM generate_series(1, 5000) g; \
         INSERT INTO m SELECT * FROM h"
    ))
    .unwrap();
    // (In a transaction of its own: ANALYZE of a memory table reads committed rows.)
    s.batch_execute("ANALYZE h; ANALYZE m").unwrap();
}

/// Runs `q` (with `{t}` standing for the table) on the heap table and the memory
/// table and checks that the answers are the same; returns the memory table's plan.
fn same(s: &mut Client, q: &str, heap: &str, mem: &str) -> String {
    let on_heap = text_rows(s, &q.replace("{t}", heap));
    let on_mem = text_rows(s, &q.replace("{t}", mem));
    assert_eq!(on_mem, on_heap, "{q}");
    plan(s, &q.replace("{t}", mem))
}

const IN_MEMORY: &str = "aggregated in memory";

#[test]
fn aggregates_computed_in_memory_answer_as_heap_does() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let pushed = [
        "SELECT count(*) FROM {t}",
        "SELECT count(*), count(a), count(t), count(mny), count(id) FROM {t}",
        "SELECT sum(a), sum(b), sum(c), sum(id) FROM {t}",
        "SELECT avg(a), avg(b), avg(c), avg(id) FROM {t}",
        "SELECT min(a), max(a), min(b), max(b), min(c), max(c) FROM {t}",
        "SELECT min(d), max(d), min(ts), max(ts), min(tz), max(tz) FROM {t}",
        "SELECT min(o), max(o), min(mny), max(mny), min(tm), max(tm) FROM {t}",
        // Unsigned oids: the small ones are the smallest.
        "SELECT min(o), max(o) FROM {t} WHERE o < 3000000000 OR o > 4000000000",
        // Types of the results, as the client sees them.
        "SELECT pg_typeof(sum(a))::text, pg_typeof(sum(b))::text, pg_typeof(sum(c))::text, \
                pg_typeof(avg(b))::text, pg_typeof(min(o))::text FROM {t}",
        // Expressions over aggregates, and the same aggregate twice.
        "SELECT count(*) * 2 + 1, sum(b) / nullif(count(b), 0), coalesce(max(a), -1), \
                sum(b) = sum(b) FROM {t}",
        // Conditions, evaluated by PostgreSQL on each row first.
        "SELECT count(*), sum(b), avg(c), min(d), count(t) FROM {t} WHERE id % 3 = 1",
        "SELECT count(*), sum(c), min(tz) FROM {t} WHERE t LIKE 'x1%' AND b > 0",
        "SELECT count(*), count(b) FROM {t} WHERE b IS NULL",
        "SELECT count(*), max(id) FROM {t} WHERE d < date '1998-01-01' OR o < 4294960000",
        // No input rows: count 0, the others NULL.
        "SELECT count(*), count(a), sum(a), sum(c), avg(b), avg(c), min(d), max(tz) FROM {t} \
           WHERE id < 0",
        "SELECT count(*), sum(c), avg(c), min(c) FROM {t} WHERE c IS NULL",
        // A placeholder in a table's condition (the subquery below is pulled up
        // under the outer join, then the join goes).
        "SELECT count(*), sum(b) FROM {t} LEFT JOIN (SELECT 1 AS one) s ON true WHERE s.one = 1",
        // In a subquery, a CTE, a UNION.
        "SELECT x.n + 1 FROM (SELECT count(*) AS n FROM {t}) x",
        "WITH s AS (SELECT sum(c) AS v FROM {t}) SELECT v FROM s",
        "SELECT sum(b) FROM {t} UNION ALL SELECT sum(a) FROM {t} WHERE a < 0",
    ];
    for q in pushed {
        let p = same(&mut s, q, "h", "m");
        assert!(p.contains(IN_MEMORY), "{q}\n{p}");
    }
    // An empty table.
    let q = "SELECT count(*), sum(b), avg(c), min(ts), max(o) FROM {t}";
    let p = same(&mut s, q, "e", "me");
    assert!(p.contains(IN_MEMORY), "{q}\n{p}");
    // Left to PostgreSQL, with the same answers.
    let not_pushed = [
        "SELECT sum(b) FILTER (WHERE id > 10) FROM {t}",
        "SELECT count(DISTINCT a) FROM {t}",
        "SELECT a % 3, count(*) FROM {t} GROUP BY 1 ORDER BY 1",
        "SELECT sum(b + 1) FROM {t}",
        "SELECT string_agg(t, ',' ORDER BY id) FROM {t} WHERE id < 20",
        "SELECT sum(id::int8), max(t) FROM {t}",
        "SELECT count(*) FROM {t} WHERE id IN (SELECT b FROM {t} WHERE b > 0)",
    ];
    for q in not_pushed {
        let p = same(&mut s, q, "h", "m");
        assert!(!p.contains(IN_MEMORY), "{q}\n{p}");
    }
    // Turned off: PostgreSQL's plan and the same answer.
    s.batch_execute("SET memfdw.enable_aggregate_pushdown = off")
        .unwrap();
    let p = same(&mut s, "SELECT count(*), sum(c) FROM {t}", "h", "m");
    assert!(!p.contains(IN_MEMORY), "{p}");
    s.batch_execute("RESET memfdw.enable_aggregate_pushdown")
        .unwrap();
    // An inheritance parent: the children's rows count too (PostgreSQL's plan).
    s.batch_execute(
        "CREATE TABLE hc () INHERITS (h); CREATE TABLE mc () INHERITS (m); \
         INSERT INTO hc (id, b, c) VALUES (1, 10, 1), (2, 20, NULL); \
         INSERT INTO mc (id, b, c) VALUES (1, 10, 1), (2, 20, NULL)",
    )
    .unwrap();
    for q in [
        "SELECT count(*), sum(b), max(c) FROM {t}",
        "SELECT count(*) FROM ONLY {t}",
    ] {
        same(&mut s, q, "h", "m");
    }
    assert!(!plan(&mut s, "SELECT count(*) FROM m").contains(IN_MEMORY));
    assert!(plan(&mut s, "SELECT count(*) FROM ONLY m").contains(IN_MEMORY));
    s.batch_execute("DROP TABLE hc, mc").unwrap();
    // A condition without columns, checked once by PostgreSQL.
    s.batch_execute("PREPARE pc(bool) AS SELECT count(*) FROM m WHERE $1")
        .unwrap();
    assert_eq!(text_rows(&mut s, "EXECUTE pc(false)"), vec!["0"]);
    assert_eq!(text_rows(&mut s, "EXECUTE pc(true)"), vec!["5000"]);

    // The rows read count as a sequential scan of the table.
    let before: i64 = s
        .query_one(
            "SELECT seq_tup_read FROM memfdw.stat_user_tables WHERE relname = 'm'",
            &[],
        )
        .unwrap()
        .get(0);
    text_rows(&mut s, "SELECT count(*) FROM m");
    let after: i64 = s
        .query_one(
            "SELECT seq_tup_read FROM memfdw.stat_user_tables WHERE relname = 'm'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(after - before, 5000);
}

#[test]
fn aggregates_see_own_writes_snapshots_parameters_and_rescans() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let count = |s: &mut Client, q: &str| -> Vec<String> { text_rows(s, q) };
    // The transaction's own writes, statement by statement.
    s.batch_execute(
        "BEGIN; INSERT INTO m (id, b, c) VALUES (-1, 5, 5); \
         UPDATE m SET b = b + 1 WHERE id <= 10; DELETE FROM m WHERE id BETWEEN 11 AND 20; \
         INSERT INTO h (id, b, c) VALUES (-1, 5, 5); \
         UPDATE h SET b = b + 1 WHERE id <= 10; DELETE FROM h WHERE id BETWEEN 11 AND 20",
    )
    .unwrap();
    let p = same(&mut s, "SELECT count(*), sum(b), sum(c) FROM {t}", "h", "m");
    assert!(p.contains(IN_MEMORY), "{p}");
    s.batch_execute("ROLLBACK").unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM m"), vec!["5000"]);

    // A repeatable read snapshot does not see a later commit.
    let mut other = c.connect();
    s.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(count(&mut s, "SELECT count(*) FROM m"), vec!["5000"]);
    other
        .batch_execute("INSERT INTO m (id, b) VALUES (9001, 1), (9002, 2)")
        .unwrap();
    assert_eq!(
        count(&mut s, "SELECT count(*), sum(b) FROM m WHERE id > 9000"),
        vec!["0|NULL"]
    );
    assert_eq!(count(&mut s, "SELECT count(*) FROM m"), vec!["5000"]);
    s.batch_execute("COMMIT").unwrap();
    assert_eq!(
        count(&mut s, "SELECT count(*), sum(b) FROM m WHERE id > 9000"),
        vec!["2|3"]
    );
    assert_eq!(count(&mut s, "SELECT count(*) FROM m"), vec!["5002"]);
    // SERIALIZABLE: a count reads the whole table, and the read is validated at
    // commit: of two transactions that each count and then insert, one fails.
    let mut t1 = c.connect();
    let mut t2 = c.connect();
    for t in [&mut t1, &mut t2] {
        t.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .unwrap();
        assert_eq!(count(t, "SELECT count(*) FROM m"), vec!["5002"]);
    }
    t1.batch_execute("INSERT INTO m (id) VALUES (9003)")
        .unwrap();
    t2.batch_execute("INSERT INTO m (id) VALUES (9004)")
        .unwrap();
    t1.batch_execute("COMMIT").unwrap();
    let e = t2.batch_execute("COMMIT").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("40001"), "{e}");
    other
        .batch_execute("DELETE FROM m WHERE id > 9000")
        .unwrap();

    // Parameters: a prepared statement's generic plan, a correlated subquery (a
    // rescan per outer row), and one under a Sort that is rescanned only if the
    // scan's parameters changed.
    for t in ["h", "m"] {
        s.batch_execute(&format!(
            "PREPARE p_{t}(int) AS SELECT count(*), sum(c) FROM {t} WHERE id > $1; \
             SET plan_cache_mode = force_generic_plan"
        ))
        .unwrap();
    }
    for arg in [0, 2500, 4999, 5000] {
        let h = count(&mut s, &format!("EXECUTE p_h({arg})"));
        assert_eq!(count(&mut s, &format!("EXECUTE p_m({arg})")), h);
    }
    assert!(plan(&mut s, "EXECUTE p_m(1)").contains(IN_MEMORY));
    let q = "SELECT g, (SELECT count(*) FROM {t} WHERE a = g), \
                (SELECT x FROM (SELECT sum(b) AS x FROM {t} WHERE id < g * 100) q ORDER BY x LIMIT 1) \
             FROM generate_series(-3, 40) g ORDER BY g";
    let p = same(&mut s, q, "h", "m");
    assert!(p.contains(IN_MEMORY), "{p}");

    // A cursor, and a plpgsql function.
    s.batch_execute("BEGIN; DECLARE cur CURSOR FOR SELECT count(*), max(c) FROM m")
        .unwrap();
    let h = count(&mut s, "SELECT count(*), max(c) FROM h");
    assert_eq!(count(&mut s, "FETCH ALL FROM cur"), h);
    s.batch_execute("DECLARE sc SCROLL CURSOR FOR SELECT count(*), max(c) FROM m")
        .unwrap();
    assert_eq!(count(&mut s, "FETCH NEXT FROM sc"), h);
    assert_eq!(count(&mut s, "FETCH PRIOR FROM sc"), Vec::<String>::new());
    assert_eq!(count(&mut s, "FETCH NEXT FROM sc"), h);
    s.batch_execute("COMMIT").unwrap();
    s.batch_execute(
        "CREATE FUNCTION total(lim int) RETURNS numeric LANGUAGE plpgsql AS \
         $$ BEGIN RETURN (SELECT sum(c) FROM m WHERE id < lim); END $$",
    )
    .unwrap();
    let want = count(&mut s, "SELECT sum(c) FROM h WHERE id < 100");
    for _ in 0..7 {
        assert_eq!(count(&mut s, "SELECT total(100)"), want);
    }
}

#[test]
fn aggregates_keep_privileges_barriers_and_unloaded_tables() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    s.batch_execute(
        "CREATE ROLE reader LOGIN; \
         CREATE VIEW mv WITH (security_barrier) AS SELECT * FROM m WHERE id <= 10; \
         CREATE VIEW hv WITH (security_barrier) AS SELECT * FROM h WHERE id <= 10; \
         GRANT SELECT ON mv, hv TO reader; \
         CREATE FUNCTION leak(x int) RETURNS bool LANGUAGE plpgsql COST 0.0001 AS \
           $$ BEGIN RAISE NOTICE 'saw %', x; RETURN true; END $$; \
         GRANT EXECUTE ON FUNCTION leak(int) TO reader",
    )
    .unwrap();
    let mut r = c.connect_as("reader", "postgres");
    let e = r.simple_query("SELECT count(*) FROM m").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    // The barrier's condition runs before the cheap leaky function: it sees only the
    // rows the view shows, as with a heap table. (PostgreSQL plans a barrier view as a
    // subquery, so the aggregate over it is PostgreSQL's; the view's own aggregate,
    // below, is computed in memory.)
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = notices.clone();
    let mut r = c
        .conn_str()
        .replace("user=postgres", "user=reader")
        .parse::<postgres::Config>()
        .unwrap()
        .notice_callback(move |n| seen.lock().unwrap().push(n.message().to_string()))
        .connect(postgres::NoTls)
        .unwrap();
    let q = "SELECT count(*), sum(b) FROM {t} WHERE leak(b)";
    let on_heap = text_rows(&mut r, &q.replace("{t}", "hv"));
    let heap_notices = std::mem::take(&mut *notices.lock().unwrap());
    let on_mem = text_rows(&mut r, &q.replace("{t}", "mv"));
    let mem_notices = std::mem::take(&mut *notices.lock().unwrap());
    assert_eq!(on_mem, on_heap);
    assert_eq!(mem_notices.len(), 10, "{mem_notices:?}");
    let (mut hn, mut mn) = (heap_notices, mem_notices);
    hn.sort();
    mn.sort();
    assert_eq!(mn, hn);
    // Through a plain view the reader may use, the aggregate is computed in memory
    // with the reader's privileges on the view.
    s.batch_execute(
        "CREATE VIEW pv AS SELECT * FROM m WHERE id % 2 = 0;          CREATE VIEW ph AS SELECT * FROM h WHERE id % 2 = 0; GRANT SELECT ON pv, ph TO reader",
    )
    .unwrap();
    let p = same(
        &mut r,
        "SELECT count(*), sum(c), min(tz) FROM {t}",
        "ph",
        "pv",
    );
    assert!(p.contains(IN_MEMORY), "{p}");

    // An unloaded table is refused, as for any read.
    s.batch_execute("SELECT memfdw.unload('m')").unwrap();
    let e = s.simple_query("SELECT count(*) FROM m").unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("55000"), "{e}");
    s.batch_execute("SELECT memfdw.load('m')").unwrap();
    assert_eq!(text_rows(&mut s, "SELECT count(*) FROM m"), vec!["5000"]);
}

#[test]
fn grouped_aggregates_answer_as_heap_does() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    // (Groups come out in no particular order, as from a hash aggregate: every
    // query here orders them.)
    let pushed = [
        "SELECT a, count(*) FROM {t} GROUP BY a ORDER BY a",
        "SELECT t, count(*), sum(b), avg(c), min(d), max(tz) FROM {t} GROUP BY t ORDER BY t",
        "SELECT a % 1 + 0 AS z, count(*) FROM {t} GROUP BY a ORDER BY a NULLS FIRST, 2",
        "SELECT d, o, count(b), sum(a) FROM {t} GROUP BY d, o ORDER BY d, o",
        "SELECT tm, mny, count(*) FROM {t} WHERE id < 500 GROUP BY tm, mny ORDER BY 1, 2",
        "SELECT count(*) FROM {t} GROUP BY a ORDER BY 1",
        "SELECT a FROM {t} GROUP BY a ORDER BY a",
        "SELECT a, max(b) FROM {t} WHERE a > 100 AND b IS NOT NULL GROUP BY a ORDER BY a",
        "SELECT a, count(*) FROM {t} WHERE id < 0 GROUP BY a ORDER BY a",
    ];
    for q in pushed {
        let p = same(&mut s, q, "h", "m");
        assert!(p.contains(IN_MEMORY) && p.contains("Group Key"), "{q}\n{p}");
    }
    let pushed_too = [
        "SELECT count(*) FROM {t} HAVING count(*) > 1",
        "SELECT count(*) FROM {t} HAVING count(*) < 1",
        "SELECT bo, vc, cn, count(*), sum(b) FROM {t} GROUP BY bo, vc, cn ORDER BY 1, 2, 3",
        "SELECT vc, count(*) FROM {t} GROUP BY vc ORDER BY vc",
        // HAVING, evaluated by PostgreSQL on each group's row (an aggregate of its own
        // too), and an outer condition that becomes the subquery's HAVING.
        "SELECT a, count(*) FROM {t} GROUP BY a HAVING count(*) > 20 ORDER BY a",
        "SELECT a FROM {t} GROUP BY a HAVING sum(b) > 0 AND a > 10 ORDER BY a",
        "SELECT x.a, x.n + 1 FROM (SELECT a, count(*) AS n FROM {t} GROUP BY a) x \
           WHERE x.n > 10 ORDER BY 1",
        // One column grouped under three names.
        "SELECT a, x, y FROM (SELECT a, a AS x, a AS y, count(*) FROM {t} GROUP BY a, x, y) q \
           ORDER BY 1",
    ];
    for q in pushed_too {
        let p = same(&mut s, q, "h", "m");
        assert!(p.contains(IN_MEMORY), "{q}\n{p}");
    }
    let not_pushed = [
        "SELECT count(*), sum(c) FROM {t} GROUP BY ts IS NULL, a ORDER BY 1, 2",
        "SELECT a + 1, count(*) FROM {t} GROUP BY a + 1 ORDER BY 1",
        "SELECT f, count(*) FROM (SELECT id, b::float8 AS f FROM {t}) x GROUP BY f ORDER BY 1",
        "SELECT a, b, count(*) FROM {t} GROUP BY GROUPING SETS ((a), (b)) ORDER BY 1, 2",
        // bpchar without a length: 'a' and 'a  ' are one group, with other bytes.
        "SELECT bp, count(*) FROM {t} GROUP BY bp ORDER BY 1",
    ];
    for q in not_pushed {
        let p = same(&mut s, q, "h", "m");
        assert!(!p.contains(IN_MEMORY), "{q}\n{p}");
    }
    assert_eq!(
        text_rows(&mut s, "SELECT count(*) FROM m WHERE bp = 'a'"),
        vec!["5000"]
    );
    // ... and no memory filter takes its bytes for its value (PostgreSQL's Filter).
    for q in [
        "SELECT * FROM {t} WHERE bp = 'a'",
        "SELECT count(*) FROM {t} WHERE bp = 'a'",
    ] {
        let p = same(&mut s, q, "h", "m");
        assert!(
            !p.contains("Memory Filter") && p.contains("Filter"),
            "{q}\n{p}"
        );
    }
    // Grouping columns read by quals PostgreSQL evaluates on copied rows (its own
    // plans disabled, so that this path is taken).
    s.batch_execute("SET enable_hashagg = off; SET enable_sort = off")
        .unwrap();
    let p = same(
        &mut s,
        "SELECT a, count(*), max(c) FROM {t} WHERE a % 7 = 3 AND id % 2 = 0 GROUP BY a ORDER BY a",
        "h",
        "m",
    );
    assert!(p.contains(IN_MEMORY), "{p}");
    s.batch_execute("RESET enable_hashagg; RESET enable_sort")
        .unwrap();
    // Quals PostgreSQL evaluates on copied rows: as cheap as its own plan, so either.
    same(
        &mut s,
        "SELECT a, count(*) FROM {t} WHERE id % 7 = 3 GROUP BY a ORDER BY a",
        "h",
        "m",
    );
    // An empty table: no groups.
    let p = same(&mut s, "SELECT a, count(*) FROM {t} GROUP BY a", "e", "me");
    assert!(p.contains(IN_MEMORY), "{p}");
    // More groups than the hash aggregate's memory allows: left to PostgreSQL. (The
    // estimate needs statistics: ANALYZE in its own transaction.)
    s.batch_execute("ANALYZE m").unwrap();
    s.batch_execute("SET work_mem = '64kB'; SET hash_mem_multiplier = 1")
        .unwrap();
    let p = plan(&mut s, "SELECT id, count(*) FROM m GROUP BY id");
    assert!(!p.contains(IN_MEMORY), "{p}");
    s.batch_execute("RESET work_mem; RESET hash_mem_multiplier")
        .unwrap();
}

#[test]
fn grouped_aggregates_past_their_memory_fail_cleanly() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    s.batch_execute("ANALYZE m").unwrap();
    // The statistics say a has some 300 values; after these inserts it has 65,536,
    // far more than four times 64 kB of groups.
    // (Twice, to pass 100,000 rows: the pass runs on several threads, and one of
    // them outgrows the limit.)
    s.batch_execute(
        "INSERT INTO m (id, a) SELECT g, g % 65536 - 32768 FROM generate_series(0, 131071) g",
    )
    .unwrap();
    s.batch_execute("SET work_mem = '64kB'; SET hash_mem_multiplier = 1")
        .unwrap();
    let q = "SELECT a, count(*) FROM m GROUP BY a";
    assert!(plan(&mut s, q).contains(IN_MEMORY), "{}", plan(&mut s, q));
    let e = s.simple_query(q).unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("54000"), "{e:?}");
    // The hint's way out.
    s.batch_execute("SET memfdw.enable_aggregate_pushdown = off")
        .unwrap();
    // (65,536 values and NULL.)
    assert_eq!(
        text_rows(&mut s, &format!("SELECT count(*) FROM ({q}) x")),
        vec!["65537"]
    );
}

#[test]
fn large_tables_aggregate_on_every_core() {
    // Past 100,000 rows a pass runs on the engine's threads, each aggregating a part
    // of the row ids (with the table's filter), merged at the end; the same answers.
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE h (id int NOT NULL, g int2, v int4, w int8, t text); \
         CREATE FOREIGN TABLE m (id int NOT NULL, g int2, v int4, w int8, t text) SERVER memfdw; \
         INSERT INTO h SELECT i, CASE WHEN i % 101 = 0 THEN NULL ELSE (i % 37)::int2 END, \
                (i::int8 * 7919 % 100003 - 50000)::int4, \
                CASE WHEN i % 2 = 0 THEN 9000000000000000000 - i ELSE -i::int8 * 999983 END, \
                'k' || (i % 13) \
           FROM generate_series(1, 300000) i; \
         INSERT INTO m SELECT * FROM h; DELETE FROM m WHERE id % 1000 = 7; \
         DELETE FROM h WHERE id % 1000 = 7; UPDATE m SET v = -v WHERE id % 999 = 1; \
         UPDATE h SET v = -v WHERE id % 999 = 1",
    )
    .unwrap();
    s.batch_execute("ANALYZE h; ANALYZE m").unwrap();
    let queries = [
        "SELECT count(*), count(g), sum(v), sum(w), avg(v), avg(w), min(v), max(w) FROM {t}",
        "SELECT count(*), sum(w) FROM {t} WHERE v > 10000 AND g IN (3, 5, 7)",
        "SELECT g, count(*), sum(v), min(w), max(id) FROM {t} GROUP BY g ORDER BY g",
        "SELECT t, g, count(*) FROM {t} WHERE id < 250000 GROUP BY t, g ORDER BY t, g",
        "SELECT count(*) FROM {t} WHERE v = -1",
    ];
    for q in queries {
        let p = same(&mut s, q, "h", "m");
        assert!(p.contains(IN_MEMORY), "{q}\n{p}");
    }
    // The transaction's own writes: one thread reads them with the rest.
    s.batch_execute("BEGIN; UPDATE m SET v = 0 WHERE id < 100; UPDATE h SET v = 0 WHERE id < 100")
        .unwrap();
    for q in queries {
        same(&mut s, q, "h", "m");
    }
    s.batch_execute("ROLLBACK").unwrap();
    // Rows examined are every live row, whichever thread read them; the pass took
    // two threads with one worker allowed (on two cores or more), one when
    // PostgreSQL's own plans may not use workers.
    s.batch_execute("SET max_parallel_workers_per_gather = 1")
        .unwrap();
    let analyze = |s: &mut Client| {
        text_rows(
            s,
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT count(*), sum(v) FROM m",
        )
        .join("\n")
    };
    let text = analyze(&mut s);
    assert!(text.contains("Rows Examined: 299700"), "{text}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        assert!(text.contains("Threads: 2"), "{text}");
    }
    s.batch_execute("SET max_parallel_workers_per_gather = 0")
        .unwrap();
    let text = analyze(&mut s);
    assert!(
        text.contains("Threads: 1") && text.contains("Rows Examined: 299700"),
        "{text}"
    );
    same(&mut s, queries[2], "h", "m");
    s.batch_execute("RESET max_parallel_workers_per_gather")
        .unwrap();
}
