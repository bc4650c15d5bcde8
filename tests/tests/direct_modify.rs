//! Direct UPDATE and DELETE (the scan writes the rows it finds, see
//! `fdw/src/direct_modify.rs`) give what the same statements give on a heap table:
//! row counts, RETURNING rows, the rows left, constraint errors with nothing changed,
//! volatile SET expressions evaluated once per row, keys moved within the scanned
//! range, writable CTEs and generic plans; READ COMMITTED waits and rechecks, and
//! REPEATABLE READ serialization failures, as the usual path. Statements the direct
//! path does not take (row triggers, joins, subqueries in SET) still work.

use memfdw_e2e::{plan, sqlstate, text_rows, Cluster};
use postgres::Client;

/// The rows of `q` (or its row count, for a statement without RETURNING) on `t`, and
/// then the whole table, sorted.
fn outcome(s: &mut Client, q: &str, t: &str) -> (Vec<String>, Vec<String>) {
    let q = q.replace("{t}", t);
    let mut out = if q.contains("RETURNING") {
        let mut r = text_rows(s, &q);
        r.sort();
        r
    } else {
        vec![s.execute(q.as_str(), &[]).unwrap().to_string()]
    };
    out.extend(text_rows(s, &format!("SELECT currval('{t}_s')")));
    let table = text_rows(s, &format!("SELECT * FROM {t} ORDER BY id"));
    (out, table)
}

/// `q` does the same to the memory table `m` as to the heap table `h`, and its plan on
/// `m` is a direct modification (`Foreign Update` / `Foreign Delete`) when `direct`.
fn same(s: &mut Client, q: &str, direct: bool) {
    let p = plan(s, &q.replace("{t}", "m"));
    let is_direct = p.contains("Foreign Update on m") || p.contains("Foreign Delete on m");
    assert_eq!(is_direct, direct, "{q}:\n{p}");
    let mem = outcome(s, q, "m");
    let heap = outcome(s, q, "h");
    assert_same(&mem.0, &heap.0, q);
    assert_same(&mem.1, &heap.1, q);
}

/// `mem` and `heap` are equal; else the first difference is reported.
fn assert_same(mem: &[String], heap: &[String], what: &str) {
    if let Some(i) = (0..mem.len().max(heap.len())).find(|&i| mem.get(i) != heap.get(i)) {
        panic!(
            "{what}: row {i} differs: memory {:?}, heap {:?} ({} vs {} rows)",
            mem.get(i),
            heap.get(i),
            mem.len(),
            heap.len()
        );
    }
}

fn setup(s: &mut Client) {
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE SEQUENCE m_s; SELECT nextval('m_s'); \
         CREATE SEQUENCE h_s; SELECT nextval('h_s'); \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, v int NOT NULL, t text, \
             CHECK (v < 1000000)) SERVER memfdw; \
         CREATE UNIQUE INDEX m_t ON m (t); \
         CREATE TABLE h (id int PRIMARY KEY, v int NOT NULL, t text, CHECK (v < 1000000)); \
         CREATE UNIQUE INDEX h_t ON h (t); \
         INSERT INTO m SELECT i, i % 10, 't' || i FROM generate_series(1, 2000) i; \
         INSERT INTO h SELECT i, i % 10, 't' || i FROM generate_series(1, 2000) i",
    )
    .unwrap();
}

#[test]
fn direct_modifications_do_what_heap_does() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    for q in [
        "UPDATE {t} SET v = v + 1 WHERE id = 5",
        "UPDATE {t} SET v = v + 1, t = t || 'x' WHERE id < 20 RETURNING *",
        "UPDATE {t} SET v = v * 2 WHERE v > 6 AND id % 3 = 0",
        "UPDATE {t} SET t = NULL WHERE id BETWEEN 30 AND 40 RETURNING id, t IS NULL, {t}",
        // Volatile SET expressions run once per row.
        "UPDATE {t} SET v = nextval('{t}_s') WHERE id BETWEEN 50 AND 60 RETURNING id, v",
        "UPDATE {t} SET v = nextval('{t}_s') WHERE id BETWEEN 61 AND 70",
        // Keys moved within the range being scanned (by the primary key).
        "UPDATE {t} SET id = id + 5000 WHERE id BETWEEN 100 AND 200",
        "UPDATE {t} SET id = id + 10000 WHERE id > 1900 RETURNING id",
        "DELETE FROM {t} WHERE v = 3 RETURNING *",
        "DELETE FROM {t} WHERE id BETWEEN 300 AND 350",
        "DELETE FROM {t} WHERE id = 7",
        "DELETE FROM {t} WHERE id = 7 RETURNING *",
        // A writable CTE: the rows it writes, the statement's own count.
        "WITH u AS (UPDATE {t} SET v = 0 WHERE id BETWEEN 400 AND 405 RETURNING *) \
         SELECT count(*), sum(id) FROM u",
        "UPDATE {t} SET v = v + (SELECT 1) WHERE id = 8 RETURNING v",
        // tableoid in WHERE, SET and RETURNING.
        "UPDATE {t} SET t = (tableoid = '{t}'::regclass)::text || id \
         WHERE tableoid = '{t}'::regclass AND id BETWEEN 16 AND 18 \
         RETURNING t, tableoid = '{t}'::regclass",
        "DELETE FROM {t} WHERE tableoid = '{t}'::regclass AND id = 19",
    ] {
        same(&mut s, q, true);
    }
    // EXPLAIN ANALYZE counts the rows written and those the quals removed.
    let expected: i64 = s
        .query_one("SELECT count(*) FROM m WHERE v >= 5 AND id <= 300", &[])
        .unwrap()
        .get(0);
    let plan = text_rows(
        &mut s,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) \
         UPDATE m SET v = v + 1 WHERE v >= 5 AND id <= 300",
    )
    .join("\n");
    assert!(
        plan.contains(&format!(
            "Foreign Update on m (actual rows={expected} loops=1)"
        )),
        "{plan}"
    );
    assert!(plan.contains("Rows Removed by Filter:"), "{plan}");
    s.batch_execute("UPDATE h SET v = v + 1 WHERE v >= 5 AND id <= 300")
        .unwrap();
    // Constraint errors: the statement changes nothing (a row before the failing one
    // was written already).
    for (q, code) in [
        ("UPDATE {t} SET v = CASE WHEN id = 900 THEN 2000000 ELSE v + 1 END WHERE id BETWEEN 800 AND 1000", "23514"),
        ("UPDATE {t} SET v = CASE WHEN id = 900 THEN NULL ELSE v END WHERE id > 850", "23502"),
        ("UPDATE {t} SET t = 't1000' WHERE id BETWEEN 998 AND 1002", "23505"),
        ("UPDATE {t} SET id = 1001 WHERE id = 1000 RETURNING *", "23505"),
        // An error in a SET expression.
        ("UPDATE {t} SET v = v / (id - 900) WHERE id BETWEEN 850 AND 950", "22012"),
    ] {
        for t in ["m", "h"] {
            let e = s.execute(q.replace("{t}", t).as_str(), &[]).unwrap_err();
            assert_eq!(sqlstate(&e).as_deref(), Some(code), "{q} on {t}: {e}");
        }
        let (m, h) = (
            text_rows(&mut s, "SELECT * FROM m ORDER BY id"),
            text_rows(&mut s, "SELECT * FROM h ORDER BY id"),
        );
        assert_same(&m, &h, q);
    }
    // A generic plan, run again and again.
    s.batch_execute("SET plan_cache_mode = force_generic_plan")
        .unwrap();
    for t in ["m", "h"] {
        let st = s
            .prepare(&format!("UPDATE {t} SET v = v + $2 WHERE id = $1"))
            .unwrap();
        for i in 0..20 {
            let n = s.execute(&st, &[&(1500 + 10 * (i % 5)), &1]).unwrap();
            assert_eq!(n, 1);
        }
    }
    s.batch_execute("RESET plan_cache_mode").unwrap();
    // In a transaction: own earlier writes are seen and written over.
    same(
        &mut s,
        "UPDATE {t} SET v = v + 100 WHERE id BETWEEN 500 AND 510 RETURNING id, v",
        true,
    );
    s.batch_execute("BEGIN").unwrap();
    for t in ["m", "h"] {
        s.batch_execute(&format!(
            "INSERT INTO {t} VALUES (9000, 1, 'new'); UPDATE {t} SET v = 2 WHERE id = 9000; \
             UPDATE {t} SET v = v + 1 WHERE id BETWEEN 600 AND 9000"
        ))
        .unwrap();
    }
    assert_eq!(
        text_rows(&mut s, "SELECT * FROM m ORDER BY id"),
        text_rows(&mut s, "SELECT * FROM h ORDER BY id")
    );
    s.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        text_rows(&mut s, "SELECT * FROM m ORDER BY id"),
        text_rows(&mut s, "SELECT * FROM h ORDER BY id")
    );

    // Not taken, and still right: a join, a correlated subquery in SET, a row
    // trigger (a statement trigger does not prevent it).
    same(
        &mut s,
        "UPDATE {t} SET v = x.n FROM (VALUES (11, 5), (12, 6)) x(i, n) WHERE {t}.id = x.i",
        false,
    );
    same(
        &mut s,
        "UPDATE {t} AS o SET v = (SELECT count(*) FROM h WHERE h.id < o.id) WHERE id = 13",
        false,
    );
    s.batch_execute(
        "CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN NEW.v := NEW.v + 1000; RETURN NEW; END $$; \
         CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN INSERT INTO log VALUES (TG_TABLE_NAME); RETURN NULL; END $$; \
         CREATE TABLE log (t text); \
         CREATE TRIGGER st AFTER UPDATE ON m FOR EACH STATEMENT EXECUTE FUNCTION note(); \
         CREATE TRIGGER st AFTER UPDATE ON h FOR EACH STATEMENT EXECUTE FUNCTION note()",
    )
    .unwrap();
    same(&mut s, "UPDATE {t} SET v = 1 WHERE id = 14", true);
    assert_eq!(
        text_rows(&mut s, "SELECT t, count(*) FROM log GROUP BY t ORDER BY t"),
        ["h|1", "m|1"]
    );
    s.batch_execute(
        "CREATE TRIGGER rt BEFORE UPDATE ON m FOR EACH ROW EXECUTE FUNCTION bump(); \
         CREATE TRIGGER rt BEFORE UPDATE ON h FOR EACH ROW EXECUTE FUNCTION bump()",
    )
    .unwrap();
    same(
        &mut s,
        "UPDATE {t} SET v = 2 WHERE id = 15 RETURNING *",
        false,
    );
}

/// Rows a statement inserts belong to that statement, as on heap tables, also when a
/// row trigger's queries advance the command counter between rows and start and end
/// subtransactions (memfdw takes the statement's command id and subtransaction at its
/// first row): the trigger sees the rows inserted before its own, a savepoint rolled
/// back takes its statements' rows away, and COPY does the same as INSERT.
#[test]
fn inserted_rows_belong_to_their_statement_as_on_heap() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, seen int) SERVER memfdw; \
         CREATE TABLE h (id int PRIMARY KEY, seen int); \
         CREATE FUNCTION seen() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
             BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END; \
             EXECUTE format('SELECT count(*) FROM %I', TG_TABLE_NAME) INTO NEW.seen; \
             RETURN NEW; \
         END $$; \
         CREATE TRIGGER s BEFORE INSERT ON m FOR EACH ROW EXECUTE FUNCTION seen(); \
         CREATE TRIGGER s BEFORE INSERT ON h FOR EACH ROW EXECUTE FUNCTION seen()",
    )
    .unwrap();
    for t in ["m", "h"] {
        s.batch_execute(&format!(
            "INSERT INTO {t} SELECT g, 0 FROM generate_series(1, 5) g; \
             BEGIN; \
             INSERT INTO {t} VALUES (6, 0), (7, 0); \
             SAVEPOINT a; \
             INSERT INTO {t} SELECT g, 0 FROM generate_series(8, 10) g; \
             ROLLBACK TO a; \
             INSERT INTO {t} VALUES (11, 0); \
             COMMIT"
        ))
        .unwrap();
        let mut w = s
            .copy_in(&format!("COPY {t} (id, seen) FROM STDIN"))
            .unwrap();
        std::io::Write::write_all(&mut w, b"20\t0\n21\t0\n22\t0\n").unwrap();
        w.finish().unwrap();
    }
    let mem = text_rows(&mut s, "SELECT id, seen FROM m ORDER BY id");
    let heap = text_rows(&mut s, "SELECT id, seen FROM h ORDER BY id");
    assert_same(&mem, &heap, "inserts with a row trigger");
    // (The trigger counted the rows before its own: 0..4 for the first statement.)
    assert_eq!(&heap[..5], ["1|0", "2|1", "3|2", "4|3", "5|4"]);
    assert_eq!(heap.len(), 11);
}

/// A direct UPDATE that waits for a row another transaction holds goes on with the
/// row's newest version (re-evaluating WHERE and SET on it) under READ COMMITTED, and
/// fails with 40001 under REPEATABLE READ, as on a heap table.
#[test]
fn direct_updates_wait_and_recheck_like_heap() {
    let c = Cluster::start();
    let mut s = c.connect();
    setup(&mut s);
    for t in ["m", "h"] {
        for (iso, expect) in [
            ("READ COMMITTED", Ok(vec!["10|20".to_string()])),
            ("REPEATABLE READ", Err("40001")),
        ] {
            s.batch_execute(&format!("UPDATE {t} SET v = 1 WHERE id = 10"))
                .unwrap();
            let mut holder = c.connect();
            holder
                .batch_execute(&format!("BEGIN; UPDATE {t} SET v = v + 1 WHERE id = 10"))
                .unwrap();
            let conn = c.conn_str();
            let tt = t.to_string();
            let waiter = std::thread::spawn(move || {
                let mut w = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
                w.batch_execute(&format!("BEGIN ISOLATION LEVEL {iso}; SELECT 1"))
                    .unwrap();
                let r = w
                    .simple_query(&format!(
                        "UPDATE {tt} SET v = v * 10 WHERE id = 10 AND v > 0 RETURNING id, v"
                    ))
                    .map(|ms| {
                        ms.into_iter()
                            .filter_map(|m| match m {
                                postgres::SimpleQueryMessage::Row(r) => {
                                    Some(format!("{}|{}", r.get(0).unwrap(), r.get(1).unwrap()))
                                }
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                    })
                    .map_err(|e| sqlstate(&e).unwrap_or_default());
                let _ = w.batch_execute("COMMIT");
                r
            });
            // The waiter is blocked on the row until the holder commits.
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(!waiter.is_finished(), "{t} {iso}: did not wait");
            holder.batch_execute("COMMIT").unwrap();
            let got = waiter.join().unwrap();
            match expect {
                Ok(v) => assert_eq!(got, Ok(v), "{t} {iso}"),
                Err(code) => assert_eq!(got, Err(code.to_string()), "{t} {iso}"),
            }
        }
    }
    assert_eq!(
        text_rows(&mut s, "SELECT * FROM m ORDER BY id"),
        text_rows(&mut s, "SELECT * FROM h ORDER BY id")
    );
}
