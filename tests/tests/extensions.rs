//! PostgreSQL's own instrumentation works on memory tables: pg_stat_statements counts
//! their statements, and auto_explain logs their plans (EXPLAIN ANALYZE output with
//! memfdw's access lines, also for scans inside subplans and parameterized joins).

use memfdw_e2e::{Cluster, Options};

#[test]
fn pg_stat_statements_and_auto_explain_see_memory_tables() {
    let c = Cluster::start_with(Options {
        also_preload: "pg_stat_statements",
        ..Default::default()
    });
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; CREATE EXTENSION pg_stat_statements; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, v int) SERVER memfdw; \
         CREATE TABLE probe (k int); INSERT INTO probe VALUES (3), (5); \
         INSERT INTO m SELECT g, g FROM generate_series(1, 1000) g; ANALYZE m; \
         SELECT pg_stat_statements_reset(); \
         LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
         SET auto_explain.log_analyze = on",
    )
    .unwrap();
    for i in 0..5 {
        s.query("SELECT v FROM m WHERE id = $1", &[&i]).unwrap();
    }
    s.batch_execute(
        "UPDATE m SET v = v + 1 WHERE id = 7; \
         SELECT * FROM probe WHERE k = (SELECT v FROM m WHERE id = 5); \
         SELECT * FROM probe p JOIN m ON m.id = p.k",
    )
    .unwrap();
    let calls: i64 = s
        .query_one(
            "SELECT calls FROM pg_stat_statements WHERE query = 'SELECT v FROM m WHERE id = $1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(calls, 5);
    let rows: i64 = s
        .query_one(
            "SELECT rows FROM pg_stat_statements WHERE query LIKE 'UPDATE m SET v = v + $1%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
    let log = c.log_text();
    for want in [
        "Memory Table Access: index scan using m_pkey (point)",
        "Index Cond: (id = 5)",
        "InitPlan 1",
        "Rows Examined",
    ] {
        assert!(
            log.contains(want),
            "auto_explain logged no {want:?}:\n{log}"
        );
    }
}
