//! Isolation levels: bank transfers keep their invariant under every level (audits
//! under repeatable read and serializable always see it), write skew and phantoms are
//! refused under serializable (and repeatable read), and READ COMMITTED shows what
//! PostgreSQL's does.

mod common;

use common::{engine, table_id, Rng};
use memfdw_engine::txn::Isolation;
use memfdw_engine::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::acct::{bal, key, row, setup};

/// Reads account `id` through the index: (row id, tid, balance).
fn read(
    txn: &mut TxnHandle,
    t: &TableHandle,
    oid: u32,
    id: i32,
) -> Result<Option<(RowId, Tid, i64)>> {
    let mut scan = IndexScan::new(oid, &key(id), None, false);
    scan.unique_point = true;
    let mut batch = RowBatch::new();
    txn.index_scan(t, &mut scan, 1, &mut batch, 4)?;
    Ok(batch.next().map(|r| (r.rowid, r.tid, bal(t, r.data))))
}

fn sum_all(txn: &mut TxnHandle, t: &TableHandle) -> Result<i64> {
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    let mut sum = 0;
    while !cursor.done() {
        txn.scan(t, &mut cursor, 1, &mut batch, 7)?;
        while let Some(r) = batch.next() {
            sum += bal(t, r.data);
        }
    }
    Ok(sum)
}

fn bank(iso: Isolation, oid: u32) {
    let e = engine();
    const N: i32 = 20;
    let t = setup(e, oid, N, 100);
    drop(t);
    let stop = Arc::new(AtomicBool::new(false));
    let audits = Arc::new(AtomicU64::new(0));
    let transfers: Vec<_> = (0..3)
        .map(|w| {
            let audits = audits.clone();
            std::thread::spawn(move || {
                let t = e.table(table_id(oid)).unwrap();
                let mut rng = Rng::new(w + 1);
                let mut done = 0;
                let started = std::time::Instant::now();
                // At least 300 transfers each, and on until an audit has committed
                // while they run (the auditor may start late on a loaded machine).
                while done < 300
                    || (audits.load(Ordering::Relaxed) == 0
                        && started.elapsed() < std::time::Duration::from_secs(20))
                {
                    let (a, b) = (rng.below(N as u64) as i32, rng.below(N as u64) as i32);
                    if a == b {
                        continue;
                    }
                    let amount = rng.below(30) as i64;
                    let mut txn = e.begin();
                    txn.set_isolation(iso).unwrap();
                    let res = (|| -> Result<()> {
                        let (ra, ta, ba) = read(&mut txn, &t, oid, a)?.unwrap();
                        let (rb, tb, bb) = read(&mut txn, &t, oid, b)?.unwrap();
                        let ((ta, ba), (tb, bb)) = if iso == Isolation::ReadCommitted {
                            // PostgreSQL-style: lock (in row-id order: this test has no
                            // deadlock detection), then write the newest versions.
                            for r in [ra.min(rb), ra.max(rb)] {
                                while let RowLock::Busy { holder, .. } =
                                    txn.lock_row(&t, r, 1, LockMode::Update).unwrap()
                                {
                                    txn.wait_row(
                                        &t,
                                        r,
                                        holder,
                                        std::time::Duration::from_millis(5),
                                    );
                                }
                            }
                            let mut buf = Vec::new();
                            let mut newest = |r| {
                                let tid = txn.get(&t, r, 1, &mut buf).unwrap();
                                (tid, bal(&t, &buf))
                            };
                            (newest(ra), newest(rb))
                        } else {
                            ((ta, ba), (tb, bb))
                        };
                        let s2 = Stmt { cid: 2, sub: 1 };
                        txn.update(&t, ra, ta, &row(&t, a, ba - amount), s2)?;
                        txn.update(&t, rb, tb, &row(&t, b, bb + amount), s2)?;
                        txn.commit()?;
                        Ok(())
                    })();
                    match res {
                        Ok(()) => done += 1,
                        Err(Error::Conflict(_)) => txn.abort(),
                        Err(other) => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    let auditor = {
        let (stop, audits) = (stop.clone(), audits.clone());
        std::thread::spawn(move || {
            let t = e.table(table_id(oid)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let mut txn = e.begin();
                txn.set_isolation(iso).unwrap();
                let r = sum_all(&mut txn, &t).and_then(|s| txn.commit().map(|_| s));
                match r {
                    Ok(s) => {
                        if iso != Isolation::ReadCommitted {
                            assert_eq!(s, N as i64 * 100, "a committed audit saw a torn transfer");
                        }
                        audits.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Conflict(_)) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
        })
    };
    transfers.into_iter().for_each(|h| h.join().unwrap());
    stop.store(true, Ordering::Relaxed);
    auditor.join().unwrap();
    let t = e.table(table_id(oid)).unwrap();
    let mut txn = e.begin();
    assert_eq!(sum_all(&mut txn, &t).unwrap(), N as i64 * 100);
    assert!(
        audits.load(Ordering::Relaxed) > 0,
        "no audit ever committed"
    );
}

#[test]
fn bank_transfers_keep_the_total_read_committed() {
    bank(Isolation::ReadCommitted, 1);
}

#[test]
fn bank_transfers_keep_the_total_repeatable_read() {
    bank(Isolation::RepeatableRead, 2);
}

#[test]
fn bank_transfers_keep_the_total_serializable() {
    bank(Isolation::Serializable, 3);
}

#[test]
fn write_skew_is_refused_under_serializable_and_allowed_below() {
    for (iso, oid) in [
        (Isolation::Serializable, 10),
        (Isolation::RepeatableRead, 11),
        (Isolation::ReadCommitted, 12),
    ] {
        let e = engine();
        let t = setup(e, oid, 2, 100);
        // Each checks that both balances cover the withdrawal, then withdraws from one.
        let mut t1 = e.begin();
        let mut t2 = e.begin();
        t1.set_isolation(iso).unwrap();
        t2.set_isolation(iso).unwrap();
        let withdraw = |txn: &mut TxnHandle, from: i32| -> Result<()> {
            let (r0, v0, b0) = read(txn, &t, oid, 0)?.unwrap();
            let (r1, v1, b1) = read(txn, &t, oid, 1)?.unwrap();
            assert!(b0 + b1 >= 150);
            let (r, v, b) = if from == 0 {
                (r0, v0, b0)
            } else {
                (r1, v1, b1)
            };
            txn.update(&t, r, v, &row(&t, from, b - 150), Stmt { cid: 2, sub: 1 })?;
            Ok(())
        };
        withdraw(&mut t1, 0).unwrap();
        withdraw(&mut t2, 1).unwrap();
        let r1 = t1.commit();
        let r2 = t2.commit();
        if iso != Isolation::Serializable {
            // As PostgreSQL: snapshot isolation allows write skew.
            assert!(r1.is_ok() && r2.is_ok(), "{iso:?} allows write skew");
        } else {
            assert!(r1.is_ok(), "{iso:?}: the first committer wins");
            assert_eq!(
                r2,
                Err(Error::Conflict(AbortReason::ReadChanged)),
                "{iso:?}"
            );
        }
    }
}

#[test]
fn phantoms_are_refused_under_serializable() {
    let e = engine();
    let t = setup(e, 20, 5, 0);
    // T1 looks for account 7 (absent), T2 creates it, T1 then writes elsewhere.
    let mut t1 = e.begin();
    t1.set_isolation(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut t1, &t, 20, 7).unwrap(), None);
    let mut t2 = e.begin();
    t2.insert(&t, &row(&t, 7, 1), Stmt { cid: 1, sub: 1 })
        .unwrap();
    t2.commit().unwrap();
    let (r, v, b) = read(&mut t1, &t, 20, 0).unwrap().unwrap();
    t1.update(&t, r, v, &row(&t, 0, b + 1), Stmt { cid: 2, sub: 1 })
        .unwrap();
    assert_eq!(t1.commit(), Err(Error::Conflict(AbortReason::RangeChanged)));
    // Only the range read counts: an insert elsewhere in the table is no phantom.
    let mut t1b = e.begin();
    t1b.set_isolation(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut t1b, &t, 20, 8).unwrap(), None);
    let mut t2b = e.begin();
    t2b.insert(&t, &row(&t, 9, 1), Stmt { cid: 1, sub: 1 })
        .unwrap();
    t2b.commit().unwrap();
    let (r, v, b) = read(&mut t1b, &t, 20, 1).unwrap().unwrap();
    t1b.update(&t, r, v, &row(&t, 1, b + 1), Stmt { cid: 2, sub: 1 })
        .unwrap();
    assert!(t1b.commit().is_ok(), "key 9 is outside the range read");
    // Repeatable read: a row changed after the start reads as it was.
    let mut t3 = e.begin();
    t3.set_isolation(Isolation::RepeatableRead).unwrap();
    let (_, _, b2) = read(&mut t3, &t, 20, 2).unwrap().unwrap();
    let mut t4 = e.begin();
    let (r2, v2, _) = read(&mut t4, &t, 20, 2).unwrap().unwrap();
    t4.update(&t, r2, v2, &row(&t, 2, 99), Stmt { cid: 1, sub: 1 })
        .unwrap();
    t4.commit().unwrap();
    let (r2b, v2b, b2b) = read(&mut t3, &t, 20, 2).unwrap().unwrap();
    assert_eq!((r2b, v2b, b2b), (r2, v2, b2), "the snapshot's version");
    // ... but writing it fails.
    assert_eq!(
        t3.update(&t, r2b, v2b, &row(&t, 2, 5), Stmt { cid: 2, sub: 1 }),
        Err(Error::Conflict(AbortReason::WriteConflict))
    );
    // A read-only serializable transaction reads its snapshot and never fails, even
    // when what it read changed.
    let mut t5 = e.begin();
    t5.set_isolation(Isolation::Serializable).unwrap();
    assert!(read(&mut t5, &t, 20, 3).unwrap().is_some());
    let mut t6 = e.begin();
    let (r3, v3, _) = read(&mut t6, &t, 20, 3).unwrap().unwrap();
    t6.delete(&t, r3, v3, Stmt { cid: 1, sub: 1 }).unwrap();
    t6.commit().unwrap();
    assert!(
        read(&mut t5, &t, 20, 3).unwrap().is_some(),
        "deleted after the snapshot"
    );
    assert_eq!(t5.commit(), Ok(memfdw_engine::Tid::NONE));
    // A serializable writer whose reads went stale fails at commit.
    let mut t7 = e.begin();
    t7.set_isolation(Isolation::Serializable).unwrap();
    let (_, _, b4) = read(&mut t7, &t, 20, 4).unwrap().unwrap();
    let mut t8 = e.begin();
    let (r4, v4, _) = read(&mut t8, &t, 20, 4).unwrap().unwrap();
    t8.update(&t, r4, v4, &row(&t, 4, b4 + 7), Stmt { cid: 1, sub: 1 })
        .unwrap();
    t8.commit().unwrap();
    let (r0, v0, b0) = read(&mut t7, &t, 20, 0).unwrap().unwrap();
    t7.update(&t, r0, v0, &row(&t, 0, b0 + b4), Stmt { cid: 2, sub: 1 })
        .unwrap();
    assert_eq!(t7.commit(), Err(Error::Conflict(AbortReason::ReadChanged)));
}

/// A serializable transaction that read a whole table fails at commit when another
/// transaction committed a write to that table after it started (a row it did not
/// read: an insert, and a delete), and commits when the write went to another table.
#[test]
fn a_whole_table_read_conflicts_with_any_later_committed_write_to_it() {
    let e = engine();
    let t = setup(e, 40, 5, 0);
    let other = setup(e, 41, 5, 0);
    for (write_other_table, delete) in [(false, false), (false, true), (true, false)] {
        let mut t1 = e.begin();
        t1.set_isolation(Isolation::Serializable).unwrap();
        sum_all(&mut t1, &t).unwrap();
        let mut t2 = e.begin();
        let target = if write_other_table { &other } else { &t };
        if delete {
            let (r, v, _) = read(&mut t2, target, 40, 4).unwrap().unwrap();
            t2.delete(target, r, v, Stmt { cid: 1, sub: 1 }).unwrap();
        } else {
            let id = 100 + write_other_table as i32;
            t2.insert(target, &row(target, id, 1), Stmt { cid: 1, sub: 1 })
                .unwrap();
        }
        t2.commit().unwrap();
        // T1 writes a row of the other table, which nobody else touched.
        let (r, v, b) = read(&mut t1, &other, 41, 0).unwrap().unwrap();
        t1.update(
            &other,
            r,
            v,
            &row(&other, 0, b + 1),
            Stmt { cid: 2, sub: 1 },
        )
        .unwrap();
        let r = t1.commit();
        if write_other_table {
            assert!(r.is_ok(), "{r:?}");
        } else {
            assert_eq!(
                r,
                Err(Error::Conflict(AbortReason::TableChanged)),
                "delete {delete}"
            );
        }
    }
}
