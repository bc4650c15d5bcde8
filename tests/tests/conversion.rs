//! `memfdw.convert_to_memory` and `memfdw.convert_to_heap`: a table keeps its name,
//! columns, constraints, keys, indexes, owner, grants, comments, owned sequences and
//! rows, in either direction; what cannot follow it is refused with a list; only the
//! owner may convert; other sessions see the old table or the new one; a crash in the
//! middle leaves the old table, a crash after the commit the new one.

use memfdw_e2e::{sqlstate, text_rows, Cluster};
use postgres::Client;
use std::time::Duration;

/// What a user sees of table `t` besides its kind and index storage: columns,
/// constraints, keys and indexes (by name and columns), owner, grants, comments,
/// owned sequences.
fn description(s: &mut Client, t: &str) -> Vec<String> {
    let mut d = text_rows(
        s,
        &format!(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    a.attgenerated, coalesce(pg_get_expr(ad.adbin, ad.adrelid), ''), \
                    a.attcollation::regcollation, coalesce(a.attacl::text, ''), \
                    coalesce(col_description(a.attrelid, a.attnum), '') \
               FROM pg_attribute a LEFT JOIN pg_attrdef ad \
                 ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
              WHERE a.attrelid = '{t}'::regclass AND a.attnum > 0 AND NOT a.attisdropped \
              ORDER BY a.attnum"
        ),
    );
    d.extend(text_rows(
        s,
        &format!(
            "SELECT conname, pg_get_constraintdef(oid), \
                    coalesce(obj_description(oid, 'pg_constraint'), '') \
               FROM pg_constraint WHERE conrelid = '{t}'::regclass AND contype = 'c' \
              ORDER BY 1"
        ),
    ));
    d.extend(text_rows(
        s,
        &format!(
            "SELECT relowner::regrole, relacl, obj_description(oid, 'pg_class') \
               FROM pg_class WHERE oid = '{t}'::regclass"
        ),
    ));
    d.extend(text_rows(
        s,
        &format!("SELECT pg_get_serial_sequence('{t}', 'id')"),
    ));
    d
}

/// The keys and indexes of `t`: name, columns, unique, primary.
fn keys(s: &mut Client, t: &str) -> Vec<String> {
    let memory: bool = s
        .query_one(
            "SELECT relkind = 'f' FROM pg_class WHERE oid = $1::text::regclass",
            &[&t],
        )
        .unwrap()
        .get(0);
    let q = if memory {
        format!(
            "SELECT index_name, columns, is_unique, is_primary FROM memfdw.indexes() \
              WHERE relid = '{t}'::regclass ORDER BY 1"
        )
    } else {
        format!(
            "SELECT c.relname, (SELECT string_agg(a.attname, ', ' ORDER BY k.o) \
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o) \
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n), \
                    i.indisunique, i.indisprimary \
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
              WHERE i.indrelid = '{t}'::regclass ORDER BY 1"
        )
    };
    text_rows(s, &q)
}

fn setup(s: &mut Client) {
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE ROLE owner_r; CREATE ROLE \"Reader R\"; CREATE ROLE stranger_r LOGIN; \
         ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO stranger_r; \
         CREATE TABLE acc (id serial PRIMARY KEY, email text NOT NULL UNIQUE, \
             bal numeric(12,2) DEFAULT 0 CHECK (bal >= 0), name text COLLATE \"C\", \
             grp int, twice int GENERATED ALWAYS AS (grp * 2) STORED, \
             note varchar(20) DEFAULT 'x'); \
         CREATE INDEX acc_grp ON acc (grp, name); \
         CREATE UNIQUE INDEX acc_name ON acc (name); \
         COMMENT ON TABLE acc IS 'accounts'; COMMENT ON COLUMN acc.email IS 'login'; \
         COMMENT ON CONSTRAINT acc_bal_check ON acc IS 'no debt'; \
         ALTER TABLE acc OWNER TO owner_r; \
         GRANT SELECT ON acc TO \"Reader R\"; GRANT UPDATE (bal) ON acc TO \"Reader R\"; \
         INSERT INTO acc (email, bal, name, grp) \
           SELECT 'u' || g || '@x', g, 'n' || g, g % 7 FROM generate_series(1, 3000) g; \
         INSERT INTO acc (email) VALUES ('nulls@x'); \
         ALTER TABLE acc ADD CONSTRAINT small_grp CHECK (grp < 5) NOT VALID",
    )
    .unwrap();
}

#[test]
fn conversion_keeps_everything_both_ways() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    let all = "SELECT * FROM acc ORDER BY id";
    let before_rows = text_rows(&mut s, all);
    let before = description(&mut s, "acc");
    let before_keys = keys(&mut s, "acc");

    let r = text_rows(&mut s, "SELECT memfdw.convert_to_memory('acc')");
    assert_eq!(r, ["acc"]);
    assert_eq!(
        text_rows(&mut s, "SELECT relkind FROM pg_class WHERE relname = 'acc'"),
        ["f"]
    );
    assert_eq!(text_rows(&mut s, all), before_rows);
    assert_eq!(description(&mut s, "acc"), before);
    assert_eq!(keys(&mut s, "acc"), before_keys);
    // Only one table of that name, and the heap one is gone with its indexes.
    assert_eq!(
        text_rows(
            &mut s,
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%acc%' AND relkind IN ('r', 'i')"
        ),
        ["0"]
    );
    // It works as the old one did: serial, defaults, generated column, keys, CHECK.
    assert_eq!(
        text_rows(
            &mut s,
            "INSERT INTO acc (email, grp) VALUES ('new@x', 4) RETURNING id, bal, twice, note"
        ),
        ["3002|0.00|8|x"]
    );
    for (q, code) in [
        ("INSERT INTO acc (email) VALUES ('u5@x')", "23505"),
        ("INSERT INTO acc (id, email) VALUES (7, 'q@x')", "23505"),
        (
            "INSERT INTO acc (email, name) VALUES ('q@x', 'n9')",
            "23505",
        ),
        ("UPDATE acc SET bal = -1 WHERE id = 3", "23514"),
        ("INSERT INTO acc (email) VALUES (NULL)", "23502"),
    ] {
        let e = s.batch_execute(q).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{q}: {e}");
    }
    // The grants hold: the reader reads and may update bal only.
    let mut reader = c.connect();
    reader.batch_execute("SET ROLE \"Reader R\"").unwrap();
    assert_eq!(text_rows(&mut reader, "SELECT count(*) FROM acc"), ["3002"]);
    reader
        .batch_execute("UPDATE acc SET bal = 5 WHERE id = 1")
        .unwrap();
    let e = reader
        .batch_execute("UPDATE acc SET grp = 5 WHERE id = 1")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"));
    s.batch_execute("UPDATE acc SET bal = 1 WHERE id = 1; DELETE FROM acc WHERE id = 3002")
        .unwrap();

    // Back to heap, keeping the memory table under another name.
    let r = text_rows(
        &mut s,
        "SELECT memfdw.convert_to_heap('acc', keep_as => 'acc_mem')",
    );
    assert_eq!(r, ["acc"]);
    assert_eq!(
        text_rows(&mut s, "SELECT relkind FROM pg_class WHERE relname = 'acc'"),
        ["r"]
    );
    assert_eq!(text_rows(&mut s, all), before_rows);
    assert_eq!(description(&mut s, "acc"), before);
    assert_eq!(keys(&mut s, "acc"), before_keys);
    assert_eq!(
        text_rows(&mut s, "SELECT * FROM acc_mem ORDER BY id"),
        before_rows,
        "kept"
    );
    // The kept table's keys are renamed, not dropped.
    assert_eq!(keys(&mut s, "acc_mem").len(), before_keys.len());

    // Bad input.
    for (q, code) in [
        ("SELECT memfdw.convert_to_memory('acc_mem')", "42809"),
        ("SELECT memfdw.convert_to_heap('acc')", "42809"),
        ("SELECT memfdw.convert_to_memory('nosuch')", "42P01"),
        (
            "SELECT memfdw.convert_to_memory('acc', keep_as => 'acc_mem')",
            "42P07",
        ),
        ("SELECT memfdw.convert_to_memory('pg_class')", "42809"),
    ] {
        let e = s.batch_execute(q).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some(code), "{q}: {e}");
    }
    // Only the owner (or a member of the owning role) converts.
    // (What any user creating memory tables needs: USAGE on the server, CREATE in the
    // schema; the owner role too, to own the new table there.)
    s.batch_execute(
        "GRANT ALL ON acc TO stranger_r; GRANT USAGE ON SCHEMA memfdw TO stranger_r; \
         GRANT USAGE ON FOREIGN SERVER memfdw TO stranger_r; \
         GRANT CREATE ON SCHEMA public TO stranger_r, owner_r",
    )
    .unwrap();
    let mut stranger = c.connect_as("stranger_r", "postgres");
    let e = stranger
        .batch_execute("SELECT memfdw.convert_to_memory('acc')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    s.batch_execute("GRANT owner_r TO stranger_r").unwrap();
    stranger
        .batch_execute("SELECT memfdw.convert_to_memory('acc')")
        .unwrap();
    assert_eq!(text_rows(&mut s, all), before_rows);
}

#[test]
fn what_cannot_follow_is_refused_and_nothing_changes() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE t (id int PRIMARY KEY, v int, w text); INSERT INTO t VALUES (1, 1); \
         CREATE INDEX t_ops ON t (w text_pattern_ops); \
         CREATE STATISTICS t_st ON id, v FROM t; \
         CREATE FUNCTION tf() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM t; END; \
         ALTER TABLE t ENABLE ROW LEVEL SECURITY; \
         CREATE VIEW tv AS SELECT * FROM t; \
         CREATE TABLE child (id int REFERENCES t); \
         CREATE INDEX t_part ON t (v) WHERE v > 0; \
         CREATE INDEX t_expr ON t ((v + 1)); \
         CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER tt BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f(); \
         CREATE TABLE sub () INHERITS (t)",
    )
    .unwrap();
    let e = s
        .batch_execute("SELECT memfdw.convert_to_memory('t')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("2BP01"));
    let msg = e.as_db_error().unwrap().message().to_string();
    for part in [
        "tv",
        "child_id_fkey",
        "t_part",
        "t_expr",
        "trigger tt",
        "sub inherits",
        "t_ops",
        "statistics object",
        "function public.tf()",
        "row-level security",
    ] {
        assert!(msg.contains(part), "{part} not in: {msg}");
    }
    assert_eq!(
        text_rows(
            &mut s,
            "SELECT relkind, (SELECT count(*) FROM t) FROM pg_class WHERE relname = 't'"
        ),
        ["r|1"]
    );
    // Temporary tables stay heap tables.
    s.batch_execute("CREATE TEMP TABLE tmp (id int)").unwrap();
    let e = s
        .batch_execute("SELECT memfdw.convert_to_memory('tmp')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("2BP01"));
    // A partitioned table is not a table that can be converted.
    s.batch_execute("CREATE TABLE p (id int) PARTITION BY RANGE (id)")
        .unwrap();
    let e = s
        .batch_execute("SELECT memfdw.convert_to_memory('p')")
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42809"));
}

/// Other sessions wait for the conversion and then read the new table; a crash before
/// the conversion commits leaves the heap table, a crash after it the memory table.
#[test]
fn conversion_is_atomic_for_sessions_and_crashes() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE big (id int PRIMARY KEY, v text); \
         INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, 200000) g",
    )
    .unwrap();
    // A reader that starts while the conversion runs waits, then sees every row.
    s.batch_execute("BEGIN; SELECT memfdw.convert_to_memory('big')")
        .unwrap();
    let conn = c.conn_str();
    let reader = std::thread::spawn(move || {
        let mut r = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        r.query_one(
            "SELECT count(*), (SELECT relkind::text FROM pg_class WHERE relname = 'big') FROM big",
            &[],
        )
        .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)))
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!reader.is_finished(), "the reader did not wait");
    s.batch_execute("COMMIT").unwrap();
    assert_eq!(reader.join().unwrap(), (200000, "f".to_string()));

    // Back to heap; a crash in the middle of the next conversion leaves the heap table.
    s.batch_execute("SELECT memfdw.convert_to_heap('big')")
        .unwrap();
    let conn = c.conn_str();
    let converting = std::thread::spawn(move || {
        let mut r = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        let _ =
            r.batch_execute("BEGIN; SELECT memfdw.convert_to_memory('big'); SELECT pg_sleep(30)");
    });
    // Wait until the conversion is done in the open transaction (the session sleeps
    // before its COMMIT), then crash.
    let mut w = c.connect();
    let t0 = std::time::Instant::now();
    loop {
        let n: i64 = w
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the conversion did not finish"
        );
        if n > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill9();
    let _ = converting.join();
    c.restart();
    let mut s = c.connect_retry(Duration::from_secs(60));
    assert_eq!(
        text_rows(
            &mut s,
            "SELECT relkind, (SELECT count(*) FROM big) FROM pg_class WHERE relname = 'big'"
        ),
        ["r|200000"]
    );
    assert_eq!(
        text_rows(&mut s, "SELECT count(*) FROM memfdw.tables()"),
        ["0"]
    );
    // Converted and committed, then a crash: the memory table with every row.
    s.batch_execute("SELECT memfdw.convert_to_memory('big')")
        .unwrap();
    c.kill9();
    c.restart();
    let mut s = c.connect_retry(Duration::from_secs(60));
    assert_eq!(
        text_rows(&mut s, "SELECT relkind, (SELECT count(*) FROM big), (SELECT count(*) FROM big WHERE id = 777) FROM pg_class WHERE relname = 'big'"),
        ["f|200000|1"]
    );
}
