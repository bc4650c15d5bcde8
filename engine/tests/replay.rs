//! Replaying the redo records that commits and DDL produce rebuilds the same tables:
//! a recording sink captures what the engine hands to the log while four threads run
//! a write workload; a fresh engine replays it (twice: replay is idempotent) and must
//! hold exactly the same rows.

mod common;

use common::*;
use memfdw_engine::redo::payload::{LogRecord, RowImage};
use memfdw_engine::*;

fn config() -> EngineConfig {
    EngineConfig {
        memory_limit: 1 << 30,
    }
}

#[test]
fn replaying_the_log_rebuilds_the_same_tables() {
    let log: &'static Recorder = Box::leak(Box::default());
    let a: &'static Engine = Box::leak(Engine::new(config(), Some(Box::new(Forward(log)))));
    a.create_table(5, table_def()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|w| std::thread::spawn(move || run_worker(a, 5, w, 900 + w as u64, 800, 0)))
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    // A second table, filled and dropped: replay must not resurrect it.
    a.create_table(6, table_def()).unwrap();
    let t6 = a.table(6).unwrap();
    let mut txn = a.begin();
    txn.insert(
        &t6,
        &pack(&t6.layout, 0, 1, "gone"),
        Stmt { cid: 0, sub: 1 },
    )
    .unwrap();
    txn.commit().unwrap();
    drop(t6);
    assert!(a.drop_table(6).unwrap());

    // The engine logged the DDL itself, in order with the commits.
    let records: Vec<LogRecord> = log.0.lock().unwrap().clone();
    assert_eq!(
        records[0],
        LogRecord::CreateTable {
            oid: 5,
            def: table_def()
        }
    );
    assert_eq!(records.last(), Some(&LogRecord::DropTable { oid: 6 }));

    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    replay_all(b, &records).unwrap();
    let expected = scan_all(a, 5);
    assert!(expected.len() > 500);
    assert_eq!(scan_all(b, 5), expected);
    assert_eq!(b.table_stats(5).unwrap().rows as usize, expected.len());
    assert!(b.table(6).is_none());
    // Idempotent: everything again changes nothing.
    replay_all(b, &records).unwrap();
    assert_eq!(scan_all(b, 5), expected);
    assert_eq!(b.table_stats(5).unwrap().rows as usize, expected.len());
    // New work continues above the recovered row ids and TIDs.
    assert!(b.last_tid() >= a.last_tid());
    let t = b.table(5).unwrap();
    let mut txn = b.begin();
    let rowid = txn
        .insert(&t, &pack(&t.layout, 9, 9, "new"), Stmt { cid: 0, sub: 1 })
        .unwrap();
    let tid = txn.commit().unwrap();
    let max_logged = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Commit { writes, .. } => writes.iter().map(|w| w.rowid).max(),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        rowid > max_logged,
        "new row id {rowid} collides with logged ones (max {max_logged})"
    );
    assert!(tid > a.last_tid());
}

#[test]
fn a_row_that_does_not_match_its_table_is_corruption() {
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    replay_all(
        b,
        &[LogRecord::CreateTable {
            oid: 1,
            def: table_def(),
        }],
    )
    .unwrap();
    let bad = LogRecord::Commit {
        tid: Tid(3),
        writes: vec![RowImage {
            table_oid: 1,
            rowid: RowId(1),
            after: Some(vec![0, 1, 2]),
        }],
    };
    assert_eq!(replay_all(b, [&bad]).unwrap_err().sqlstate(), "XX001");
    assert!(scan_all(b, 1).is_empty());
}
