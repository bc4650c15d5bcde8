//! Parallel query over memory tables: full scans run in parallel workers (Parallel
//! Foreign Scan under Gather) and return what the same queries return on a heap
//! table — aggregates, groups, filters, joins with heap tables, rescans — at the
//! leader's snapshot, under REPEATABLE READ and SERIALIZABLE; a transaction that
//! changed the table reads it without workers, and a plan made before the change
//! refuses rather than miss the change.

use memfdw_e2e::{plan, text_rows, Cluster};
use postgres::Client;

/// Parallel plans whatever the table size; the workers read every row (the leader
/// only gathers).
/// (Aggregates the engine would compute itself in one pass, see `aggregates.rs`, are
/// left to PostgreSQL here: these tests are about the scans under them.)
const FORCE_PARALLEL: &str = "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
     SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2; \
     SET parallel_leader_participation = off; SET memfdw.enable_aggregate_pushdown = off";

/// `q` with `{t}` replaced by the memory table and by the heap table gives the same
/// rows, and the memory table's plan has a parallel scan of it when `parallel`.
fn same(s: &mut Client, q: &str, parallel: bool) {
    let mq = q.replace("{t}", "m");
    let hq = q.replace("{t}", "h");
    if parallel {
        let p = plan(s, &mq);
        assert!(p.contains("Parallel Foreign Scan on m"), "{mq}:\n{p}");
    }
    assert_eq!(text_rows(s, &mq), text_rows(s, &hq), "{mq}");
}

/// A new session, with memfdw, a memory table `m` and a heap table `h` holding the
/// same `rows` rows `(id, id % 97, 'v' || id)`.
fn twin_tables(c: &Cluster, rows: u32) -> Client {
    let mut s = c.connect();
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, g int, v text) SERVER memfdw; \
         CREATE TABLE h (id int PRIMARY KEY, g int, v text); \
         INSERT INTO m SELECT i, i % 97, 'v' || i FROM generate_series(1, {rows}) i; \
         INSERT INTO h SELECT * FROM m; ANALYZE h"
    ))
    .unwrap();
    s
}

#[test]
fn parallel_scans_return_what_heap_returns() {
    let c = Cluster::start();
    let mut s = twin_tables(&c, 60000);
    s.batch_execute(
        "DELETE FROM m WHERE id BETWEEN 10000 AND 14000; \
         DELETE FROM h WHERE id BETWEEN 10000 AND 14000; \
         ANALYZE h",
    )
    .unwrap();
    s.batch_execute(FORCE_PARALLEL).unwrap();

    // Workers really run and read their share.
    let analyzed = s
        .query(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT count(*) FROM m",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(analyzed.contains("Workers Launched: 2"), "{analyzed}");

    let queries = [
        "SELECT count(*), sum(id), sum(g), max(v) FROM {t}",
        "SELECT g, count(*), sum(id) FROM {t} GROUP BY g ORDER BY g",
        "SELECT count(*) FROM {t} WHERE v LIKE 'v1%' AND g < 50",
    ];
    for q in queries {
        same(&mut s, q, true);
    }
    // (An ordered index scan wins here; the rows must agree all the same.)
    same(
        &mut s,
        "SELECT id, v FROM {t} WHERE g = 3 ORDER BY id DESC LIMIT 20",
        false,
    );
    // A join with a heap table: the memory table's scan is parallel or on the
    // leader's side, never a non-shared scan in a worker.
    same(
        &mut s,
        "SELECT count(*), sum(x.id) FROM {t} x JOIN h y ON x.id = y.id AND y.g < 10",
        false,
    );
    // Rescans of a Gather inside a correlated subquery.
    same(
        &mut s,
        "SELECT k, (SELECT count(*) FROM {t} WHERE g = k) FROM generate_series(1, 4) k",
        false,
    );

    // The transaction's own writes: an UPDATE, a DELETE and an INSERT are seen by
    // the query, which is then planned without workers (they read committed rows).
    let q = "SELECT count(*), sum(g), sum(id) FROM {t}";
    let mq = q.replace("{t}", "m");
    s.batch_execute(&format!("PREPARE cached AS {mq}")).unwrap();
    // (Planned now, once: a statement without parameters keeps its generic plan.)
    let committed = text_rows(&mut s, "EXECUTE cached");
    s.batch_execute("BEGIN").unwrap();
    for t in ["m", "h"] {
        s.batch_execute(&format!(
            "UPDATE {t} SET g = g + 1000 WHERE id % 10 = 0; DELETE FROM {t} WHERE id % 7 = 0; \
             INSERT INTO {t} SELECT i, 5, 'new' FROM generate_series(70000, 70100) i"
        ))
        .unwrap();
    }
    assert!(!plan(&mut s, &mq).contains("Parallel"), "{mq}");
    same(&mut s, q, false);
    // A plan made before the writes: its workers refuse (0A000) rather than return
    // committed rows only.
    s.batch_execute("SAVEPOINT p").unwrap();
    let e = s.batch_execute("EXECUTE cached").unwrap_err();
    assert_eq!(memfdw_e2e::sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    s.batch_execute("ROLLBACK TO p").unwrap();
    s.batch_execute("ROLLBACK").unwrap();
    same(&mut s, q, true);
    assert_eq!(text_rows(&mut s, "EXECUTE cached"), committed);
    assert_eq!(text_rows(&mut s, &mq), committed);

    // TRUNCATE or ALTER in the transaction: no workers either.
    s.batch_execute("BEGIN; TRUNCATE m; TRUNCATE h").unwrap();
    s.batch_execute(
        "INSERT INTO m VALUES (1, 1, 'a'), (2, 2, 'b'); INSERT INTO h VALUES (1, 1, 'a'), (2, 2, 'b')",
    )
    .unwrap();
    same(&mut s, "SELECT count(*), sum(g) FROM {t}", false);
    s.batch_execute("ROLLBACK").unwrap();
    s.batch_execute(
        "BEGIN; ALTER FOREIGN TABLE m ADD COLUMN c int DEFAULT 7; ALTER TABLE h ADD COLUMN c int DEFAULT 7",
    )
    .unwrap();
    same(&mut s, "SELECT count(*), sum(c), sum(id) FROM {t}", false);
    s.batch_execute("ROLLBACK").unwrap();

    // REPEATABLE READ: commits after the snapshot are not seen by the workers either.
    let mut other = c.connect();
    for iso in ["REPEATABLE READ", "SERIALIZABLE"] {
        s.batch_execute(&format!("BEGIN ISOLATION LEVEL {iso}"))
            .unwrap();
        let before = text_rows(&mut s, "SELECT count(*), sum(g), sum(id) FROM m");
        other
            .batch_execute(
                "UPDATE m SET g = g + 1 WHERE id % 3 = 0; DELETE FROM m WHERE id % 11 = 0; \
                 INSERT INTO m SELECT i, 1, 'x' FROM generate_series(80000, 90000) i; \
                 UPDATE h SET g = g + 1 WHERE id % 3 = 0; DELETE FROM h WHERE id % 11 = 0; \
                 INSERT INTO h SELECT i, 1, 'x' FROM generate_series(80000, 90000) i",
            )
            .unwrap();
        assert!(plan(&mut s, "SELECT count(*), sum(g), sum(id) FROM m")
            .contains("Parallel Foreign Scan"));
        assert_eq!(
            text_rows(&mut s, "SELECT count(*), sum(g), sum(id) FROM m"),
            before,
            "{iso}"
        );
        s.batch_execute("COMMIT").unwrap();
        same(&mut s, "SELECT count(*), sum(g), sum(id) FROM {t}", true);
        other
            .batch_execute("DELETE FROM m WHERE id >= 80000; DELETE FROM h WHERE id >= 80000")
            .unwrap();
    }

    // A function marked PARALLEL SAFE that reads a memory table, run by workers:
    // a clear 0A000 (mark it PARALLEL RESTRICTED), never a wrong count.
    s.batch_execute(
        "CREATE FUNCTION in_group(k int) RETURNS bigint LANGUAGE plpgsql PARALLEL SAFE \
         AS $$ BEGIN RETURN (SELECT count(*) FROM m WHERE g = k); END $$",
    )
    .unwrap();
    let q = "SELECT sum(in_group(g)) FROM h WHERE g < 1";
    let e = s.batch_execute(q).unwrap_err();
    assert_eq!(memfdw_e2e::sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    s.batch_execute("ALTER FUNCTION in_group(int) PARALLEL RESTRICTED")
        .unwrap();
    let restricted = text_rows(&mut s, q);
    s.batch_execute("SET max_parallel_workers_per_gather = 0")
        .unwrap();
    assert_eq!(text_rows(&mut s, q), restricted);
    s.batch_execute(FORCE_PARALLEL).unwrap();

    // Queries that lock rows are not parallel.
    let p = plan(&mut s, "SELECT * FROM m WHERE g = 1 FOR UPDATE");
    assert!(!p.contains("Parallel"), "{p}");
}

/// A parallel worker holds its leader's plans and plans queries of its own (here a
/// function the scan's filter calls, which reads the same table by key): each scan
/// runs its own plan (plan serials name the process that planned them, see
/// `scan_plans`), as on a heap table. The parallel query is the first plan of a new
/// session, so that the leader's plan and the worker's own first plan have the same
/// number.
#[test]
fn a_function_called_in_a_parallel_worker_reads_with_its_own_plan() {
    let c = Cluster::start();
    let mut s = twin_tables(&c, 20000);
    s.batch_execute(
        "CREATE FUNCTION mv(k int) RETURNS text LANGUAGE plpgsql STABLE PARALLEL SAFE \
           AS $$ DECLARE r text; BEGIN SELECT v INTO r FROM m WHERE id = k; RETURN r; END $$; \
         CREATE FUNCTION hv(k int) RETURNS text LANGUAGE plpgsql STABLE PARALLEL SAFE \
           AS $$ DECLARE r text; BEGIN SELECT v INTO r FROM h WHERE id = k; RETURN r; END $$",
    )
    .unwrap();
    drop(s);
    for (q, want) in [
        ("SELECT count(*) FROM {t} WHERE {f}(id) = v", "20000"),
        (
            "SELECT count(*) FROM {t} WHERE {f}(id) = v AND g < 10",
            "2069",
        ),
    ] {
        let mut fresh = c.connect();
        fresh.batch_execute(FORCE_PARALLEL).unwrap();
        let mq = q.replace("{t}", "m").replace("{f}", "mv");
        let hq = q.replace("{t}", "h").replace("{f}", "hv");
        assert_eq!(text_rows(&mut fresh, &mq), vec![want.to_string()], "{mq}");
        assert_eq!(text_rows(&mut fresh, &hq), vec![want.to_string()], "{hq}");
        let p = plan(&mut fresh, &mq);
        assert!(p.contains("Parallel Foreign Scan on m"), "{mq}:\n{p}");
    }
}
