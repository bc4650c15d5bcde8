//! Statistics PostgreSQL does not keep for foreign tables: distinct values per key
//! prefix of each memory-table index (`memfdw.index_stats()`), which the planner uses,
//! and automatic ANALYZE of memory tables once enough rows changed.

use memfdw_e2e::{one, plan, Cluster};
use postgres::Client;
use std::time::{Duration, Instant};

fn distinct(s: &mut Client, index: &str, prefix: i32) -> i64 {
    s.query_one(
        "SELECT n_distinct FROM memfdw.index_stats() WHERE index_name = $1 AND prefix_columns = $2",
        &[&index, &prefix],
    )
    .unwrap()
    .get(0)
}

fn near(got: i64, want: i64) -> bool {
    (got - want).abs() as f64 <= want as f64 * 0.02
}

#[test]
fn key_prefix_statistics_change_plans_for_the_better() {
    // (The test clusters run without automatic ANALYZE.)
    let c = Cluster::start();
    let mut s = c.connect();
    // a has two values; a and c are correlated (c determines a); b is unique.
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (a int NOT NULL, b int NOT NULL, c int NOT NULL, d int NOT NULL, pad text) \
           SERVER memfdw; \
         CREATE INDEX m_ac ON m (a, c); CREATE INDEX m_b ON m (b); CREATE INDEX m_d ON m (d); \
         INSERT INTO m SELECT g % 2, g, g % 100, g % 150, 'x' FROM generate_series(1, 40000) g",
    )
    .unwrap();
    assert_eq!(
        one::<i64>(&mut s, "SELECT count(*) FROM memfdw.index_stats()"),
        0
    );
    // No statistics: "a = 1" looks as selective as any equality, and the index on a
    // is taken although half the rows have a = 1.
    let q1 = "SELECT * FROM m WHERE a = 1 AND b > 39000";
    assert!(
        plan(&mut s, q1).contains("using m_ac"),
        "{}",
        plan(&mut s, q1)
    );

    s.batch_execute("ANALYZE m").unwrap();
    assert_eq!(distinct(&mut s, "m_ac", 1), 2);
    assert!(near(distinct(&mut s, "m_ac", 2), 100));
    assert!(near(distinct(&mut s, "m_b", 1), 40000));
    assert!(near(distinct(&mut s, "m_d", 1), 150));
    assert!(
        plan(&mut s, q1).contains("using m_b"),
        "{}",
        plan(&mut s, q1)
    );

    // Correlated key columns: PostgreSQL's per-column statistics multiply a = 1 (1/2)
    // and c = 3 (1/100) into 1/200 of the rows, more selective than d = 7 (1/150); the
    // index knows (a, c) has 100 values, so "a = 1 AND c = 3" reads 1/100 of the rows:
    // d's index is better.
    let q2 = "SELECT * FROM m WHERE a = 1 AND c = 3 AND d = 7";
    s.batch_execute("SET memfdw.enable_index_statistics = off")
        .unwrap();
    let without = plan(&mut s, q2);
    s.batch_execute("SET memfdw.enable_index_statistics = on")
        .unwrap();
    let with = plan(&mut s, q2);
    assert!(with.contains("using m_d"), "{with}");
    assert!(without.contains("using m_ac"), "{without}");
    // Better: fewer rows read and filtered out.
    let removed = |s: &mut Client| -> i64 {
        let text: Vec<String> = s
            .query(&format!("EXPLAIN (ANALYZE, TIMING OFF) {q2}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        text.iter()
            .find_map(|l| l.trim().strip_prefix("Rows Removed by Filter: "))
            .map_or(0, |n| n.parse().unwrap())
    };
    let removed_with = removed(&mut s);
    s.batch_execute("SET memfdw.enable_index_statistics = off")
        .unwrap();
    let removed_without = removed(&mut s);
    assert!(
        removed_with < removed_without,
        "{removed_with} vs {removed_without}"
    );
}

#[test]
fn memory_tables_are_analyzed_automatically() {
    let c = Cluster::start();
    c.append_conf("memfdw.autoanalyze = on\nmemfdw.autoanalyze_naptime = 1");
    c.stop_fast();
    c.restart();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (a int NOT NULL, b int NOT NULL, pad text) SERVER memfdw; \
         CREATE INDEX m_a ON m (a); \
         INSERT INTO m SELECT g % 3, g, 'x' FROM generate_series(1, 10000) g",
    )
    .unwrap();
    let count = |s: &mut Client| -> (i64, i64) {
        let r = s
            .query_one(
                "SELECT analyze_count, n_mod_since_analyze FROM memfdw.stat_user_tables WHERE relname = 'm'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let wait_for = |s: &mut Client, n: i64| {
        let t = Instant::now();
        while count(s).0 < n {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no automatic ANALYZE: {:?}",
                count(s)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&mut s, 1);
    assert_eq!(count(&mut s), (1, 0));
    // pg_statistic and the index statistics are filled, without a manual ANALYZE.
    assert_eq!(
        one::<i64>(
            &mut s,
            "SELECT count(*) FROM pg_stats WHERE tablename = 'm'"
        ),
        3
    );
    assert_eq!(distinct(&mut s, "m_a", 1), 3);
    assert!(one::<String>(&mut s, "SELECT current_setting('memfdw.autoanalyze')") == "on");

    // A few changes are below the threshold (50 + 10% of the rows): no ANALYZE.
    s.batch_execute("UPDATE m SET pad = 'y' WHERE b <= 100")
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&mut s), (1, 100));
    // Enough changes are.
    s.batch_execute("DELETE FROM m WHERE b <= 2000").unwrap();
    wait_for(&mut s, 2);
    // A load counts its rows as changes.
    s.batch_execute("SELECT memfdw.unload('m')").unwrap();
    s.batch_execute("SELECT memfdw.load('m')").unwrap();
    wait_for(&mut s, 3);
    assert_eq!(one::<i64>(&mut s, "SELECT count(*) FROM m"), 8000);
}
