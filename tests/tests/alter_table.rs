//! Schema changes on populated memory tables, side by side with heap tables: ADD/DROP
//! COLUMN, SET/DROP DEFAULT, SET/DROP NOT NULL, ALTER COLUMN TYPE (with and without
//! USING), ADD/DROP PRIMARY KEY and UNIQUE, CHECK constraints; the same rows and the
//! same errors as heap; transactional (ROLLBACK, savepoints) and durable (kill -9
//! with the change committed, or in flight); through a partitioned parent; only by the
//! owner. Also: column types of every common kind stored as heap stores them.

use memfdw_e2e::{sqlstate, Cluster};
use postgres::Client;

/// The rows of `table` as text, in key order.
fn rows(s: &mut Client, table: &str) -> Vec<Vec<Option<String>>> {
    let msgs = s
        .simple_query(&format!("SELECT * FROM {table} ORDER BY 1"))
        .unwrap();
    msgs.into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The outcome of `sql` as a client sees it: Ok, or SQLSTATE and message (with the
/// table's name made neutral).
fn outcome(s: &mut Client, sql: &str, table: &str) -> Result<(), (String, String)> {
    s.batch_execute(sql).map_err(|e| {
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        (
            db.code().code().to_string(),
            db.message()
                .replace(&format!("\"{table}\""), "\"T\"")
                .replace(&format!("\"{table}_"), "\"T_"),
        )
    })
}

#[test]
fn schema_changes_give_the_rows_and_errors_of_heap_tables() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, a int, t text) SERVER memfdw; \
         CREATE TABLE h (id int PRIMARY KEY, a int, t text); \
         CREATE DOMAIN posint AS int CHECK (VALUE > 0); \
         INSERT INTO m SELECT g, g % 7, 'x' || g FROM generate_series(1, 500) g; \
         INSERT INTO h SELECT * FROM m",
    )
    .unwrap();
    // (statement, compare the message too: index build errors word it differently)
    let steps: &[(&str, bool)] = &[
        ("ALTER TABLE T ADD COLUMN r int DEFAULT 5", true),
        ("ALTER TABLE T ADD COLUMN s text", true),
        (
            "ALTER TABLE T ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED",
            true,
        ),
        ("ALTER TABLE T ALTER COLUMN r SET DEFAULT 9", true),
        ("INSERT INTO T (id, a) VALUES (1000, 1)", true),
        ("ALTER TABLE T ALTER COLUMN s SET NOT NULL", true),
        ("UPDATE T SET s = 'v' || (id % 3)", true),
        ("ALTER TABLE T ALTER COLUMN s SET NOT NULL", true),
        ("INSERT INTO T (id, a) VALUES (1001, 1)", true),
        ("ALTER TABLE T ALTER COLUMN s DROP NOT NULL", true),
        ("INSERT INTO T (id, a) VALUES (1001, 1)", true),
        ("ALTER TABLE T ALTER COLUMN r DROP DEFAULT", true),
        ("INSERT INTO T (id) VALUES (1002)", true),
        ("ALTER TABLE T ALTER COLUMN a TYPE bigint", true),
        ("ALTER TABLE T ALTER COLUMN t TYPE int", true),
        ("ALTER TABLE T ALTER COLUMN t TYPE varchar(3)", true),
        (
            "ALTER TABLE T ALTER COLUMN t TYPE int USING length(t)",
            true,
        ),
        ("ALTER TABLE T ALTER COLUMN r TYPE numeric(6,2)", true),
        ("ALTER TABLE T ADD CONSTRAINT big CHECK (a > 100)", true),
        ("ALTER TABLE T ADD CONSTRAINT pos CHECK (a >= 0)", true),
        ("INSERT INTO T (id, a) VALUES (2000, -1)", true),
        (
            "ALTER TABLE T ADD CONSTRAINT later CHECK (a < 3) NOT VALID",
            true,
        ),
        ("ALTER TABLE T VALIDATE CONSTRAINT later", true),
        ("ALTER TABLE T DROP CONSTRAINT later", true),
        ("ALTER TABLE T ADD UNIQUE (s)", false),
        ("ALTER TABLE T ADD PRIMARY KEY (a)", true),
        ("ALTER TABLE T DROP CONSTRAINT T_pkey", true),
        ("ALTER TABLE T DROP CONSTRAINT T_pkey", true),
        ("INSERT INTO T (id, a) VALUES (1, 1)", true),
        ("DELETE FROM T WHERE id = 1 AND s IS NULL", true),
        ("ALTER TABLE T ADD PRIMARY KEY (id)", true),
        ("INSERT INTO T (id, a) VALUES (1, 1)", true),
        ("ALTER TABLE T DROP COLUMN s", true),
        ("ALTER TABLE T ADD COLUMN u int UNIQUE", true),
        (
            "INSERT INTO T (id, a, u) VALUES (3000, 1, 7), (3001, 1, 7)",
            true,
        ),
        ("ALTER TABLE T RENAME COLUMN r TO rr", true),
        ("ALTER TABLE T DROP COLUMN a", false),
        ("ALTER TABLE T DROP COLUMN a CASCADE", true),
        // Type changes the engine stores alike still convert and check every value.
        (
            "ALTER TABLE T ADD COLUMN num numeric DEFAULT 12345.67",
            true,
        ),
        ("ALTER TABLE T ALTER COLUMN num TYPE numeric(5,1)", true),
        ("ALTER TABLE T ALTER COLUMN num TYPE numeric(8,1)", true),
        ("ALTER TABLE T ALTER COLUMN id TYPE posint", true),
        ("INSERT INTO T (id) VALUES (-1)", true),
        ("ALTER TABLE T ALTER COLUMN num TYPE posint", true),
        // A plain index is not a constraint.
        ("CREATE INDEX T_num_idx ON T (num)", true),
        ("ALTER TABLE T DROP CONSTRAINT T_num_idx", true),
    ];
    for (sql, message) in steps {
        let mem = sql
            .replace("TABLE T", "FOREIGN TABLE m")
            .replace(" T ", " m ")
            .replace("T_", "m_");
        let heap = sql
            .replace("TABLE T", "TABLE h")
            .replace(" T ", " h ")
            .replace("T_", "h_");
        let om = outcome(&mut s, &mem, "m");
        let oh = outcome(&mut s, &heap, "h");
        if *message {
            assert_eq!(om, oh, "{sql}");
        } else {
            assert_eq!(
                om.as_ref().err().map(|e| &e.0),
                oh.as_ref().err().map(|e| &e.0),
                "{sql}"
            );
        }
        assert_eq!(rows(&mut s, "m"), rows(&mut s, "h"), "after {sql}");
    }
    // The new primary key and unique key are used.
    let plan: Vec<String> = s
        .query("EXPLAIN SELECT * FROM m WHERE id = 5", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("m_pkey")), "{plan:?}");
    // A volatile default is computed per row.
    s.batch_execute("ALTER FOREIGN TABLE m ADD COLUMN v float8 DEFAULT random()")
        .unwrap();
    let (distinct, all): (i64, i64) = s
        .query_one("SELECT count(DISTINCT v), count(*) FROM m", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(all > 500);
    assert_eq!(distinct, all);
}

#[test]
fn schema_changes_are_transactional_and_survive_a_crash() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, a int) SERVER memfdw; \
         INSERT INTO m SELECT g, g FROM generate_series(1, 1000) g",
    )
    .unwrap();
    let before = rows(&mut s, "m");
    s.batch_execute(
        "BEGIN; ALTER FOREIGN TABLE m ADD COLUMN b int DEFAULT 1, DROP COLUMN a; ROLLBACK",
    )
    .unwrap();
    assert_eq!(rows(&mut s, "m"), before);
    s.batch_execute(
        "BEGIN; INSERT INTO m VALUES (1001, 1); SAVEPOINT x; \
         ALTER FOREIGN TABLE m ALTER COLUMN a TYPE text; ROLLBACK TO x; \
         INSERT INTO m VALUES (1002, 2); COMMIT",
    )
    .unwrap();
    let n: i64 = s
        .query_one(
            "SELECT count(*) FROM m WHERE a IN (1, 2) AND id > 1000",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // Committed changes survive kill -9, before and after a checkpoint.
    s.batch_execute(
        "ALTER FOREIGN TABLE m ADD COLUMN b text DEFAULT 'b'; \
         ALTER FOREIGN TABLE m ALTER COLUMN a TYPE bigint",
    )
    .unwrap();
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    s.batch_execute(
        "DELETE FROM m WHERE id > 1000; \
         ALTER FOREIGN TABLE m DROP COLUMN b, ADD COLUMN c int DEFAULT 3, ADD UNIQUE (a)",
    )
    .unwrap();
    let committed = rows(&mut s, "m");
    // A statement that fails after dropping a column leaves nothing behind.
    s.batch_execute("BEGIN").unwrap();
    assert!(s
        .batch_execute("ALTER FOREIGN TABLE m DROP COLUMN c, ADD CONSTRAINT neg CHECK (id < 0)")
        .is_err());
    s.batch_execute("ROLLBACK").unwrap();
    assert_eq!(rows(&mut s, "m"), committed);
    // An ALTER in flight when the server dies leaves the table as it was.
    let mut other = c.connect();
    other
        .batch_execute("BEGIN; ALTER FOREIGN TABLE m DROP COLUMN c, ADD COLUMN d int DEFAULT 4")
        .unwrap();
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect();
    assert_eq!(rows(&mut s, "m"), committed);
    let e = s
        .batch_execute("INSERT INTO m VALUES (5000, 1, 3)")
        .unwrap_err();
    assert_eq!(
        sqlstate(&e).as_deref(),
        Some("23505"),
        "the unique key came back"
    );
    let msg = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        msg.as_deref().is_some_and(|m| m.contains("m_a_key")),
        "{msg:?}"
    );
    let t: String = s
        .query_one("SELECT pg_typeof(a)::text FROM m LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(t, "bigint");
}

#[test]
fn schema_changes_through_a_parent_and_by_owners_only() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE p (id int, a int) PARTITION BY RANGE (id); \
         CREATE FOREIGN TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100) SERVER memfdw; \
         CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200); \
         INSERT INTO p SELECT g, g FROM generate_series(0, 199) g; \
         CREATE INDEX ON p1 (a); \
         ALTER TABLE p ADD COLUMN b text DEFAULT 'bee'; \
         ALTER TABLE p DROP COLUMN a; \
         ALTER TABLE p ALTER COLUMN b TYPE varchar(10)",
    )
    .unwrap();
    let r = rows(&mut s, "p");
    assert_eq!(r.len(), 200);
    assert!(r
        .iter()
        .all(|row| row.len() == 2 && row[1].as_deref() == Some("bee")));
    // The index on the dropped column went with it.
    let n: i64 = s
        .query_one(
            "SELECT count(*) FROM memfdw.indexes() WHERE table_name = 'p1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // USING would reach only the target, not its inheritors: refused.
    s.batch_execute(
        "CREATE FOREIGN TABLE mp (id int, v text) SERVER memfdw; \
         CREATE FOREIGN TABLE mc () INHERITS (mp) SERVER memfdw",
    )
    .unwrap();
    let e = s
        .batch_execute("ALTER FOREIGN TABLE mp ALTER COLUMN v TYPE int USING length(v)")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
    // Only the owner may change a memory table.
    s.batch_execute(
        "CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; GRANT ALL ON SCHEMA public TO alice, bob; \
         GRANT USAGE ON FOREIGN SERVER memfdw TO alice; SET ROLE alice; \
         CREATE FOREIGN TABLE am (id int) SERVER memfdw; INSERT INTO am VALUES (1); \
         GRANT ALL ON am TO bob; RESET ROLE",
    )
    .unwrap();
    let mut bob = c.connect_as("bob", "postgres");
    for sql in [
        "ALTER FOREIGN TABLE am ADD COLUMN x int",
        "ALTER FOREIGN TABLE am ADD PRIMARY KEY (id)",
        "ALTER FOREIGN TABLE am ALTER COLUMN id TYPE text USING id::text",
    ] {
        let e = bob.batch_execute(sql).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}");
    }
    let mut alice = c.connect_as("alice", "postgres");
    alice
        .batch_execute("ALTER FOREIGN TABLE am ADD PRIMARY KEY (id), ADD COLUMN x int DEFAULT 2")
        .unwrap();
    assert_eq!(
        rows(&mut alice, "am"),
        vec![vec![Some("1".to_string()), Some("2".to_string())]]
    );
}

#[test]
fn common_column_types_are_stored_as_heap_tables_store_them() {
    let c = Cluster::start();
    let mut s = c.connect();
    let cols = "id int PRIMARY KEY, m mood, arr int[], tarr text[], ip inet, net cidr, \
                mac macaddr, mac8 macaddr8, mo money, x xml, ts tsvector, q tsquery, \
                r int4range, dr daterange, o oid, nm name, bt bit(3), vb varbit, \
                pt point, bx box, ln lseg, ci circle, pg polygon, ch \"char\", \
                d posint, js json, rc regclass";
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE DOMAIN posint AS int CHECK (VALUE > 0); \
         CREATE FOREIGN TABLE m ({cols}) SERVER memfdw; CREATE TABLE h ({cols})"
    ))
    .unwrap();
    let values = "(1, 'ok', '{1,2,NULL}', '{a,\"b c\"}', '10.1.2.3/8', '10.0.0.0/8', \
                  '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', 12.5, '<a>x</a>', \
                  'fat cat', 'fat & cat', '[1,5)', '[2020-01-01,2021-01-01)', 42, 'nm', \
                  B'101', B'11', '(1,2)', '((0,0),(1,1))', '[(0,0),(1,1)]', '<(1,1),2>', \
                  '((0,0),(1,0),(0,1))', 'c', 7, '{\"k\": [1, 2]}', 'pg_class'), \
                  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                  NULL, NULL, NULL)";
    s.batch_execute(&format!(
        "INSERT INTO m VALUES {values}; INSERT INTO h VALUES {values}"
    ))
    .unwrap();
    assert_eq!(rows(&mut s, "m"), rows(&mut s, "h"));
    // Domain constraints still apply.
    let e = s
        .batch_execute("INSERT INTO m (id, d) VALUES (3, -1)")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23514"));
    // Operators work on the stored values as on heap's.
    let q = "SELECT count(*) FROM T WHERE ip << '10.0.0.0/8' AND 3 = ANY(arr) IS NOT TRUE \
             AND ts @@ q AND 3 <@ r AND pt <@ bx IS NOT TRUE AND m > 'sad'";
    let n = |s: &mut Client, t: &str| -> i64 {
        s.query_one(&q.replace(" T ", &format!(" {t} ")), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(n(&mut s, "m"), n(&mut s, "h"));
    // Indexes: types with a key encoding, range queries agree with heap.
    s.batch_execute(
        "INSERT INTO m (id, o, nm, mac, mo, ch) SELECT g, g, 'n' || g, \
           ('08:00:2b:01:02:' || lpad(to_hex(g % 256), 2, '0'))::macaddr, g, chr(65 + g % 50)::\"char\" \
           FROM generate_series(10, 600) g; \
         INSERT INTO h (id, o, nm, mac, mo, ch) SELECT id, o, nm, mac, mo, ch FROM m WHERE id >= 10; \
         CREATE INDEX ON m (o); CREATE INDEX ON m (nm); CREATE INDEX ON m (mac); \
         CREATE INDEX ON m (mo); CREATE INDEX ON m (ch)",
    )
    .unwrap();
    for cond in [
        "o BETWEEN 100 AND 150",
        "nm >= 'n2' AND nm < 'n3'",
        "mac > '08:00:2b:01:02:f0'",
        "mo < '20'",
        "ch = 'B'",
    ] {
        let q = format!("SELECT id FROM T WHERE {cond} ORDER BY id");
        let ids = |s: &mut Client, t: &str| -> Vec<i32> {
            s.query(&q.replace(" T ", &format!(" {t} ")), &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        let (a, b) = (ids(&mut s, "m"), ids(&mut s, "h"));
        assert!(!a.is_empty(), "{cond}");
        assert_eq!(a, b, "{cond}");
        let plan: Vec<String> = s
            .query(&format!("EXPLAIN {}", q.replace(" T ", " m ")), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            plan.iter().any(|l| l.contains("index scan")),
            "{cond}: {plan:?}"
        );
    }
    // Types without a key encoding are refused at CREATE INDEX: 0A000 when
    // PostgreSQL could index them, its own 42704 when it could not either.
    for (col, code) in [
        ("m", "0A000"),
        ("arr", "0A000"),
        ("ip", "0A000"),
        ("pt", "42704"),
        ("js", "42704"),
    ] {
        let e = s
            .batch_execute(&format!("CREATE INDEX ON m ({col})"))
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{col}");
    }
    // They survive a restart (the log carries their definitions).
    let before = rows(&mut s, "m");
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect();
    assert_eq!(rows(&mut s, "m"), before);
}

#[test]
fn columns_dropped_by_drop_type_cascade_are_rewritten_away() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; CREATE TYPE mood AS ENUM ('sad', 'ok'); \
         CREATE DOMAIN pos AS int CHECK (VALUE > 0); \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, md mood, p pos, x text) SERVER memfdw; \
         CREATE TABLE h (id int PRIMARY KEY, md mood, p pos, x text); \
         INSERT INTO m SELECT g, 'ok', g, 'x' || g FROM generate_series(1, 100) g; \
         INSERT INTO h SELECT * FROM m; \
         DROP TYPE mood CASCADE; DROP DOMAIN pos CASCADE",
    )
    .unwrap();
    assert_eq!(rows(&mut s, "m"), rows(&mut s, "h"));
    s.batch_execute("INSERT INTO m VALUES (101, 'y'); INSERT INTO h VALUES (101, 'y')")
        .unwrap();
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect();
    assert_eq!(rows(&mut s, "m"), rows(&mut s, "h"));
}

/// Keys added to a populated table are built over its rows in place; the usual
/// migration patterns still work: a key dropped and added again in one transaction
/// or one statement, keys added after a load in the same transaction, a duplicate
/// refused, a rollback leaving the old keys.
#[test]
fn keys_added_in_place_behave_as_heap_keys() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int NOT NULL, u int NOT NULL, v int) SERVER memfdw; \
         CREATE TABLE h (id int NOT NULL, u int NOT NULL, v int); \
         INSERT INTO m SELECT g, g % 1000, g FROM generate_series(1, 5000) g; \
         INSERT INTO h SELECT * FROM m",
    )
    .unwrap();
    for t in ["m", "h"] {
        let kind = if t == "m" { "FOREIGN TABLE" } else { "TABLE" };
        s.batch_execute(&format!("ALTER {kind} {t} ADD PRIMARY KEY (id)"))
            .unwrap();
        // Dropped and added again in one transaction, under the same default name.
        s.batch_execute(&format!(
            "BEGIN; ALTER {kind} {t} DROP CONSTRAINT {t}_pkey; \
             ALTER {kind} {t} ADD PRIMARY KEY (id); COMMIT"
        ))
        .unwrap();
        s.batch_execute(&format!(
            "ALTER {kind} {t} DROP CONSTRAINT {t}_pkey, ADD CONSTRAINT {t}_pkey PRIMARY KEY (id)"
        ))
        .unwrap();
        // A duplicate: refused with the constraint named, nothing left behind.
        let e = s
            .batch_execute(&format!("ALTER {kind} {t} ADD CONSTRAINT {t}_u UNIQUE (u)"))
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{t}");
        // Rolled back: the key is gone.
        s.batch_execute(&format!(
            "BEGIN; ALTER {kind} {t} ADD CONSTRAINT {t}_v UNIQUE (v); ROLLBACK"
        ))
        .unwrap();
        s.batch_execute(&format!("INSERT INTO {t} VALUES (9001, 1, 9001)"))
            .unwrap();
        let e = s
            .batch_execute(&format!("INSERT INTO {t} VALUES (1, 1, 1)"))
            .unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{t}");
    }
    // After a load in the same transaction (the rewrite path).
    s.batch_execute("SELECT memfdw.unload('m')").unwrap();
    s.batch_execute("BEGIN; SELECT memfdw.load('m'); ALTER FOREIGN TABLE m ADD CONSTRAINT m_v UNIQUE (v); COMMIT")
        .unwrap();
    assert_eq!(rows(&mut s, "m").len(), 5001);
    let e = s
        .batch_execute("INSERT INTO m VALUES (9002, 1, 1)")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"));
}
