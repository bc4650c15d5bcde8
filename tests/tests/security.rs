//! Privileges on memory tables as PostgreSQL applies them to heap tables: index DDL
//! needs ownership and schema privileges (checked before any lock), the `memfdw.*`
//! functions show only what the caller may see and `checkpoint()` is not for PUBLIC,
//! and column options get the option validator's error.

use memfdw_e2e::{sqlstate, Cluster};

fn err_state(r: Result<impl Sized, postgres::Error>) -> String {
    match r {
        Ok(_) => panic!("statement succeeded"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| panic!("no SQLSTATE: {e}")),
    }
}

#[test]
fn index_ddl_needs_ownership_and_schema_privileges_checked_before_any_lock() {
    let c = Cluster::start();
    let mut su = c.connect();
    su.batch_execute(
        "CREATE EXTENSION memfdw;
         CREATE ROLE owner_r LOGIN; CREATE ROLE member_r LOGIN IN ROLE owner_r;
         CREATE ROLE intruder LOGIN;
         CREATE SCHEMA s AUTHORIZATION owner_r;
         GRANT USAGE ON SCHEMA s TO intruder;
         GRANT USAGE ON FOREIGN SERVER memfdw TO owner_r;
         SET ROLE owner_r;
         CREATE FOREIGN TABLE s.t (id int PRIMARY KEY, v text) SERVER memfdw;
         INSERT INTO s.t VALUES (1, 'secret'), (2, 'secret');
         RESET ROLE;",
    )
    .unwrap();
    let mut owner = c.connect_as("owner_r", "postgres");
    let mut bad = c.connect_as("intruder", "postgres");
    bad.batch_execute("SET lock_timeout = '3s'").unwrap();

    // The owner holds a lock that every index DDL would wait for: the intruder must
    // get 42501 at once, not a lock wait (55P03).
    // (LOCK TABLE refuses foreign tables; an open DROP INDEX holds the table's
    // AccessExclusiveLock.)
    owner
        .batch_execute("CREATE INDEX t_side ON s.t (v); BEGIN; DROP INDEX s.t_side")
        .unwrap();
    assert_eq!(
        err_state(bad.batch_execute("CREATE INDEX ON s.t (v)")),
        "42501"
    );
    let e = bad
        .batch_execute("CREATE UNIQUE INDEX t_v ON s.t (v)")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    assert!(
        !format!("{e:?}").contains("secret"),
        "no row values in the error: {e:?}"
    );
    assert_eq!(err_state(bad.batch_execute("DROP INDEX s.t_pkey")), "42501");
    assert_eq!(
        err_state(bad.batch_execute("ALTER INDEX s.t_pkey RENAME TO t_mine")),
        "42501"
    );
    owner.batch_execute("ROLLBACK").unwrap();
    // Nothing was created or dropped: the key still holds.
    assert_eq!(
        err_state(su.batch_execute("INSERT INTO s.t VALUES (1, 'dup')")),
        "23505"
    );
    let n: i64 = su
        .query_one(
            "SELECT count(*) FROM memfdw.indexes() WHERE table_name = 't'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // Without USAGE on the schema, the name cannot even be looked up.
    su.batch_execute("REVOKE USAGE ON SCHEMA s FROM intruder")
        .unwrap();
    assert_eq!(err_state(bad.batch_execute("DROP INDEX s.t_pkey")), "42501");
    assert_eq!(
        err_state(bad.batch_execute("CREATE INDEX ON s.t (v)")),
        "42501"
    );

    // A member of the owning role may; one without CREATE on the schema may not name
    // an index there.
    let mut member = c.connect_as("member_r", "postgres");
    member
        .batch_execute("CREATE INDEX t_v_idx ON s.t (v)")
        .unwrap();
    member.batch_execute("DROP INDEX s.t_v_idx").unwrap();
    su.batch_execute(
        "CREATE SCHEMA locked; GRANT USAGE ON SCHEMA locked TO owner_r;
         CREATE FOREIGN TABLE locked.u (id int, v text) SERVER memfdw;
         ALTER FOREIGN TABLE locked.u OWNER TO owner_r",
    )
    .unwrap();
    assert_eq!(
        err_state(owner.batch_execute("CREATE INDEX ON locked.u (v)")),
        "42501"
    );
    su.batch_execute("GRANT CREATE ON SCHEMA locked TO owner_r")
        .unwrap();
    owner.batch_execute("CREATE INDEX ON locked.u (v)").unwrap();
    // The schema's owner may drop an index of a table it does not own (as for heap
    // tables); others may not.
    su.batch_execute("CREATE ROLE schema_owner LOGIN; ALTER SCHEMA locked OWNER TO schema_owner")
        .unwrap();
    let mut so = c.connect_as("schema_owner", "postgres");
    assert_eq!(
        err_state(bad.batch_execute("DROP INDEX locked.u_v_idx")),
        "42501"
    );
    so.batch_execute("DROP INDEX locked.u_v_idx").unwrap();
}

#[test]
fn memfdw_functions_show_only_what_the_caller_may_see() {
    let c = Cluster::start();
    let mut su = c.connect();
    su.batch_execute(
        "CREATE EXTENSION memfdw;
         CREATE ROLE watcher LOGIN;
         GRANT USAGE ON SCHEMA memfdw TO watcher;
         CREATE FOREIGN TABLE hidden (id int PRIMARY KEY) SERVER memfdw;
         CREATE FOREIGN TABLE shown (id int PRIMARY KEY) SERVER memfdw;
         GRANT SELECT ON shown TO watcher",
    )
    .unwrap();
    su.batch_execute("CREATE DATABASE other").unwrap();
    let mut other = c.connect_as("postgres", "other");
    other
        .batch_execute(
            "CREATE EXTENSION memfdw;
             CREATE FOREIGN TABLE elsewhere (id int PRIMARY KEY) SERVER memfdw",
        )
        .unwrap();
    let names = |s: &mut postgres::Client, f: &str| -> Vec<String> {
        s.query(
            &format!("SELECT table_name FROM memfdw.{f}() ORDER BY 1"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    // The superuser sees this database's tables, not another database's.
    assert_eq!(names(&mut su, "tables"), vec!["hidden", "shown"]);
    assert_eq!(names(&mut su, "indexes"), vec!["hidden", "shown"]);
    assert_eq!(names(&mut other, "tables"), vec!["elsewhere"]);
    // A role sees the tables it holds some privilege on.
    let mut w = c.connect_as("watcher", "postgres");
    assert_eq!(names(&mut w, "tables"), vec!["shown"]);
    assert_eq!(names(&mut w, "indexes"), vec!["shown"]);
    // checkpoint() is an action: not for PUBLIC, for pg_checkpoint members.
    assert_eq!(
        err_state(w.query("SELECT * FROM memfdw.checkpoint()", &[])),
        "42501"
    );
    su.batch_execute("GRANT pg_checkpoint TO watcher").unwrap();
    w.query("SELECT * FROM memfdw.checkpoint()", &[]).unwrap();
    // Server-wide figures stay readable.
    w.query("SELECT * FROM memfdw.memory()", &[]).unwrap();
}

#[test]
fn column_and_table_options_get_the_validators_error() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute("CREATE EXTENSION memfdw").unwrap();
    let e = s
        .batch_execute("CREATE FOREIGN TABLE o (a int OPTIONS (foo 'bar')) SERVER memfdw")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("HV00D"), "{e:?}");
    assert!(format!("{e:?}").contains("foo"), "names the option: {e:?}");
    // Nothing was created.
    assert_eq!(err_state(s.batch_execute("SELECT * FROM o")), "42P01");
    s.batch_execute("CREATE FOREIGN TABLE o (a int) SERVER memfdw")
        .unwrap();
    assert_eq!(
        err_state(s.batch_execute("ALTER FOREIGN TABLE o OPTIONS (ADD foo 'bar')")),
        "HV00D"
    );
    assert_eq!(
        err_state(s.batch_execute("ALTER FOREIGN TABLE o ALTER COLUMN a OPTIONS (ADD foo 'bar')")),
        "HV00D"
    );
    // What memfdw cannot do is refused.
    assert_eq!(
        err_state(s.batch_execute("ALTER FOREIGN TABLE o ADD UNIQUE (a) DEFERRABLE")),
        "0A000"
    );
}

#[test]
fn keys_on_nondeterministic_collations_are_refused() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw;
         CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    )
    .unwrap();
    // A heap table would treat 'abc' and 'ABC' as one key; memory tables refuse the key.
    let e = s
        .batch_execute("CREATE FOREIGN TABLE k (name text COLLATE ci PRIMARY KEY) SERVER memfdw")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e:?}");
    let msg = e
        .as_db_error()
        .expect("a server error")
        .message()
        .to_owned();
    assert!(msg.contains("\"name\"") && msg.contains("\"ci\""), "{msg}");
    assert_eq!(err_state(s.batch_execute("SELECT * FROM k")), "42P01");
    s.batch_execute("CREATE FOREIGN TABLE k (id int, name text COLLATE ci) SERVER memfdw")
        .unwrap();
    assert_eq!(
        err_state(s.batch_execute("CREATE UNIQUE INDEX ON k (name)")),
        "0A000"
    );
    assert_eq!(
        err_state(s.batch_execute("CREATE INDEX ON k (id, name)")),
        "0A000"
    );
    // Deterministic collations are fine.
    s.batch_execute(
        "CREATE FOREIGN TABLE d (name text COLLATE \"C\" PRIMARY KEY) SERVER memfdw;
         INSERT INTO d VALUES ('abc'), ('ABC')",
    )
    .unwrap();
}
