//! Recovery runs in memfdw's background worker: the server accepts connections at
//! once, heap tables work meanwhile, sessions touching memory tables wait (and can be
//! cancelled), and a corrupt log makes memory tables unavailable, not the server.

use memfdw_e2e::{sqlstate, Cluster};
use std::time::{Duration, Instant};

fn populated() -> Cluster {
    let c = Cluster::start();
    let mut s = c.connect();
    s.batch_execute(
        "CREATE EXTENSION memfdw; \
         CREATE TABLE heap_t (a int); INSERT INTO heap_t VALUES (1), (2); \
         CREATE FOREIGN TABLE m (id int PRIMARY KEY, v text) SERVER memfdw",
    )
    .unwrap();
    // Several commits, so that the log holds many frames.
    for i in 0..50 {
        s.execute(
            "INSERT INTO m SELECT g, 'v' || g FROM generate_series($1 * 100, $1 * 100 + 99) g",
            &[&i],
        )
        .unwrap();
    }
    c
}

#[test]
fn sessions_wait_for_recovery_and_the_wait_can_be_cancelled() {
    let c = populated();
    c.kill9();
    c.append_conf("memfdw.debug_recovery_delay = 4000");
    c.restart();
    let started = Instant::now();
    let mut s = c.connect();
    // Heap tables do not wait for memfdw.
    let n: i64 = s
        .query_one("SELECT count(*) FROM heap_t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // A memory table waits; statement_timeout ends the wait with 57014.
    s.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let t = Instant::now();
    let e = s.query_one("SELECT count(*) FROM m", &[]).unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Another session sees the waiter in pg_stat_activity while it waits.
    let conn = c.conn_str();
    let waiter = std::thread::spawn(move || {
        let mut w = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
        let n: i64 = w
            .query_one("SELECT count(*) FROM m WHERE id < 1000", &[])
            .unwrap()
            .get(0);
        n
    });
    let mut seen = false;
    for _ in 0..100 {
        let waiting: i64 = s
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE 'SELECT count(*) FROM m WHERE%' AND wait_event_type = 'Extension'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting == 1 {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen, "no session was seen waiting for recovery");
    // Without a timeout the wait ends when recovery does, with every row there.
    assert_eq!(waiter.join().unwrap(), 1000);
    assert!(started.elapsed() >= Duration::from_secs(3));
    s.batch_execute("SET statement_timeout = 0").unwrap();
    let n: i64 = s.query_one("SELECT count(*) FROM m", &[]).unwrap().get(0);
    assert_eq!(n, 5000);
    let log = c.log_text();
    assert!(log.contains("memfdw: recovery of memory tables"), "{log}");
    assert!(
        log.contains("memfdw: recovered 1 tables, 5000 rows"),
        "{log}"
    );
}

#[test]
fn a_corrupt_log_makes_memory_tables_unavailable_not_the_server() {
    let c = populated();
    c.kill9();
    let mut segs: Vec<_> = std::fs::read_dir(c.redo_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "redo"))
        .collect();
    segs.sort();
    let seg = segs.first().expect("a redo segment").clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() > 4096, "segment holds {} bytes", bytes.len());
    // Inside the first frame's payload (32-byte header, 16-byte frame header), with
    // many valid frames after it: corruption, not a torn tail.
    bytes[32 + 16 + 4] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();
    c.restart();
    let mut s = c.connect_retry(Duration::from_secs(30));
    let n: i64 = s
        .query_one("SELECT count(*) FROM heap_t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let e = s.query_one("SELECT count(*) FROM m", &[]).unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("XX001"), "{e}");
    let db = e.as_db_error().unwrap();
    let detail = db.detail().unwrap_or_default();
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(detail.contains(name), "{detail}");
    assert!(detail.contains("offset 32"), "{detail}");
    // Writes are refused too, and nothing is logged after the corruption.
    let e = s
        .execute("INSERT INTO m VALUES (-1, 'x')", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("XX001"), "{e}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "the log was changed");
    // The server log names the file and offset once, from the worker.
    let log = c.log_text();
    assert!(
        log.contains("memfdw: recovery from the redo log failed") && log.contains(name),
        "{log}"
    );
    // Dropping heap tables still works.
    s.batch_execute("DROP TABLE heap_t").unwrap();
}

#[test]
fn a_shutdown_does_not_wait_for_recovery_to_finish() {
    let c = populated();
    c.kill9();
    c.append_conf("memfdw.debug_recovery_delay = 60000");
    c.restart();
    let mut s = c.connect();
    s.batch_execute("SET statement_timeout = '200ms'").unwrap();
    let e = s.query_one("SELECT count(*) FROM m", &[]).unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
    drop(s);
    let took = c.stop_fast();
    assert!(
        took < Duration::from_secs(10),
        "fast shutdown took {took:?}"
    );
    assert!(
        c.log_text()
            .contains("memfdw: recovery was interrupted by a shutdown request"),
        "{}",
        c.log_text()
    );
    // The next start recovers everything.
    std::fs::write(
        c.dir.join("data/postgresql.conf"),
        std::fs::read_to_string(c.dir.join("data/postgresql.conf"))
            .unwrap()
            .replace("memfdw.debug_recovery_delay = 60000", ""),
    )
    .unwrap();
    c.restart();
    let mut s = c.connect();
    let n: i64 = s.query_one("SELECT count(*) FROM m", &[]).unwrap().get(0);
    assert_eq!(n, 5000);
}

#[test]
fn the_checkpoint_recovery_started_from_is_shown_after_a_restart() {
    let c = populated();
    let mut s = c.connect();
    s.batch_execute("SELECT memfdw.checkpoint()").unwrap();
    s.execute("INSERT INTO m VALUES (-1, 'after the checkpoint')", &[])
        .unwrap();
    let q = "SELECT last_checkpoint_lsn, last_checkpoint_bytes, bytes_since_checkpoint \
             FROM memfdw.redo_stats()";
    let before = s.query_one(q, &[]).unwrap();
    let (lsn, bytes): (Option<String>, Option<i64>) = (before.get(0), before.get(1));
    assert!(lsn.is_some() && bytes.unwrap() > 0);
    drop(s);
    c.kill9();
    c.restart();
    let mut s = c.connect();
    let after = s.query_one(q, &[]).unwrap();
    assert_eq!(after.get::<_, Option<String>>(0), lsn);
    assert_eq!(after.get::<_, Option<i64>>(1), bytes);
    // The log replayed since the checkpoint counts towards the next one.
    assert!(after.get::<_, i64>(2) > 0);
    let n: i64 = s.query_one("SELECT count(*) FROM m", &[]).unwrap().get(0);
    assert_eq!(n, 5001);
}

/// A damaged data directory: each missing piece makes memory tables unavailable with
/// XX001 naming it, instead of a recovery that "succeeds" with committed rows gone.
#[test]
fn a_missing_checkpoint_segment_or_control_file_is_reported_not_ignored() {
    for missing in ["checkpoint", "first segment", "control"] {
        let c = populated();
        {
            let mut s = c.connect();
            s.query("SELECT * FROM memfdw.checkpoint()", &[]).unwrap();
            s.batch_execute("INSERT INTO m VALUES (-5, 'after the checkpoint')")
                .unwrap();
        }
        c.kill9();
        let dir = c.redo_dir();
        let victim = match missing {
            "checkpoint" => dir.join("checkpoint"),
            "control" => dir.join("control"),
            _ => {
                let mut segs: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "redo"))
                    .collect();
                segs.sort();
                segs.remove(0)
            }
        };
        std::fs::remove_file(&victim).unwrap_or_else(|e| panic!("{missing}: {e}"));
        c.restart();
        let mut s = c.connect_retry(Duration::from_secs(30));
        let e = s.query_one("SELECT count(*) FROM m", &[]).unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("XX001"), "{missing}: {e}");
        let detail = e
            .as_db_error()
            .unwrap()
            .detail()
            .unwrap_or_default()
            .to_owned();
        assert!(detail.contains("incomplete"), "{missing}: {detail}");
        // Heap tables are unaffected.
        let n: i64 = s
            .query_one("SELECT count(*) FROM heap_t", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 2);
    }
}

/// Durable reads: a transaction that read a change whose redo record is not synced yet
/// is acknowledged only once it is (an asynchronous commit's row copied into a heap
/// table must not outlive that row in a crash). The log sync is slowed down by a
/// developer setting so that the wait can be seen.
#[test]
fn a_reader_waits_until_what_it_read_is_durable() {
    let c = Cluster::start();
    c.stop_fast();
    c.append_conf("memfdw.debug_log_sync_delay = 1500\n");
    c.restart();
    let mut a = c.connect();
    a.batch_execute(
        "CREATE EXTENSION memfdw;
         CREATE FOREIGN TABLE m (id int PRIMARY KEY) SERVER memfdw;
         CREATE TABLE h (id int)",
    )
    .unwrap();
    let mut b = c.connect();
    std::thread::sleep(Duration::from_secs(4)); // everything so far is durable
                                                // An asynchronous commit returns before its record is synced...
    a.batch_execute("SET synchronous_commit = off").unwrap();
    let t = Instant::now();
    a.batch_execute("INSERT INTO m VALUES (1)").unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    // ... and a transaction that copies the row into a heap table waits for it.
    let t = Instant::now();
    b.batch_execute("BEGIN; INSERT INTO h SELECT id FROM m; COMMIT")
        .unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "committed after {waited:?}, before the row it copied was durable"
    );
    // Reading what is already durable costs nothing.
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    let n: i64 = b.query_one("SELECT count(*) FROM m", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}
