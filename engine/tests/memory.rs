//! Memory held by a transaction comes back when it ends, not only after later work.

mod common;

use common::*;
use memfdw_engine::*;

#[test]
fn an_aborted_big_insert_gives_its_memory_back_at_once() {
    let e = engine();
    e.create_table(table_id(1), table_def()).unwrap();
    let t = e.table(table_id(1)).unwrap();
    let mut txn = e.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: e.next_index_id(),
            name: "k".into(),
            columns: vec![0, 1],
            unique: true,
            primary: true,
        },
    )
    .unwrap();
    txn.commit().unwrap();
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
