//! pg_dump and pg_restore carry a memory table's keys and indexes (its `indexes`
//! option): plain and custom format, `pg_restore --jobs`, `--section`, `-t`, and a
//! dump without the rows. The option follows CREATE/DROP INDEX and RENAME COLUMN,
//! rolls back with them, and users cannot set it by hand.

use memfdw_e2e::{sqlstate, Cluster};
use postgres::Client;

const TABLES: &str = "\
    CREATE EXTENSION memfdw; \
    CREATE FOREIGN TABLE acc (id int PRIMARY KEY, owner text, branch int, note text, \
        UNIQUE (owner, branch)) SERVER memfdw; \
    CREATE INDEX acc_branch ON acc (branch); \
    CREATE FOREIGN TABLE \"Mixed Case\" (\"Key\" int PRIMARY KEY, v text) SERVER memfdw; \
    INSERT INTO acc SELECT g, 'o' || g, g % 7, 'n' FROM generate_series(1, 5000) g; \
    INSERT INTO \"Mixed Case\" VALUES (1, 'a'), (2, 'b'); \
    ALTER FOREIGN TABLE acc RENAME COLUMN note TO remark";

fn indexes(s: &mut Client) -> Vec<String> {
    s.query(
        "SELECT table_name || '.' || index_name || ' ' || columns FROM memfdw.indexes() ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A restored database has the tables' rows (if `rows`), keys that refuse duplicates,
/// and indexes the planner uses.
fn check_restored(c: &Cluster, db: &str, want: &[String], rows: bool) {
    let mut s = c.connect_as("postgres", db);
    assert_eq!(indexes(&mut s), want, "indexes of {db}");
    let n: i64 = s.query_one("SELECT count(*) FROM acc", &[]).unwrap().get(0);
    assert_eq!(n, if rows { 5000 } else { 0 }, "rows of {db}");
    if !rows {
        s.batch_execute(
            "INSERT INTO acc VALUES (1, 'o1', 1, 'x'); INSERT INTO \"Mixed Case\" VALUES (1, 'a')",
        )
        .unwrap();
    }
    let e = s
        .batch_execute("INSERT INTO acc VALUES (1, 'new', 99, 'x')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{db}: {e}");
    let e = s
        .batch_execute("INSERT INTO acc VALUES (9999, 'o1', 1, 'x')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{db}: {e}");
    if rows {
        let plan: Vec<String> = s
            .query("EXPLAIN SELECT * FROM acc WHERE branch = 3", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(plan.join("\n").contains("acc_branch"), "{db}: {plan:?}");
    }
    let e = s
        .batch_execute("INSERT INTO \"Mixed Case\" VALUES (1, 'dup')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{db}: {e}");
}

/// Runs an SQL file with psql (stopping at the first error).
fn psql_file(c: &Cluster, db: &str, file: &str) {
    c.run_tool(
        "psql",
        &["-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", db, "-f", file],
    )
    .unwrap_or_else(|e| panic!("psql -f {file}: {e}"));
}

#[test]
fn dumps_carry_keys_and_indexes_and_every_restore_rebuilds_them() {
    let c = Cluster::start();
    c.connect().batch_execute("CREATE DATABASE src").unwrap();
    let mut s = c.connect_as("postgres", "src");
    s.batch_execute(TABLES).unwrap();
    let want = indexes(&mut s);
    assert_eq!(
        want,
        [
            "Mixed Case.Mixed Case_pkey Key",
            "acc.acc_branch branch",
            "acc.acc_owner_branch_key owner, branch",
            "acc.acc_pkey id",
        ]
    );
    // The option is what \d shows as "FDW options".
    let opt: String = s
        .query_one(
            "SELECT array_to_string(ftoptions, ',') FROM pg_foreign_table WHERE ftrelid = 'acc'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        opt,
        "indexes=primary acc_pkey (id); unique acc_owner_branch_key (owner, branch); index acc_branch (branch)"
    );

    let dir = c.dir.to_str().unwrap().to_string();
    let plain = format!("{dir}/src.sql");
    let custom = format!("{dir}/src.dump");
    c.run_tool(
        "pg_dump",
        &["--include-foreign-data=memfdw", "-f", &plain, "src"],
    )
    .unwrap();
    c.run_tool(
        "pg_dump",
        &["--include-foreign-data=memfdw", "-Fc", "-f", &custom, "src"],
    )
    .unwrap();
    for db in ["r_plain", "r_jobs", "r_sections", "r_table", "r_norows"] {
        c.connect()
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
    }
    psql_file(&c, "r_plain", &plain);
    check_restored(&c, "r_plain", &want, true);

    c.run_tool(
        "pg_restore",
        &["--exit-on-error", "--jobs", "2", "-d", "r_jobs", &custom],
    )
    .unwrap();
    check_restored(&c, "r_jobs", &want, true);

    for section in ["pre-data", "data", "post-data"] {
        c.run_tool(
            "pg_restore",
            &[
                "--exit-on-error",
                "--section",
                section,
                "-d",
                "r_sections",
                &custom,
            ],
        )
        .unwrap();
    }
    check_restored(&c, "r_sections", &want, true);

    // One table: the extension (and its server) must be there already, as for any
    // table of an extension's type or server.
    c.connect_as("postgres", "r_table")
        .batch_execute(
            "CREATE EXTENSION memfdw; \
             CREATE FOREIGN TABLE \"Mixed Case\" (\"Key\" int PRIMARY KEY, v text) SERVER memfdw; \
             INSERT INTO \"Mixed Case\" VALUES (1, 'a')",
        )
        .unwrap();
    c.run_tool(
        "pg_restore",
        &["--exit-on-error", "-t", "acc", "-d", "r_table", &custom],
    )
    .unwrap();
    check_restored(&c, "r_table", &want, true);

    // Without --include-foreign-data: the tables and their keys, no rows.
    let schema_only = c.run_tool("pg_dump", &["src"]).unwrap();
    assert!(
        schema_only.contains("OPTIONS (\n    indexes 'primary acc_pkey (id)"),
        "{schema_only}"
    );
    let file = format!("{dir}/norows.sql");
    std::fs::write(&file, schema_only).unwrap();
    psql_file(&c, "r_norows", &file);
    check_restored(&c, "r_norows", &want, false);
}

#[test]
fn the_indexes_option_follows_ddl_and_cannot_be_set_by_hand() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(TABLES).unwrap();
    let opt = |s: &mut Client| -> Option<String> {
        s.query_one(
            "SELECT array_to_string(ftoptions, ',') FROM pg_foreign_table WHERE ftrelid = 'acc'::regclass",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = opt(&mut s).unwrap();
    s.batch_execute("BEGIN; CREATE INDEX acc_remark ON acc (remark)")
        .unwrap();
    assert!(opt(&mut s)
        .unwrap()
        .ends_with("; index acc_remark (remark)"));
    s.batch_execute("ROLLBACK").unwrap();
    assert_eq!(opt(&mut s).unwrap(), before, "rolled back with the index");
    s.batch_execute("DROP INDEX acc_branch; ALTER FOREIGN TABLE acc RENAME COLUMN owner TO holder")
        .unwrap();
    assert_eq!(
        opt(&mut s).unwrap(),
        "indexes=primary acc_pkey (id); unique acc_owner_branch_key (holder, branch)"
    );
    for sql in [
        "ALTER FOREIGN TABLE acc OPTIONS (SET indexes 'index x (id)')",
        "ALTER FOREIGN TABLE acc OPTIONS (DROP indexes)",
    ] {
        let e = s.batch_execute(sql).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e}");
    }
    for (sql, state) in [
        (
            "CREATE FOREIGN TABLE b1 (a int) SERVER memfdw OPTIONS (indexes 'clustered x (a)')",
            "HV00A",
        ),
        (
            "CREATE FOREIGN TABLE b2 (a int) SERVER memfdw OPTIONS (indexes 'index x (nosuch)')",
            "42703",
        ),
        (
            "CREATE FOREIGN TABLE b3 (a int) SERVER memfdw OPTIONS (other 'x')",
            "HV00D",
        ),
    ] {
        let e = s.batch_execute(sql).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some(state), "{sql}: {e}");
    }
    // Two CREATE INDEX on one table wait for each other: the option never names
    // another transaction's index that then rolls back.
    s.batch_execute("BEGIN; CREATE INDEX acc_id2 ON acc (id)")
        .unwrap();
    let conn = c.conn_str();
    let other = std::thread::spawn(move || {
        let mut o = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        o.batch_execute("CREATE INDEX acc_branch2 ON acc (branch)")
            .unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.batch_execute("ROLLBACK").unwrap();
    other.join().unwrap();
    assert_eq!(
        opt(&mut s).unwrap(),
        "indexes=primary acc_pkey (id); unique acc_owner_branch_key (holder, branch); index acc_branch2 (branch)"
    );
    // A column renamed through a partitioned parent is renamed in the partition's option.
    s.batch_execute(
        "CREATE TABLE p (k int, v int) PARTITION BY LIST (k); \
         CREATE FOREIGN TABLE p1 PARTITION OF p FOR VALUES IN (1) SERVER memfdw; \
         CREATE INDEX p1_v ON p1 (v); \
         ALTER TABLE p RENAME COLUMN v TO w",
    )
    .unwrap();
    let p1: String = s
        .query_one(
            "SELECT array_to_string(ftoptions, ',') FROM pg_foreign_table WHERE ftrelid = 'p1'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(p1, "indexes=index p1_v (w)");
    // Written by hand in CREATE FOREIGN TABLE, as a restore does.
    s.batch_execute(
        "CREATE FOREIGN TABLE b4 (a int NOT NULL, b text) SERVER memfdw \
         OPTIONS (indexes 'primary b4_pkey (a); index \"B idx\" (b)'); \
         INSERT INTO b4 VALUES (1, 'x')",
    )
    .unwrap();
    let e = s
        .batch_execute("INSERT INTO b4 VALUES (1, 'y')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"));
    let n: i64 = s
        .query_one(
            "SELECT count(*) FROM memfdw.indexes() WHERE index_name = 'B idx'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
