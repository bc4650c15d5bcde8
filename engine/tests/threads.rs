//! Multi-threaded stress test: 4 threads run disjoint write workloads (with aborts)
//! and concurrent scans on one table; the final contents must equal the model.

mod common;

use common::*;
use memfdw_engine::*;

#[test]
fn four_threads_disjoint_writers_match_model() {
    let engine: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        None,
    ));
    engine.create_table(table_id(1), table_def()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|w| std::thread::spawn(move || run_worker(engine, 1, w, 100 + w as u64, 1500, 100)))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = scan_all(engine, 1);
    let mut expected = std::collections::BTreeMap::new();
    for w in 0..4 {
        for (k, v) in plan(100 + w as u64, 1500).1 {
            expected.insert((w, k), v);
        }
    }
    assert_eq!(all, expected);
    assert_eq!(
        engine.table_stats(table_id(1)).unwrap().rows as usize,
        expected.len()
    );
    assert_eq!(
        engine.table_stats(table_id(1)).unwrap().index_entries,
        expected.len()
    );
}

#[test]
fn conflicting_updates_exactly_one_wins() {
    let engine: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        None,
    ));
    engine.create_table(table_id(2), table_def()).unwrap();
    let t = engine.table(table_id(2)).unwrap();
    let mut setup = engine.begin();
    let rowid = setup
        .insert(&t, &pack(&t.layout, 0, 0, "0"), Stmt { cid: 0, sub: 1 })
        .unwrap();
    let tid0 = setup.commit().unwrap();
    drop(t);
    // Every thread updates the same row from the same read version: one commit wins.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let wins: usize = (0..4)
        .map(|w| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                let t = engine.table(table_id(2)).unwrap();
                let mut txn = engine.begin();
                txn.update(
                    &t,
                    rowid,
                    tid0,
                    &pack(&t.layout, 0, 0, &format!("w{w}")),
                    Stmt { cid: 1, sub: 1 },
                )
                .unwrap();
                b.wait();
                match txn.commit() {
                    Ok(_) => 1,
                    Err(Error::Conflict(AbortReason::WriteConflict)) => 0,
                    Err(e) => panic!("unexpected {e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(wins, 1);
    assert_eq!(scan_all(engine, 2).len(), 1);
}
