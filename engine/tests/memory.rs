//! Memory held by a transaction comes back when it ends, not only after later work.

mod common;

use common::*;
use memfdw_engine::*;

#[test]
fn an_aborted_big_insert_gives_its_memory_back_at_once() {
    let e = engine();
    let t = table_with_key(e, 1);
    e.reclaim();
    let before = e.memory().in_use;
    for rollback_to_savepoint in [false, true] {
        let mut txn = e.begin();
        for k in 0..100_000 {
            txn.insert(
                &t,
                &pack(&t.layout, 0, k, "some value"),
                Stmt { cid: 0, sub: 2 },
            )
            .unwrap();
        }
        let during = e.memory().in_use;
        assert!(during > before + 10_000_000, "{before} -> {during}");
        if rollback_to_savepoint {
            txn.rollback_to(2);
            txn.commit().unwrap();
        } else {
            txn.abort();
        }
        let after = e.memory().in_use;
        assert!(
            after < before + 256 * 1024,
            "memory held after the rollback: {before} -> {during} -> {after}"
        );
    }
}

#[test]
fn a_big_delete_on_a_full_engine_needs_only_what_it_frees() {
    let e: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 32 << 20,
        },
        None,
    ));
    let t = table_with_key(e, 1);
    // Fill with tiny rows until the engine refuses more.
    let mut n = 0i64;
    'fill: loop {
        let mut txn = e.begin();
        for k in n..n + 1000 {
            if let Err(err) = txn.insert(&t, &pack(&t.layout, 0, k, "x"), Stmt { cid: 0, sub: 1 }) {
                assert_eq!(err.sqlstate(), "53200");
                txn.abort();
                break 'fill;
            }
        }
        txn.commit().unwrap();
        n += 1000;
    }
    assert!(n > 50_000, "{n} rows");
    // Delete a tenth of them in one transaction: a delete's bookkeeping (about 115
    // bytes: two retired objects and two deferred node frees) is most of what such a
    // tiny row takes (about 125), and deletes may use the eighth of the limit kept
    // above it. (This engine counts only what it is told, not the write set; the e2e
    // test checks the real arena.)
    let mut txn = e.begin();
    let (mut cursor, mut batch) = (ScanCursor::new(), RowBatch::new());
    let mut victims = Vec::new();
    while !cursor.done() {
        txn.scan(&t, &mut cursor, 1, &mut batch, 4096).unwrap();
        while let Some(r) = batch.next() {
            victims.push((r.rowid, r.tid));
        }
    }
    let cut = victims.len() / 10;
    for &(rowid, tid) in &victims[..cut] {
        txn.delete(&t, rowid, tid, Stmt { cid: 1, sub: 1 })
            .unwrap_or_else(|err| panic!("deleting {cut} of {n} rows: {err}"));
    }
    txn.commit().unwrap();
    let left = victims.len() - cut;
    assert_eq!(e.table_stats(table_id(1)).unwrap().rows as usize, left);
    // Deleting everything left at once does not fit: refused cleanly, nothing deleted.
    let mut txn = e.begin();
    let err = victims[cut..]
        .iter()
        .try_for_each(|&(rowid, tid)| {
            txn.delete(&t, rowid, tid, Stmt { cid: 1, sub: 1 })
                .map(|_| ())
        })
        .unwrap_err();
    assert_eq!(err.sqlstate(), "53200");
    txn.abort();
    assert_eq!(e.table_stats(table_id(1)).unwrap().rows as usize, left);
}
