//! TRUNCATE: constant engine memory (works on a full engine), transactional (rollback,
//! savepoints, writes before and after it in the same transaction), logged so that
//! replay gives the same table.

mod common;

use common::*;
use memfdw_engine::*;

const S1: Stmt = Stmt { cid: 0, sub: 1 };

fn logged_engine(limit: usize) -> (&'static Engine, &'static Recorder) {
    let log: &'static Recorder = Box::leak(Box::default());
    let e: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: limit,
        },
        Some(Box::new(Forward(log))),
    ));
    table_with_key(e, 1);
    (e, log)
}

fn fill(e: &'static Engine, keys: std::ops::Range<i64>, val: &str) {
    let t = e.table(table_id(1)).unwrap();
    let mut txn = e.begin();
    for k in keys {
        txn.insert(&t, &pack(&t.layout, 0, k, val), S1).unwrap();
    }
    txn.commit().unwrap();
}

fn replayed(log: &Recorder) -> &'static Engine {
    let b: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        None,
    ));
    replay_all(b, log.0.lock().unwrap().iter()).unwrap();
    b
}

#[test]
fn truncate_empties_a_full_engine() {
    let (e, log) = logged_engine(16 << 20);
    let t = e.table(table_id(1)).unwrap();
    let mut n = 0i64;
    // Fill until the engine refuses more.
    loop {
        let mut txn = e.begin();
        let r = (n..n + 1000).try_for_each(|k| {
            txn.insert(&t, &pack(&t.layout, 0, k, &"x".repeat(200)), S1)
                .map(|_| ())
        });
        match r.and_then(|_| txn.commit().map(|_| ())) {
            Ok(()) => n += 1000,
            Err(err) => {
                assert_eq!(err.sqlstate(), "53200");
                break;
            }
        }
    }
    assert!(n > 10_000);
    drop(t);
    // Row by row, the delete cannot even be staged; TRUNCATE can.
    let mut txn = e.begin();
    let t = txn.table(table_id(1)).unwrap();
    txn.truncate(&t, 1).unwrap();
    txn.commit().unwrap();
    assert_eq!(scan_all(e, 1).len(), 0);
    assert_eq!(e.table_stats(table_id(1)).unwrap().rows, 0);
    // (That the freed memory is reused is checked against a real server, whose arena
    // reports what is in use; this engine only counts what it was told.)
    assert_eq!(scan_all(replayed(log), 1), scan_all(e, 1));
}

#[test]
fn writes_before_and_after_a_truncate_in_one_transaction() {
    let (e, log) = logged_engine(1 << 30);
    fill(e, 0..100, "old");
    let mut txn = e.begin();
    let t = txn.table(table_id(1)).unwrap();
    txn.insert(&t, &pack(&t.layout, 1, 1, "before"), S1)
        .unwrap();
    txn.truncate(&t, 1).unwrap();
    let t = txn.table(table_id(1)).unwrap();
    // The old keys are free again in the emptied table.
    for k in 0..3 {
        txn.insert(&t, &pack(&t.layout, 0, k, "after"), Stmt { cid: 2, sub: 1 })
            .unwrap();
    }
    let mut batch = RowBatch::new();
    let mut cursor = ScanCursor::new();
    txn.scan(&t, &mut cursor, 3, &mut batch, 1000).unwrap();
    assert_eq!(batch.len(), 3, "the transaction sees the table emptied");
    // Others still see the committed rows until the commit.
    assert_eq!(scan_all(e, 1).len(), 100);
    txn.commit().unwrap();
    let rows = scan_all(e, 1);
    assert_eq!(rows.len(), 3);
    assert!(rows.values().all(|v| v == "after"));
    assert_eq!(scan_all(replayed(log), 1), rows);
}

#[test]
fn a_rolled_back_truncate_leaves_everything() {
    let (e, log) = logged_engine(1 << 30);
    fill(e, 0..100, "old");
    let mut txn = e.begin();
    let t = txn.table(table_id(1)).unwrap();
    txn.truncate(&t, 1).unwrap();
    let t = txn.table(table_id(1)).unwrap();
    txn.insert(&t, &pack(&t.layout, 0, 7, "lost"), S1).unwrap();
    txn.abort();
    assert_eq!(scan_all(e, 1).len(), 100);
    // Savepoint: the TRUNCATE of subtransaction 2 is rolled back, the insert of 1 kept.
    let mut txn = e.begin();
    let t = txn.table(table_id(1)).unwrap();
    txn.insert(&t, &pack(&t.layout, 2, 1, "kept"), S1).unwrap();
    txn.truncate(&t, 2).unwrap();
    let t2 = txn.table(table_id(1)).unwrap();
    txn.insert(
        &t2,
        &pack(&t2.layout, 3, 1, "gone"),
        Stmt { cid: 1, sub: 2 },
    )
    .unwrap();
    txn.rollback_to(2);
    let t = txn.table(table_id(1)).unwrap();
    txn.insert(
        &t,
        &pack(&t.layout, 4, 1, "also kept"),
        Stmt { cid: 2, sub: 3 },
    )
    .unwrap();
    txn.commit().unwrap();
    let rows = scan_all(e, 1);
    assert_eq!(rows.len(), 102);
    assert_eq!(rows[&(2, 1)], "kept");
    assert_eq!(rows[&(4, 1)], "also kept");
    assert!(!rows.contains_key(&(3, 1)));
    assert_eq!(scan_all(replayed(log), 1), rows);
}
