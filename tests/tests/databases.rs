//! Databases: one copied from a template gets its own copies of the template's memory
//! tables (rows, keys, indexes), durable across a crash, and independent of the
//! template from then on; dropping either leaves the other.

use memfdw_e2e::{sqlstate, Cluster};
use std::time::Duration;

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_database_copied_from_a_template_gets_its_own_memory_tables() {
    let c = Cluster::start();
    let mut su = c.connect();
    su.batch_execute("CREATE DATABASE tmpl").unwrap();
    {
        let mut t = c.connect_as("postgres", "tmpl");
        t.batch_execute(
            "CREATE EXTENSION memfdw;
             CREATE FOREIGN TABLE acc (id int PRIMARY KEY, owner text, bal int) SERVER memfdw;
             CREATE INDEX acc_owner ON acc (owner);
             INSERT INTO acc SELECT g, 'o' || g % 10, 100 FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    } // no session may stay in a template while it is copied
    su.batch_execute("CREATE DATABASE copy TEMPLATE tmpl")
        .unwrap();
    let mut t = c.connect_as("postgres", "tmpl");
    let mut k = c.connect_as("postgres", "copy");
    assert_eq!(count(&mut k, "SELECT count(*) FROM acc"), 5000);
    assert_eq!(count(&mut k, "SELECT sum(bal)::bigint FROM acc"), 500_000);
    assert_eq!(
        count(&mut k, "SELECT count(*) FROM memfdw.indexes()"),
        2,
        "the primary key and acc_owner"
    );
    // Writes in the copy stay there; its key is its own.
    k.batch_execute(
        "UPDATE acc SET bal = 0 WHERE id <= 100; INSERT INTO acc VALUES (6000, 'new', 1)",
    )
    .unwrap();
    let e = k
        .batch_execute("INSERT INTO acc VALUES (1, 'dup', 1)")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"));
    assert_eq!(count(&mut t, "SELECT count(*) FROM acc"), 5000);
    assert_eq!(count(&mut t, "SELECT sum(bal)::bigint FROM acc"), 500_000);
    t.batch_execute("DELETE FROM acc WHERE id > 4000").unwrap();
    assert_eq!(count(&mut k, "SELECT count(*) FROM acc"), 5001);

    // Both survive a crash as they were.
    drop((t, k));
    c.kill9();
    c.restart();
    let mut t = c.connect_retry(Duration::from_secs(60));
    drop(t);
    t = c.connect_as("postgres", "tmpl");
    let mut k = c.connect_as("postgres", "copy");
    assert_eq!(count(&mut t, "SELECT count(*) FROM acc"), 4000);
    assert_eq!(count(&mut t, "SELECT sum(bal)::bigint FROM acc"), 400_000);
    assert_eq!(count(&mut k, "SELECT count(*) FROM acc"), 5001);
    assert_eq!(count(&mut k, "SELECT sum(bal)::bigint FROM acc"), 490_001);

    // Dropping the table in the copy, then the copy itself, leaves the template's.
    k.batch_execute("DROP FOREIGN TABLE acc").unwrap();
    drop(k);
    su = c.connect();
    su.batch_execute("DROP DATABASE copy").unwrap();
    assert_eq!(count(&mut t, "SELECT count(*) FROM acc"), 4000);
    t.batch_execute("INSERT INTO acc VALUES (9000, 'x', 1)")
        .unwrap();
    // A second copy starts from the template as it is now.
    drop(t);
    su.batch_execute("CREATE DATABASE copy2 TEMPLATE tmpl")
        .unwrap();
    let mut k2 = c.connect_as("postgres", "copy2");
    assert_eq!(count(&mut k2, "SELECT count(*) FROM acc"), 4001);
}
