//! Durable reads: a transaction that read a version whose redo record is not yet
//! durable waits at its (durable) commit until it is.

mod common;

use common::*;
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::*;
use std::time::{Duration, Instant};

#[test]
fn a_reader_of_an_unsynced_commit_waits_for_it_at_its_own_commit() {
    let dir = format!("/tmp/memfdw-durable-reads-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    let log: &'static SharedLog = Box::leak(SharedLog::start(&dir, Lsn(0), 1 << 20).unwrap());
    let e: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        Some(Box::new(LogSink(log))),
    ));
    e.create_table(table_id(1), table_def()).unwrap();
    let t = e.table(table_id(1)).unwrap();
    log.set_sync_delay(400);
    // An asynchronous commit: installed, not synced.
    let mut w = e.begin();
    w.insert(&t, &pack(&t.layout, 0, 1, "x"), Stmt { cid: 0, sub: 1 })
        .unwrap();
    let tw = Instant::now();
    w.commit_with(false).unwrap();
    assert!(tw.elapsed() < Duration::from_millis(300));
    let end = log.written_lsn();
    assert!(log.flushed_lsn() < end);
    // A reader that saw it: its durable commit waits until the log covers it.
    let mut r = e.begin();
    let (mut cursor, mut batch) = (ScanCursor::new(), RowBatch::new());
    r.scan(&t, &mut cursor, 1, &mut batch, 10).unwrap();
    assert_eq!(batch.len(), 1);
    let tr = Instant::now();
    r.commit().unwrap();
    assert!(
        tr.elapsed() >= Duration::from_millis(300),
        "{:?}",
        tr.elapsed()
    );
    assert!(log.flushed_lsn() >= end);
    // Now durable: a second reader does not wait.
    let mut r = e.begin();
    let (mut cursor, mut batch) = (ScanCursor::new(), RowBatch::new());
    r.scan(&t, &mut cursor, 1, &mut batch, 10).unwrap();
    let tr = Instant::now();
    r.commit().unwrap();
    assert!(
        tr.elapsed() < Duration::from_millis(300),
        "{:?}",
        tr.elapsed()
    );
    // An asynchronous reader does not wait either.
    let mut w = e.begin();
    w.insert(&t, &pack(&t.layout, 0, 2, "y"), Stmt { cid: 0, sub: 1 })
        .unwrap();
    w.commit_with(false).unwrap();
    let mut r = e.begin();
    let (mut cursor, mut batch) = (ScanCursor::new(), RowBatch::new());
    r.scan(&t, &mut cursor, 1, &mut batch, 10).unwrap();
    let tr = Instant::now();
    r.commit_with(false).unwrap();
    assert!(
        tr.elapsed() < Duration::from_millis(300),
        "{:?}",
        tr.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
