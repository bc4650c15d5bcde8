//! `character(n)` columns: memory tables store values without their trailing blanks
//! and pad them back when they hand them out, so every value, error detail, group and
//! key reads back byte for byte as a heap table returns it — in a UTF8 database with
//! multibyte characters, after UPDATE, ALTER ... TYPE and crash recovery — while a
//! blank-padded column takes no memory for its padding.

use memfdw_e2e::{text_rows, Cluster};
use postgres::Client;

const COLUMNS: &str = "id int PRIMARY KEY, c char(6), k char(4) UNIQUE, g char(3), t text";

const ROWS: &str =
    "(1, '', 'a', 'x', 'p'), (2, 'a', 'ab', 'x ', 'q'), (3, 'ab  ', ' b', ' x', NULL), \
     (4, 'ééé', 'é', 'é', 'r'), (5, '  x', 'ééé ', 'é  ', 's'), (6, 'abcdef', 'abcd', NULL, 't'), \
     (7, NULL, NULL, 'yy', 'u'), (8, ' ', '  ', '', 'v'), (9, 'ab', 'zz  ', 'yy ', 'w'), \
     (10, 'ａｂｃ', 'ａ', 'ａ', 'x')";

/// Every query, on the heap table `h` and the memory table `m` (`{t}`), must give the
/// same rows (compared as text, sorted).
const QUERIES: &[&str] = &[
    "SELECT id, c, k, g, t FROM {t}",
    "SELECT {t}::text FROM {t}",
    "SELECT id, octet_length(c), length(c), octet_length(k), char_length(g) FROM {t}",
    "SELECT id, '[' || c::text || ']', format('[%s][%s]', c, k), c::varchar FROM {t}",
    "SELECT id FROM {t} WHERE c = 'ab'",
    "SELECT id FROM {t} WHERE c = 'ab    '::char(6)",
    "SELECT id FROM {t} WHERE k = 'é'",
    "SELECT id FROM {t} WHERE k IN ('ab', 'ééé', 'zz')",
    "SELECT id FROM {t} WHERE c LIKE 'ab%'",
    "SELECT id FROM {t} WHERE c > 'a' AND c < 'b'",
    "SELECT k FROM {t} WHERE k >= 'a' ORDER BY k",
    "SELECT g, count(*) FROM {t} GROUP BY g",
    "SELECT c, count(*), min(id) FROM {t} GROUP BY c",
    "SELECT encode(c::bytea, 'hex') FROM {t}",
];

fn same(s: &mut Client, when: &str) {
    for q in QUERIES {
        let mut heap = text_rows(s, &q.replace("{t}", "h"));
        let mut mem = text_rows(s, &q.replace("{t}", "m"));
        heap.sort();
        mem.sort();
        assert_eq!(mem, heap, "{when}: {q}");
    }
}

fn error_text(s: &mut Client, q: &str) -> String {
    let e = s.batch_execute(q).unwrap_err();
    let db = e.as_db_error().expect("a server error");
    format!(
        "{} {} {:?}",
        db.code().code(),
        db.message().replace("h_k_key", "K").replace("m_k_key", "K"),
        db.detail()
    )
}

#[test]
fn character_columns_read_back_as_on_heap() {
    let c = Cluster::start();
    c.connect()
        .batch_execute(
            "CREATE DATABASE u ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'",
        )
        .unwrap();
    let mut s = c.connect_as("postgres", "u");
    s.batch_execute(&format!(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE h ({COLUMNS}); CREATE FOREIGN TABLE m ({COLUMNS}) SERVER memfdw; \
         INSERT INTO h VALUES {ROWS}; INSERT INTO m VALUES {ROWS}; ANALYZE h; ANALYZE m"
    ))
    .unwrap();
    same(&mut s, "inserted");

    // A unique violation names the key as heap does (padded), whichever spelling of
    // the value was inserted.
    for v in ["'ab'", "'ab  '", "'é   '"] {
        let q = |t: &str| format!("INSERT INTO {t} VALUES (100, 'n', {v}, 'n', 'n')");
        assert_eq!(
            error_text(&mut s, &q("m")),
            error_text(&mut s, &q("h")),
            "{v}"
        );
    }

    // Writes of other columns keep the values; writes of these columns pad them.
    s.batch_execute(
        "UPDATE h SET t = t || '!'; UPDATE m SET t = t || '!'; \
         UPDATE h SET c = left(rtrim(c), 5) || 'z', g = NULL WHERE id % 2 = 0; \
         UPDATE m SET c = left(rtrim(c), 5) || 'z', g = NULL WHERE id % 2 = 0; \
         COPY h FROM PROGRAM 'printf \"20\\t  é \\tqq \\t\\t\\\\N\\n\"'; \
         COPY m FROM PROGRAM 'printf \"20\\t  é \\tqq \\t\\t\\\\N\\n\"'",
    )
    .unwrap();
    same(&mut s, "updated and copied");

    // Longer columns pad further; shorter ones keep up to their length (or fail alike).
    s.batch_execute(
        "ALTER TABLE h ALTER c TYPE char(9); ALTER FOREIGN TABLE m ALTER c TYPE char(9); \
         ALTER TABLE h ALTER g TYPE char(2); ALTER FOREIGN TABLE m ALTER g TYPE char(2)",
    )
    .unwrap();
    same(&mut s, "altered");
    let shorten = |t: &str| format!("ALTER TABLE {t} ALTER k TYPE char(1)");
    assert_eq!(
        error_text(&mut s, &shorten("m")).replace("FOREIGN ", ""),
        error_text(&mut s, &shorten("h"))
    );

    // What the redo log replays reads back the same.
    let mut s = {
        c.kill9();
        c.restart();
        c.connect_as("postgres", "u")
    };
    same(&mut s, "recovered");
    s.batch_execute("ALTER FOREIGN TABLE m ALTER c TYPE text; ALTER TABLE h ALTER c TYPE text")
        .unwrap();
    same(&mut s, "to text");
}

/// A `character(84)` column holding '' (pgbench's filler) takes no row memory for its
/// 84 blanks, while a non-blank value of the same length takes it all.
#[test]
fn blank_padding_takes_no_memory() {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE FOREIGN TABLE blank (id int NOT NULL, f char(84)) SERVER memfdw; \
         CREATE FOREIGN TABLE full_ (id int NOT NULL, f char(84)) SERVER memfdw; \
         INSERT INTO blank SELECT g, '' FROM generate_series(1, 10000) g; \
         INSERT INTO full_ SELECT g, repeat('x', 84) FROM generate_series(1, 10000) g",
    )
    .unwrap();
    let data = |s: &mut Client, t: &str| -> f64 {
        s.query_one(
            "SELECT bytes_per_row FROM memfdw.table_memory() \
             WHERE table_name = $1 AND component = 'row data'",
            &[&t],
        )
        .unwrap()
        .get(0)
    };
    let (b, f) = (data(&mut s, "blank"), data(&mut s, "full_"));
    assert!(b + 84.0 <= f, "blank {b} B/row, full {f} B/row");
    let padded: i64 = s
        .query_one(
            "SELECT sum(octet_length(f))::int8 FROM blank WHERE f = ''",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(padded, 840_000);
}
