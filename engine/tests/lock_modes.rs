//! PostgreSQL's four row-lock modes: the conflict table, several holders of one row,
//! upgrades, savepoint rollback of an upgrade, and concurrent lockers that never hold
//! conflicting modes at once.

mod common;

use common::{engine, table_id};
use memfdw_engine::*;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODES: [LockMode; 4] = [
    LockMode::KeyShare,
    LockMode::Share,
    LockMode::NoKeyUpdate,
    LockMode::Update,
];

/// PostgreSQL's documented table ("Conflicting Row-Level Locks"), written out rather
/// than computed: row = held, column = requested.
const PG_CONFLICTS: [[bool; 4]; 4] = [
    [false, false, false, true],
    [false, false, true, true],
    [false, true, true, true],
    [true, true, true, true],
];

fn one_row_table(n: u32) -> (&'static Engine, TableHandle, RowId) {
    let e = engine();
    let def = TableDef {
        database: 1,
        name: "m".into(),
        columns: vec![ColumnDef::new("n", ColumnType::Int8, false)],
    };
    e.create_table(table_id(n), def).unwrap();
    let t = e.table(table_id(n)).unwrap();
    let mut txn = e.begin();
    let row = t.layout.pack(&[Some(&0i64.to_le_bytes())]).unwrap();
    let r = txn.insert(&t, &row, Stmt { cid: 1, sub: 1 }).unwrap();
    txn.commit().unwrap();
    (e, t, r)
}

fn held(l: RowLock) -> bool {
    matches!(l, RowLock::Locked { .. })
}

#[test]
fn modes_conflict_as_in_postgresql() {
    let (e, t, r) = one_row_table(1);
    for (i, &a) in MODES.iter().enumerate() {
        for (j, &b) in MODES.iter().enumerate() {
            let mut t1 = e.begin();
            let mut t2 = e.begin();
            assert!(held(t1.lock_row(&t, r, 1, a).unwrap()));
            let got = t2.lock_row(&t, r, 1, b).unwrap();
            assert_eq!(
                matches!(got, RowLock::Busy { .. }),
                PG_CONFLICTS[i][j],
                "{a:?} held, {b:?} requested: {got:?}"
            );
            assert_eq!(a.conflicts(b), PG_CONFLICTS[i][j]);
            t2.abort();
            t1.abort();
        }
    }
    // And nothing is left behind.
    let mut t3 = e.begin();
    assert!(matches!(
        t3.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: true, .. }
    ));
}

#[test]
fn many_share_holders_and_the_last_one_out_frees_the_row() {
    let (e, t, r) = one_row_table(2);
    let mut s1 = e.begin();
    let mut s2 = e.begin();
    let mut k3 = e.begin();
    let mut w = e.begin();
    assert!(held(s1.lock_row(&t, r, 1, LockMode::Share).unwrap()));
    assert!(held(s2.lock_row(&t, r, 1, LockMode::Share).unwrap()));
    assert!(held(k3.lock_row(&t, r, 1, LockMode::KeyShare).unwrap()));
    assert!(matches!(
        w.lock_row(&t, r, 1, LockMode::NoKeyUpdate).unwrap(),
        RowLock::Busy { .. }
    ));
    s1.abort();
    assert!(matches!(
        w.lock_row(&t, r, 1, LockMode::NoKeyUpdate).unwrap(),
        RowLock::Busy { .. }
    ));
    s2.abort();
    // Only a key-share holder is left: no key update goes ahead beside it.
    assert!(held(w.lock_row(&t, r, 1, LockMode::NoKeyUpdate).unwrap()));
    let mut d = e.begin();
    assert!(matches!(
        d.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Busy { .. }
    ));
    k3.abort();
    assert!(matches!(
        d.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Busy { .. }
    ));
    w.abort();
    assert!(held(d.lock_row(&t, r, 1, LockMode::Update).unwrap()));
    d.abort();
}

#[test]
fn an_upgrade_waits_for_other_share_holders() {
    let (e, t, r) = one_row_table(3);
    let mut a = e.begin();
    let mut b = e.begin();
    assert!(held(a.lock_row(&t, r, 1, LockMode::Share).unwrap()));
    assert!(held(b.lock_row(&t, r, 1, LockMode::Share).unwrap()));
    // A lock the transaction holds never blocks it; another's does.
    assert!(held(a.lock_row(&t, r, 1, LockMode::KeyShare).unwrap()));
    // It waits, holding a lock already (it may not queue behind those waiting for it).
    assert!(matches!(
        a.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Busy { holding: true, .. }
    ));
    let mut c0 = e.begin();
    assert!(matches!(
        c0.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Busy { holding: false, .. }
    ));
    c0.abort();
    b.abort();
    assert!(matches!(
        a.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: false, .. }
    ));
    let mut c = e.begin();
    assert!(matches!(
        c.lock_row(&t, r, 1, LockMode::KeyShare).unwrap(),
        RowLock::Busy { .. }
    ));
    a.abort();
    assert!(held(c.lock_row(&t, r, 1, LockMode::KeyShare).unwrap()));
    c.abort();
}

#[test]
fn rolling_back_an_upgrade_keeps_the_weaker_lock() {
    let (e, t, r) = one_row_table(4);
    let mut a = e.begin();
    let mut b = e.begin();
    assert!(held(a.lock_row(&t, r, 1, LockMode::KeyShare).unwrap()));
    assert!(matches!(
        a.lock_row(&t, r, 2, LockMode::Update).unwrap(),
        RowLock::Locked { fresh: true, .. }
    ));
    assert!(matches!(
        b.lock_row(&t, r, 1, LockMode::KeyShare).unwrap(),
        RowLock::Busy { .. }
    ));
    a.rollback_to(2);
    // The key-share lock of subtransaction 1 is still there...
    assert!(held(b.lock_row(&t, r, 1, LockMode::KeyShare).unwrap()));
    let mut c = e.begin();
    assert!(matches!(
        c.lock_row(&t, r, 1, LockMode::Update).unwrap(),
        RowLock::Busy { .. }
    ));
    // ... and goes with its transaction.
    a.abort();
    b.abort();
    assert!(held(c.lock_row(&t, r, 1, LockMode::Update).unwrap()));
    c.abort();
}

#[test]
fn a_busy_lock_names_the_subtransaction_to_wait_for() {
    let (e, t, r) = one_row_table(5);
    let mut a = e.begin();
    a.set_lock_tag(rowlock::pack_tag(7, 99));
    assert!(held(a.lock_row(&t, r, 3, LockMode::NoKeyUpdate).unwrap()));
    let mut b = e.begin();
    match b.lock_row(&t, r, 1, LockMode::Share).unwrap() {
        RowLock::Busy { holder, .. } => assert_eq!(rowlock::unpack_tag(holder), (7, 99, 3)),
        other => panic!("{other:?}"),
    }
    a.abort();
    b.abort();
}

/// Threads lock one row in random modes, many times; whoever holds a mode counts
/// itself in, and checks that no conflicting mode is counted at the same time.
#[test]
fn concurrent_lockers_never_hold_conflicting_modes() {
    let (e, t, r) = one_row_table(6);
    let t = Arc::new(t);
    let holding: Arc<[AtomicI64; 4]> = Arc::new(Default::default());
    let threads: Vec<_> = (0..4u64)
        .map(|seed| {
            let (t, holding) = (t.clone(), holding.clone());
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(seed + 1);
                for _ in 0..2000 {
                    let mode = MODES[rng.below(4) as usize];
                    let mut txn = e.begin();
                    let start = Instant::now();
                    loop {
                        match txn.lock_row(&t, r, 1, mode).unwrap() {
                            RowLock::Locked { .. } => break,
                            RowLock::Busy { holder, .. } => {
                                assert!(
                                    start.elapsed() < Duration::from_secs(30),
                                    "waits for {holder:#x}"
                                );
                                txn.wait_row(&t, r, holder, Duration::from_millis(1));
                            }
                            RowLock::Gone => panic!("row gone"),
                        }
                    }
                    txn.stop_waiting();
                    holding[mode as usize].fetch_add(1, Ordering::SeqCst);
                    for other in MODES {
                        if mode.conflicts(other) && other != mode {
                            assert_eq!(holding[other as usize].load(Ordering::SeqCst), 0);
                        }
                    }
                    if mode.conflicts(mode) {
                        assert_eq!(holding[mode as usize].load(Ordering::SeqCst), 1);
                    }
                    std::hint::spin_loop();
                    holding[mode as usize].fetch_sub(1, Ordering::SeqCst);
                    txn.abort();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let mut last = e.begin();
    assert!(held(last.lock_row(&t, r, 1, LockMode::Update).unwrap()));
}
