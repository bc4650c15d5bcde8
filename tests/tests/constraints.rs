//! NOT NULL, CHECK, unique and partition constraints are enforced on memory tables as
//! on heap tables: same SQLSTATE, message, failing row, and schema, table, column and
//! constraint fields, for INSERT, UPDATE and COPY; nothing of a failing statement is stored; a row an UPDATE would
//! move out of a memory partition is refused.

use memfdw_e2e::Cluster;
use postgres::error::DbError;
use postgres::Client;

fn db_error(s: &mut Client, sql: &str) -> DbError {
    let e = s.batch_execute(sql).expect_err(sql);
    e.as_db_error()
        .unwrap_or_else(|| panic!("{sql}: {e}"))
        .clone()
}

/// The parts of an error a client sees, with the table's name made neutral: SQLSTATE,
/// message, detail, and the schema, table, column and constraint fields.
type Seen = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn seen(e: &DbError, table: &str) -> Seen {
    let neutral = |s: &str| {
        s.replace(&format!("\"{table}\""), "\"T\"")
            .replace(&format!("\"{table}_"), "\"T_")
    };
    let name = |s: &str| {
        if s == table {
            "T".to_string()
        } else {
            s.replacen(&format!("{table}_"), "T_", 1)
        }
    };
    (
        e.code().code().to_string(),
        neutral(e.message()),
        e.detail().map(neutral).unwrap_or_default(),
        e.schema().map(str::to_string),
        e.table().map(name),
        e.column().map(str::to_string),
        e.constraint().map(name),
    )
}

#[test]
fn check_and_not_null_are_enforced_as_on_heap_tables() {
    let c = Cluster::start();
    let mut s = c.connect();
    let cols = "id int PRIMARY KEY, qty int CHECK (qty >= 0), name text NOT NULL, \
                CONSTRAINT name_len CHECK (length(name) < 10)";
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m ({cols}) SERVER memfdw; CREATE TABLE h ({cols}); \
         INSERT INTO m VALUES (1, 5, 'a'); INSERT INTO h VALUES (1, 5, 'a')"
    ))
    .unwrap();
    for sql in [
        "INSERT INTO TBL VALUES (1, 1, 'dup')",
        "INSERT INTO TBL VALUES (2, -1, 'b')",
        "INSERT INTO TBL VALUES (2, 1, NULL)",
        "INSERT INTO TBL VALUES (2, 1, 'much too long')",
        "INSERT INTO TBL VALUES (2, 1, 'ok'), (3, -3, 'bad')",
        "UPDATE TBL SET qty = qty - 10 WHERE id = 1",
        "UPDATE TBL SET name = NULL",
        "INSERT INTO TBL SELECT g, 10 - g, 'x' FROM generate_series(2, 20) g",
    ] {
        let em = db_error(&mut s, &sql.replace("TBL", "m"));
        let eh = db_error(&mut s, &sql.replace("TBL", "h"));
        assert_eq!(seen(&em, "m"), seen(&eh, "h"), "{sql}");
    }
    // COPY is checked too.
    let mut w = s.copy_in("COPY m FROM STDIN").unwrap();
    use std::io::Write;
    w.write_all(b"7\t1\tfine\n8\t-8\tbad\n").unwrap();
    let e = w.finish().unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{e}");
    // Nothing of the failed statements was stored: the planner may trust the checks.
    s.batch_execute("SET constraint_exclusion = on").unwrap();
    let rows: Vec<(i32, i32, String)> = s
        .query("SELECT id, qty, name FROM m ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows, [(1, 5, "a".to_string())]);
    let n: i64 = s
        .query_one("SELECT count(*) FROM m WHERE qty IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn a_memory_partition_keeps_its_partition_constraint() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE orders (id int, region text) PARTITION BY LIST (region); \
         CREATE FOREIGN TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu') SERVER memfdw; \
         CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us'); \
         INSERT INTO orders VALUES (1, 'eu'), (2, 'us')",
    )
    .unwrap();
    let e = db_error(&mut s, "INSERT INTO orders_eu VALUES (3, 'us')");
    assert_eq!(e.code().code(), "23514", "{e}");
    assert!(e.message().contains("partition constraint"), "{e}");
    // Moving a row out of a memory partition is refused, and the row stays.
    let e = db_error(&mut s, "UPDATE orders SET region = 'us' WHERE id = 1");
    assert_eq!(e.code().code(), "23514", "{e}");
    let rows: Vec<(i32, String)> = s
        .query("SELECT id, region FROM orders ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, "eu".to_string()), (2, "us".to_string())]);
    let n: i64 = s
        .query_one("SELECT count(*) FROM orders WHERE region = 'eu'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// INSERT ... SELECT and multi-row VALUES go through batch inserts; row counts, unique
/// violations in the middle of a batch (nothing of the statement stored), CHECK
/// failures, RETURNING, ON CONFLICT DO NOTHING and routing into a memory partition give
/// what a heap table gives.
#[test]
fn batched_inserts_count_and_fail_like_heap() {
    let c = Cluster::start();
    let mut s = c.connect();
    let cols = "id int PRIMARY KEY, v int CHECK (v >= 0)";
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; CREATE FOREIGN TABLE m ({cols}) SERVER memfdw; \
         CREATE TABLE h ({cols})"
    ))
    .unwrap();
    for t in ["m", "h"] {
        let n = s
            .execute(
                &format!("INSERT INTO {t} SELECT g, g FROM generate_series(1, 1000) g"),
                &[],
            )
            .unwrap();
        assert_eq!(n, 1000);
        let n = s
            .execute(
                &format!("INSERT INTO {t} VALUES (2001, 1), (2002, 2), (2003, 3)"),
                &[],
            )
            .unwrap();
        assert_eq!(n, 3);
    }
    for sql in [
        // A duplicate in the middle of the third batch.
        "INSERT INTO TBL SELECT g, g FROM generate_series(3001, 3250) g \
         UNION ALL SELECT 500, 0",
        "INSERT INTO TBL SELECT g, 150 - g FROM generate_series(4001, 4300) g",
    ] {
        let em = db_error(&mut s, &sql.replace("TBL", "m"));
        let eh = db_error(&mut s, &sql.replace("TBL", "h"));
        assert_eq!(em.code(), eh.code(), "{sql}");
    }
    let count = |s: &mut Client, t: &str| -> i64 {
        s.query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(
        count(&mut s, "m"),
        1003,
        "nothing of a failed statement stays"
    );
    assert_eq!(count(&mut s, "m"), count(&mut s, "h"));
    // RETURNING and ON CONFLICT DO NOTHING (row by row).
    let r = s
        .query(
            "INSERT INTO m SELECT g, g FROM generate_series(5001, 5150) g RETURNING id",
            &[],
        )
        .unwrap();
    assert_eq!(r.len(), 150);
    let n = s
        .execute(
            "INSERT INTO m SELECT g, g FROM generate_series(4990, 5010) g ON CONFLICT DO NOTHING",
            &[],
        )
        .unwrap();
    assert_eq!(n, 11, "4990..5000 inserted, 5001..5010 skipped");
    // Routed into a memory partition.
    s.batch_execute(
        "CREATE TABLE p (id int, v int) PARTITION BY RANGE (id); \
         CREATE FOREIGN TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (1000) SERVER memfdw; \
         CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (1000) TO (2000)",
    )
    .unwrap();
    let n = s
        .execute(
            "INSERT INTO p SELECT g, g FROM generate_series(0, 1999) g",
            &[],
        )
        .unwrap();
    assert_eq!(n, 2000);
    assert_eq!(count(&mut s, "p1"), 1000);
}

/// The schema and table fields follow renames of the schema and the table (memory
/// tables remember the last table's names between statements).
#[test]
fn error_fields_follow_schema_and_table_renames() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; CREATE SCHEMA s1; \
         CREATE FOREIGN TABLE s1.m (id int PRIMARY KEY) SERVER memfdw; \
         CREATE TABLE s1.h (id int PRIMARY KEY); \
         INSERT INTO s1.m VALUES (1); INSERT INTO s1.h VALUES (1)",
    )
    .unwrap();
    let fields = |s: &mut Client, sql: &str| {
        let e = db_error(s, sql);
        (
            e.code().code().to_string(),
            e.schema().map(str::to_string),
            e.table().map(str::to_string),
        )
    };
    let dup = |schema: &str, table: &str| format!("INSERT INTO {schema}.{table} VALUES (1)");
    let sql = dup("s1", "m");
    assert_eq!(
        fields(&mut s, &sql),
        ("23505".into(), Some("s1".into()), Some("m".into()))
    );
    s.batch_execute("ALTER SCHEMA s1 RENAME TO s2").unwrap();
    let sql = dup("s2", "m");
    assert_eq!(
        fields(&mut s, &sql),
        ("23505".into(), Some("s2".into()), Some("m".into()))
    );
    assert_eq!(fields(&mut s, &dup("s2", "h")).1, Some("s2".into()));
    s.batch_execute("ALTER FOREIGN TABLE s2.m RENAME TO m2")
        .unwrap();
    let sql = dup("s2", "m2");
    assert_eq!(
        fields(&mut s, &sql),
        ("23505".into(), Some("s2".into()), Some("m2".into()))
    );
}
