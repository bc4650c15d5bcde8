//! Row filters: full scans (serial and parallel) and aggregates computed in memory
//! check simple comparisons on each row in the engine ("Memory Filter" in EXPLAIN)
//! and return the same rows as a heap table, whatever the column type, NULLs,
//! collation, the comparison value's type (a bigint or numeric against an int column,
//! as drivers bind them), or parameters.

use memfdw_e2e::{plan, text_rows, Cluster};
use postgres::Client;

const COLUMNS: &str = "id int NOT NULL, a int2, b int4, c int8, d date, ts timestamp, \
                       tz timestamptz, t text, tc text COLLATE \"C\", ch char(4), \
                       n numeric, f float8, o oid, bo bool";

fn setup(s: &mut Client) {
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE h ({COLUMNS}); CREATE FOREIGN TABLE m ({COLUMNS}) SERVER memfdw; \
         INSERT INTO h SELECT g, \
            CASE WHEN g % 5 = 0 THEN NULL ELSE (g % 300 - 150)::int2 END, \
            CASE WHEN g % 7 = 0 THEN NULL ELSE g * 1000 - 500000 END, \
            CASE WHEN g % 11 = 0 THEN NULL ELSE g::int8 * 3000000000 - 9000000000000 END, \
            CASE WHEN g % 13 = 0 THEN NULL ELSE date '2000-01-01' + (g % 400 - 200) END, \
            CASE WHEN g % 17 = 0 THEN NULL ELSE timestamp '2020-02-29 12:00' + g * interval '37 min' END, \
            CASE WHEN g % 19 = 0 THEN NULL ELSE timestamptz '2021-06-01 00:00+02' - g * interval '1 h' END, \
            CASE WHEN g % 3 = 0 THEN NULL ELSE 'x' || (g % 50) END, \
            CASE WHEN g % 4 = 0 THEN NULL ELSE 'Y' || (g % 40) END, \
            CASE WHEN g % 6 = 0 THEN NULL ELSE (g % 20)::text END, \
            CASE WHEN g % 8 = 0 THEN NULL ELSE (g % 97) / 4.0 END, \
            CASE WHEN g % 9 = 0 THEN NULL WHEN g % 10 = 0 THEN 'NaN' ELSE (g % 61) / 8.0 - 3 END, \
            CASE WHEN g % 23 = 0 THEN NULL ELSE (4294967295 - g * 7)::oid END, \
            CASE WHEN g % 29 = 0 THEN NULL ELSE g % 2 = 0 END \
         FROM generate_series(1, 3000) g; \
         INSERT INTO m SELECT * FROM h; ANALYZE h; ANALYZE m"
    ))
    .unwrap();
}

/// `q` (with `{t}` for the table) on both tables: the same rows, in the same order
/// when `q` orders them; returns the memory table's plan.
fn same(s: &mut Client, q: &str) -> String {
    let sorted = |mut v: Vec<String>| {
        if !q.contains("ORDER BY") {
            v.sort();
        }
        v
    };
    let on_heap = sorted(text_rows(s, &q.replace("{t}", "h")));
    let on_mem = sorted(text_rows(s, &q.replace("{t}", "m")));
    assert_eq!(on_mem, on_heap, "{q}");
    plan(s, &q.replace("{t}", "m"))
}

const FILTERS: &[&str] = &[
    "a = 7",
    "a < -100",
    "a >= 140 AND a <= 149",
    "b > 1000000",
    "b <= -400000 OR b IS NULL",
    "b = 250000::int8",
    "b > 2500.5",
    "b < 3000000000::int8",
    "b > 3000000000::int8",
    "c >= 0",
    "c < -8000000000000",
    "c = 3000000000 * 3 - 9000000000000",
    "d = date '2000-01-05'",
    "d > '2000-06-01' AND d IS NOT NULL",
    "d < timestamp '2000-01-05 12:00'",
    "d >= timestamptz '1999-12-01 00:00+00'",
    "ts >= date '2020-03-01'",
    "ts < timestamp '2020-03-05'",
    "tz >= timestamptz '2021-05-01 00:00+00'",
    "t = 'x7'",
    "tc > 'Y3' AND tc < 'Y5'",
    "ch = '13'",
    "ch = '13  '",
    "n = 12.25",
    "n > 20",
    "f > 0",
    "f = 'NaN'",
    "f <= -2.5",
    "o < 4294960000",
    "o > 4294966000",
    "bo = true",
    "bo IS NULL",
    "a IS NULL AND b IS NOT NULL",
    "a > 100 AND id % 3 = 0",
    "b IN (250000, 251000, -499000, 7)",
    "b IN (250000::int8, 5000000000)",
    "b = ANY (ARRAY[]::int[])",
    "t IN ('x1', 'x7', NULL)",
    "ch IN ('13', '2 ')",
    "d IN (date '2000-01-05', date '1999-07-01') AND a IS NOT NULL",
    "n IN (12.25, 3.5)",
];

#[test]
fn filtered_scans_return_what_heap_returns() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let mut filtered = 0;
    for f in FILTERS {
        let p = same(&mut s, &format!("SELECT * FROM {{t}} WHERE {f}"));
        filtered += p.contains("Memory Filter") as usize;
        // Aggregates: in memory, with or without PostgreSQL's quals.
        let p = same(
            &mut s,
            &format!("SELECT count(*), sum(b), min(d), max(c) FROM {{t}} WHERE {f}"),
        );
        assert!(p.contains("aggregated in memory"), "{f}\n{p}");
    }
    assert!(
        filtered >= FILTERS.len() - 3,
        "{filtered} of {}",
        FILTERS.len()
    );
    // Exact conditions leave PostgreSQL out of an aggregate; others keep its Filter.
    let p = plan(
        &mut s,
        "SELECT count(*) FROM m WHERE a = 7 AND d > '2000-01-01'",
    );
    assert!(
        p.contains("Memory Filter") && !p.contains("\n  Filter"),
        "{p}"
    );
    let p = plan(
        &mut s,
        "SELECT count(*) FROM m WHERE d < timestamp '2000-01-05 12:00'",
    );
    assert!(
        p.contains("Memory Filter") && p.contains("\n  Filter"),
        "{p}"
    );
    // Parallel scans filter in every worker.
    s.batch_execute(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2; \
         SET memfdw.enable_aggregate_pushdown = off",
    )
    .unwrap();
    for f in FILTERS {
        let p = same(
            &mut s,
            &format!("SELECT count(*), sum(id) FROM {{t}} WHERE {f}"),
        );
        assert!(p.contains("Parallel Foreign Scan"), "{f}\n{p}");
    }
    s.batch_execute("RESET ALL").unwrap();
    // Turned off: no Memory Filter, the same rows.
    s.batch_execute("SET memfdw.enable_row_filters = off")
        .unwrap();
    let p = same(&mut s, "SELECT * FROM {t} WHERE a = 7");
    assert!(!p.contains("Memory Filter"), "{p}");
}

#[test]
fn filters_follow_parameters_rescans_and_own_writes() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    // Parameters bound as drivers bind them (bigint for an int column), generic plans.
    s.batch_execute("SET plan_cache_mode = force_generic_plan")
        .unwrap();
    for t in ["h", "m"] {
        s.batch_execute(&format!(
            "PREPARE p_{t}(int8, date) AS SELECT count(*), sum(c) FROM {t} WHERE b >= $1 AND d < $2; \
             PREPARE q_{t}(int8) AS SELECT id FROM {t} WHERE b = $1; \
             PREPARE r_{t}(int8[]) AS SELECT count(*), max(id) FROM {t} WHERE b = ANY ($1)"
        ))
        .unwrap();
    }
    for (b, d) in [
        (0i64, "2000-03-01"),
        (-500000, "1999-12-01"),
        (5_000_000_000, "2001-01-01"),
    ] {
        let h = text_rows(&mut s, &format!("EXECUTE p_h({b}, '{d}')"));
        assert_eq!(text_rows(&mut s, &format!("EXECUTE p_m({b}, '{d}')")), h);
    }
    for b in [250000i64, 250001, 5_000_000_000, -5_000_000_000] {
        let h = text_rows(&mut s, &format!("EXECUTE q_h({b})"));
        assert_eq!(
            text_rows(&mut s, &format!("EXECUTE q_m({b})")),
            h,
            "b = {b}"
        );
    }
    assert!(plan(&mut s, "EXECUTE q_m(1)").contains("Memory Filter"));
    for list in ["{250000,251000}", "{}", "{5000000000,NULL,-499000}"] {
        let h = text_rows(&mut s, &format!("EXECUTE r_h('{list}')"));
        assert_eq!(
            text_rows(&mut s, &format!("EXECUTE r_m('{list}')")),
            h,
            "{list}"
        );
    }
    s.batch_execute("RESET plan_cache_mode").unwrap();
    // A rescan with another value each time (the inner side of a nested loop).
    let q = "SELECT g, (SELECT count(*) FROM {t} WHERE a = g), \
                (SELECT max(id) FROM {t} WHERE a = g AND t IS NOT NULL) \
             FROM generate_series(-3, 20) g ORDER BY g";
    same(&mut s, q);
    // The transaction's own writes pass the same filter.
    s.batch_execute(
        "BEGIN; UPDATE m SET a = 9999 WHERE id <= 10; DELETE FROM m WHERE a = 7; \
         INSERT INTO m (id, a) VALUES (-1, 9999); \
         UPDATE h SET a = 9999 WHERE id <= 10; DELETE FROM h WHERE a = 7; \
         INSERT INTO h (id, a) VALUES (-1, 9999)",
    )
    .unwrap();
    for f in ["a = 9999", "a = 7", "a > 9000 AND b IS NULL"] {
        same(&mut s, &format!("SELECT id, a FROM {{t}} WHERE {f}"));
        same(&mut s, &format!("SELECT count(*) FROM {{t}} WHERE {f}"));
    }
    s.batch_execute("ROLLBACK").unwrap();
    // EXPLAIN ANALYZE counts what the filter removed.
    let text = text_rows(
        &mut s,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT * FROM m WHERE a = 7",
    )
    .join("\n");
    assert!(
        text.contains("Rows Removed by Memory Filter: 2990"),
        "{text}"
    );
}

#[test]
fn filters_keep_behind_security_barriers() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    // An UPDATE through a security-barrier view: the view's condition has the lower
    // security level; a user condition may run before it only if it is leakproof
    // (int2 = int4 is; numeric = numeric is not), as PostgreSQL decides.
    s.batch_execute(
        "CREATE VIEW v WITH (security_barrier) AS SELECT * FROM m WHERE id <= 100; \
         CREATE VIEW vh WITH (security_barrier) AS SELECT * FROM h WHERE id <= 100",
    )
    .unwrap();
    let memory_filter = |p: &str| -> String {
        p.lines()
            .find(|l| l.contains("Memory Filter"))
            .unwrap_or("")
            .to_string()
    };
    let p = plan(&mut s, "UPDATE v SET b = b WHERE n = 12.25");
    let f = memory_filter(&p);
    assert!(f.contains("(id <= 100)") && !f.contains("12.25"), "{p}");
    let p = plan(&mut s, "UPDATE v SET b = b WHERE a = 7");
    assert!(memory_filter(&p).contains("(a = 7)"), "{p}");
    for q in [
        "UPDATE {t} SET b = b + 1 WHERE n = 12.25",
        "UPDATE {t} SET b = b + 1 WHERE a = 7",
    ] {
        let on_heap = s.execute(q.replace("{t}", "vh").as_str(), &[]).unwrap();
        let on_mem = s.execute(q.replace("{t}", "v").as_str(), &[]).unwrap();
        assert_eq!(on_mem, on_heap, "{q}");
    }
    same(&mut s, "SELECT id, b FROM {t} WHERE id <= 100 ORDER BY id");
}
