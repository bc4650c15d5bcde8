//! Row locks: queued read-modify-write updates lose nothing and fail nothing, waits
//! end when the holder ends, deadlocks are found, savepoint rollback releases locks.

mod common;

use common::{engine, table_id};

use memfdw_engine::*;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

fn def() -> TableDef {
    TableDef {
        database: 1,
        name: "c".into(),
        columns: vec![ColumnDef::new("n", ColumnType::Int8, false)],
    }
}

fn val(t: &TableHandle, row: &[u8]) -> i64 {
    i64::from_le_bytes(t.layout.get(row, 0).unwrap().try_into().unwrap())
}

fn pack(t: &TableHandle, n: i64) -> Vec<u8> {
    t.layout.pack(&[Some(&n.to_le_bytes())]).unwrap()
}

/// Locks `rowid`, waiting as the FDW does; Err(()) on deadlock.
fn lock(
    txn: &mut TxnHandle,
    t: &TableHandle,
    rowid: RowId,
    sub: u32,
) -> std::result::Result<Tid, ()> {
    let start = Instant::now();
    loop {
        match txn.lock_row(t, rowid, sub, LockMode::Update).unwrap() {
            RowLock::Locked { tid, .. } => {
                txn.stop_waiting();
                return Ok(tid);
            }
            RowLock::Gone => panic!("row gone"),
            RowLock::Busy { holder, .. } => {
                if start.elapsed() > Duration::from_millis(50) && txn.deadlocked() {
                    txn.stop_waiting();
                    return Err(());
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "waited forever for {holder}"
                );
                txn.wait_row(t, rowid, holder, Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn queued_increments_lose_nothing_and_fail_nothing() {
    let e = engine();
    e.create_table(table_id(1), def()).unwrap();
    let t = e.table(table_id(1)).unwrap();
    let mut txn = e.begin();
    let rowid = txn
        .insert(&t, &pack(&t, 0), Stmt { cid: 1, sub: 1 })
        .unwrap();
    txn.commit().unwrap();
    let hs: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let t = e.table(table_id(1)).unwrap();
                let mut buf = Vec::new();
                for _ in 0..200 {
                    let mut txn = e.begin();
                    let tid = lock(&mut txn, &t, rowid, 1).expect("no deadlock with one row");
                    let seen = txn.get(&t, rowid, 1, &mut buf).unwrap();
                    assert_eq!(seen, tid, "the locked version is the newest");
                    let n = val(&t, &buf);
                    txn.update(&t, rowid, tid, &pack(&t, n + 1), Stmt { cid: 1, sub: 1 })
                        .unwrap();
                    txn.commit().expect("a locked update never conflicts");
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    let mut txn = e.begin();
    let mut buf = Vec::new();
    txn.get(&t, rowid, 1, &mut buf).unwrap();
    assert_eq!(val(&t, &buf), 1600);
}

#[test]
fn a_cycle_of_waits_is_a_deadlock_and_the_survivor_goes_on() {
    let e = engine();
    e.create_table(table_id(2), def()).unwrap();
    let t = e.table(table_id(2)).unwrap();
    let mut txn = e.begin();
    let a = txn
        .insert(&t, &pack(&t, 0), Stmt { cid: 1, sub: 1 })
        .unwrap();
    let b = txn
        .insert(&t, &pack(&t, 0), Stmt { cid: 1, sub: 1 })
        .unwrap();
    txn.commit().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = [(a, b), (b, a)]
        .into_iter()
        .map(|(first, second)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let t = e.table(table_id(2)).unwrap();
                let mut txn = e.begin();
                lock(&mut txn, &t, first, 1).unwrap();
                barrier.wait();
                match lock(&mut txn, &t, second, 1) {
                    Ok(_) => {
                        txn.commit().unwrap();
                        true
                    }
                    Err(()) => {
                        txn.abort();
                        false
                    }
                }
            })
        })
        .collect();
    let results: Vec<bool> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.contains(&false), "somebody must see the deadlock");
}

#[test]
fn savepoint_rollback_releases_its_row_locks() {
    let e = engine();
    e.create_table(table_id(3), def()).unwrap();
    let t = e.table(table_id(3)).unwrap();
    let mut txn = e.begin();
    let r = txn
        .insert(&t, &pack(&t, 0), Stmt { cid: 1, sub: 1 })
        .unwrap();
    txn.commit().unwrap();
    let mut t1 = e.begin();
    let tid = lock(&mut t1, &t, r, 2).unwrap();
    t1.update(&t, r, tid, &pack(&t, 5), Stmt { cid: 1, sub: 2 })
        .unwrap();
    let mut t2 = e.begin();
    assert!(matches!(
        t2.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Busy { .. }
    ));
    t1.rollback_to(2);
    assert!(matches!(
        t2.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: true, .. }
    ));
    // A lock taken and given back leaves the row free.
    t2.unlock_row(&t, r);
    assert!(matches!(
        t1.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: true, .. }
    ));
    t1.commit().unwrap();
    assert!(matches!(
        t2.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: true, .. }
    ));
    t2.abort();
    let mut t3 = e.begin();
    assert!(matches!(
        t3.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: true, .. }
    ));
}
