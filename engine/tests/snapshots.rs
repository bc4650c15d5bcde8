//! Snapshot reads: a snapshot sees the committed state at its TID, whatever commits
//! after it (updates, deletes, inserts, key changes), through sequential scans, index
//! scans and point reads; old versions are kept while a registered snapshot may read
//! them and reclaimed after. The property test checks every read of concurrent
//! snapshot readers against a multi-version model rebuilt from the commit history,
//! while a reclaimer runs the horizon queue as fast as it can.

mod common;

use common::acct::{key, row};
use common::{engine, Rng};
use memfdw_engine::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The accounts table (see `common::acct`), `n` accounts holding 100 each.
fn setup(e: &'static Engine, oid: u32, n: i32) -> TableHandle {
    common::acct::setup(e, oid, n, 100)
}

const STMT: Stmt = Stmt { cid: 1, sub: 1 };

fn unpack(t: &TableHandle, r: &[u8]) -> (i32, i64) {
    (
        i32::from_le_bytes(t.layout.get(r, 0).unwrap().try_into().unwrap()),
        i64::from_le_bytes(t.layout.get(r, 1).unwrap().try_into().unwrap()),
    )
}

/// Every row the transaction sees: row id -> (id, bal, tid), in batches of 3.
fn scan(txn: &mut TxnHandle, t: &TableHandle) -> BTreeMap<RowId, (i32, i64, Tid)> {
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    let mut out = BTreeMap::new();
    while !cursor.done() {
        txn.scan(t, &mut cursor, u32::MAX, &mut batch, 3).unwrap();
        while let Some(r) = batch.next() {
            let (id, bal) = unpack(t, r.data);
            assert!(
                out.insert(r.rowid, (id, bal, r.tid)).is_none(),
                "row seen twice"
            );
        }
        std::thread::yield_now();
    }
    out
}

/// The rows holding key `id` that the transaction sees through the index.
fn lookup(txn: &mut TxnHandle, t: &TableHandle, oid: u32, id: i32) -> Vec<(RowId, i32, i64)> {
    let mut scan = IndexScan::new(oid, &key(id), None, false);
    let mut batch = RowBatch::new();
    let mut out = Vec::new();
    while !scan.done() {
        txn.index_scan(t, &mut scan, u32::MAX, &mut batch, 2)
            .unwrap();
        while let Some(r) = batch.next() {
            let (k, bal) = unpack(t, r.data);
            out.push((r.rowid, k, bal));
        }
    }
    out
}

/// A read committed transaction reading at a snapshot taken now.
fn reader(e: &'static Engine) -> (TxnHandle, Tid) {
    let mut txn = e.begin();
    let s = txn.snapshot().unwrap();
    txn.set_read_snapshot(Some(s));
    (txn, s)
}

#[test]
fn a_snapshot_sees_the_state_at_its_start_and_its_versions_go_after_it() {
    let e = engine();
    let oid = 1;
    let t = setup(e, oid, 4);
    let (mut r, _) = reader(e);
    let before = scan(&mut r, &t);
    assert_eq!(before.len(), 4);
    let by_id = |m: &BTreeMap<RowId, (i32, i64, Tid)>, id: i32| {
        m.iter()
            .find(|(_, v)| v.0 == id)
            .map(|(&rid, &(_, b, tid))| (rid, b, tid))
    };
    // Another transaction updates 0, moves 1 to key 10, deletes 2, inserts 5.
    let mut w = e.begin();
    let (r0, _, v0) = by_id(&before, 0).unwrap();
    let (r1, _, v1) = by_id(&before, 1).unwrap();
    let (r2, _, v2) = by_id(&before, 2).unwrap();
    w.update(&t, r0, v0, &row(&t, 0, 7), STMT).unwrap();
    w.update(&t, r1, v1, &row(&t, 10, 100), STMT).unwrap();
    w.delete(&t, r2, v2, STMT).unwrap();
    w.insert(&t, &row(&t, 5, 1), STMT).unwrap();
    w.commit().unwrap();
    let stats = e.version_stats();
    assert_eq!(stats.versions, 3, "three replaced versions kept: {stats:?}");
    assert!(stats.bytes > 0 && stats.oldest.is_some());

    // The reader still sees the state at its snapshot, whichever way it reads.
    assert_eq!(scan(&mut r, &t), before);
    assert_eq!(lookup(&mut r, &t, oid, 1), vec![(r1, 1, 100)]);
    assert_eq!(
        lookup(&mut r, &t, oid, 10),
        vec![],
        "moved after the snapshot"
    );
    assert_eq!(
        lookup(&mut r, &t, oid, 2),
        vec![(r2, 2, 100)],
        "deleted after it"
    );
    assert_eq!(lookup(&mut r, &t, oid, 5), vec![], "inserted after it");
    let mut out = Vec::new();
    assert_eq!(r.get(&t, r0, u32::MAX, &mut out), Some(v0));
    assert_eq!(unpack(&t, &out), (0, 100));
    // The newest version is there for read committed's recheck of a locked row.
    assert!(r
        .get_newest(&t, r0, u32::MAX, &mut out)
        .is_some_and(|v| v > v0));
    assert_eq!(unpack(&t, &out), (0, 7));
    // A new snapshot sees the commit.
    let s2 = r.snapshot().unwrap();
    r.set_read_snapshot(Some(s2));
    assert_eq!(lookup(&mut r, &t, oid, 10), vec![(r1, 10, 100)]);
    assert_eq!(lookup(&mut r, &t, oid, 1), vec![]);
    assert_eq!(scan(&mut r, &t).len(), 4);

    // Nothing is reclaimed while the old snapshot is registered...
    e.reclaim_versions(usize::MAX);
    assert_eq!(e.version_stats().versions, 3);
    // ... everything once it is let go.
    r.retain_snapshots(None);
    e.reclaim_versions(usize::MAX);
    let stats = e.version_stats();
    assert_eq!(
        (stats.versions, stats.bytes, stats.queued),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.oldest, None);
    assert_eq!(
        t.index_entries(oid),
        Some(4),
        "stale keys and the deleted row's gone"
    );
    assert_eq!(t.stats().index_entries, 4, "the deleted row is unlinked");
    r.commit().unwrap();
}

#[test]
fn a_failed_commit_keeps_a_key_entry_an_older_snapshot_still_needs() {
    let e = engine();
    let oid = 5;
    let t = setup(e, oid, 1);
    let (mut r, _) = reader(e);
    let rows = scan(&mut r, &t);
    let (&rid, &(_, _, v0)) = rows.iter().next().unwrap();
    // Key 0 -> 10: the entry of key 0 stays while the reader's snapshot may need it.
    let mut w = e.begin();
    w.update(&t, rid, v0, &row(&t, 10, 100), STMT).unwrap();
    w.commit().unwrap();
    let entries = t.index_entries(oid);
    // Key 10 -> 0 again, by a commit that fails after linking its keys.
    let mut back = e.begin();
    let mut out = Vec::new();
    let v1 = back.get(&t, rid, u32::MAX, &mut out).unwrap();
    back.update(&t, rid, v1, &row(&t, 0, 100), STMT).unwrap();
    let mut other = e.begin();
    other.update(&t, rid, v1, &row(&t, 10, 7), STMT).unwrap();
    other.commit().unwrap();
    assert!(matches!(back.commit(), Err(Error::Conflict(_))));
    // The reader still finds the row through its key at its snapshot.
    assert_eq!(lookup(&mut r, &t, oid, 0), vec![(rid, 0, 100)]);
    assert_eq!(
        t.index_entries(oid),
        entries,
        "the failed commit took no entry away"
    );
    r.commit().unwrap();
    e.reclaim_versions(usize::MAX);
    assert_eq!(t.index_entries(oid), Some(1), "only the live key remains");
}

#[test]
fn every_way_a_transaction_ends_releases_its_snapshots() {
    let e = engine();
    let t = setup(e, 4, 2);
    let ends: [fn(&mut TxnHandle); 3] = [
        |t| drop(t.commit()),
        |t| t.abort(),
        |t| {
            // A commit that fails.
            let _ = t.commit();
        },
    ];
    for (n, end) in ends.iter().enumerate() {
        let (mut r, _) = reader(e);
        scan(&mut r, &t);
        if n == 2 {
            let mut w = e.begin();
            let rows = scan(&mut w, &t);
            let (&rid, &(id, bal, tid)) = rows.iter().next().unwrap();
            r.update(&t, rid, tid, &row(&t, id, bal + 1), STMT).unwrap();
            w.update(&t, rid, tid, &row(&t, id, bal + 2), STMT).unwrap();
            w.commit().unwrap();
        }
        assert!(e.version_stats().oldest.is_some());
        end(&mut r);
        assert_eq!(e.version_stats().oldest, None, "end #{n}");
    }
    // Dropping an unfinished transaction aborts it.
    let (mut r, _) = reader(e);
    scan(&mut r, &t);
    drop(r);
    assert_eq!(e.version_stats().oldest, None, "dropped");
}

#[test]
fn repeatable_read_keeps_its_snapshot_until_it_ends() {
    let e = engine();
    let t = setup(e, 2, 3);
    let mut rr = e.begin();
    rr.set_isolation(txn::Isolation::RepeatableRead).unwrap();
    let before = scan(&mut rr, &t);
    for round in 0..5 {
        let mut w = e.begin();
        for (&rid, &(id, bal, tid)) in &scan(&mut w, &t) {
            let _ = tid;
            let newest = {
                let mut out = Vec::new();
                w.get(&t, rid, u32::MAX, &mut out).unwrap()
            };
            w.update(&t, rid, newest, &row(&t, id, bal + round), STMT)
                .unwrap();
        }
        w.commit().unwrap();
        assert_eq!(scan(&mut rr, &t), before, "round {round}");
    }
    assert_eq!(e.version_stats().versions, 15);
    rr.commit().unwrap();
    e.reclaim_versions(usize::MAX);
    // Rows never written again lose their old versions too.
    assert_eq!(e.version_stats().versions, 0);
}

/// Did the write happen (a row deleted earlier in the transaction is not found)?
fn done(o: WriteOutcome) -> bool {
    o == WriteOutcome::Done
}

/// What a reader saw at a snapshot: the rows, and the row ids of a few index lookups.
type Observation = (Tid, BTreeMap<RowId, (i32, i64)>, Vec<(i32, Vec<RowId>)>);

/// One committed transaction of the history: its TID and after-images by row id.
type Commit = (Tid, Vec<(RowId, Option<(i32, i64)>)>);

#[test]
fn snapshot_reads_match_a_multi_version_model() {
    let e = engine();
    let oid = 3;
    let initial = 12;
    let t = Arc::new(setup(e, oid, initial));
    let history: Arc<Mutex<Vec<Commit>>> = Arc::default();
    let start = {
        let mut txn = e.begin();
        let s = scan(&mut txn, &t);
        txn.commit().unwrap();
        s.into_iter()
            .map(|(rid, (id, bal, _))| (rid, (id, bal)))
            .collect::<BTreeMap<_, _>>()
    };
    let start_tid = e.last_tid();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (t, history, stop) = (t.clone(), history.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(100 + w);
            let mut commits = 0;
            while commits < 1500 {
                let mut txn = e.begin();
                let rows = scan(&mut txn, &t);
                let mut writes = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let pick = rows
                        .iter()
                        .nth(rng.below(rows.len().max(1) as u64) as usize);
                    let r = match (rng.below(5), pick) {
                        (0, _) | (_, None) => {
                            let id = rng.below(40) as i32;
                            let bal = rng.below(1000) as i64;
                            txn.insert(&t, &row(&t, id, bal), STMT).map(|rid| {
                                writes.push((rid, Some((id, bal))));
                                Some(())
                            })
                        }
                        (1, Some((&rid, &(_, _, tid)))) => txn
                            .delete(&t, rid, tid, STMT)
                            .map(|o| done(o).then(|| writes.push((rid, None)))),
                        (2, Some((&rid, &(_, bal, tid)))) => {
                            let id = rng.below(40) as i32;
                            txn.update(&t, rid, tid, &row(&t, id, bal), STMT)
                                .map(|o| done(o).then(|| writes.push((rid, Some((id, bal))))))
                        }
                        (_, Some((&rid, &(id, bal, tid)))) => txn
                            .update(&t, rid, tid, &row(&t, id, bal + 1), STMT)
                            .map(|o| done(o).then(|| writes.push((rid, Some((id, bal + 1)))))),
                    };
                    if r.is_err() {
                        break;
                    }
                }
                // Later writes of one row win.
                let mut last: BTreeMap<RowId, Option<(i32, i64)>> = BTreeMap::new();
                for (rid, v) in writes {
                    last.insert(rid, v);
                }
                if let Ok(tid) = txn.commit() {
                    if tid != Tid::NONE {
                        history
                            .lock()
                            .unwrap()
                            .push((tid, last.into_iter().collect()));
                    }
                    commits += 1;
                }
            }
            let _ = stop;
        }));
    }
    let observations: Arc<Mutex<Vec<Observation>>> = Arc::default();
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let (t, obs, stop) = (t.clone(), observations.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut rng = Rng::new(7 + r);
            while !stop.load(Ordering::Relaxed) {
                let (mut txn, s) = reader(e);
                let seen: BTreeMap<_, _> = scan(&mut txn, &t)
                    .into_iter()
                    .map(|(rid, (id, bal, _))| (rid, (id, bal)))
                    .collect();
                let mut lookups = Vec::new();
                for _ in 0..3 {
                    let id = rng.below(40) as i32;
                    let mut rids: Vec<RowId> = lookup(&mut txn, &t, oid, id)
                        .into_iter()
                        .map(|x| x.0)
                        .collect();
                    rids.sort();
                    lookups.push((id, rids));
                }
                // The same snapshot, read again later, is the same.
                std::thread::yield_now();
                let again: BTreeMap<_, _> = scan(&mut txn, &t)
                    .into_iter()
                    .map(|(rid, (id, bal, _))| (rid, (id, bal)))
                    .collect();
                assert_eq!(seen, again, "one snapshot read twice");
                txn.commit().unwrap();
                obs.lock().unwrap().push((s, seen, lookups));
            }
        }));
    }
    let reclaimer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                e.reclaim_versions(usize::MAX);
                std::thread::yield_now();
            }
        })
    };
    for th in threads {
        th.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for th in readers {
        th.join().unwrap();
    }
    reclaimer.join().unwrap();

    let mut history = std::mem::take(&mut *history.lock().unwrap());
    history.sort_by_key(|c| c.0);
    let observations = std::mem::take(&mut *observations.lock().unwrap());
    assert!(
        observations.len() > 10,
        "readers ran: {}",
        observations.len()
    );
    for (s, seen, lookups) in observations {
        assert!(s >= start_tid);
        let mut model = start.clone();
        for (tid, writes) in history.iter().take_while(|c| c.0 <= s) {
            let _ = tid;
            for &(rid, v) in writes {
                match v {
                    Some(v) => model.insert(rid, v),
                    None => model.remove(&rid),
                };
            }
        }
        assert_eq!(seen, model, "scan at snapshot {s}");
        for (id, rids) in lookups {
            let want: Vec<RowId> = model
                .iter()
                .filter(|(_, v)| v.0 == id)
                .map(|(&r, _)| r)
                .collect();
            assert_eq!(rids, want, "index lookup of {id} at snapshot {s}");
        }
    }
    // With every snapshot gone, everything old is reclaimed.
    e.reclaim_versions(usize::MAX);
    let stats = e.version_stats();
    assert_eq!((stats.versions, stats.queued), (0, 0), "{stats:?}");
    let mut txn = e.begin();
    let rows = scan(&mut txn, &t).len();
    txn.commit().unwrap();
    assert_eq!(t.stats().index_entries, rows, "only live rows stay linked");
    assert_eq!(
        t.index_entries(oid),
        Some(rows),
        "only live keys stay in the index"
    );
}

/// Every row `scan_visit` hands over, as (id, bal), visiting 2 table rows at a time.
fn visit_all(txn: &mut TxnHandle, t: &TableHandle, cid: u32) -> Vec<(i32, i64)> {
    let mut cursor = ScanCursor::new();
    let mut rows = Vec::with_capacity(64);
    while !cursor.done() {
        txn.scan_visit(t, &mut cursor, cid, 2, |d| rows.push(unpack(t, d)))
            .unwrap();
    }
    rows.sort();
    rows
}

#[test]
fn visiting_rows_sees_what_a_scan_sees_own_writes_and_snapshots_included() {
    let e = engine();
    let oid = 7;
    let t = setup(e, oid, 5);
    let (mut r, _) = reader(e);
    let at_start: Vec<(i32, i64)> = (0..5).map(|i| (i, 100)).collect();
    assert_eq!(visit_all(&mut r, &t, u32::MAX), at_start);

    // Another transaction's commit is not seen at the reader's snapshot.
    let mut w = e.begin();
    let before = scan(&mut w, &t);
    let (&r0, &(_, _, v0)) = before.iter().find(|(_, v)| v.0 == 0).unwrap();
    let (&r3, &(_, _, v3)) = before.iter().find(|(_, v)| v.0 == 3).unwrap();
    w.update(&t, r0, v0, &row(&t, 0, 7), STMT).unwrap();
    w.delete(&t, r3, v3, STMT).unwrap();
    w.insert(&t, &row(&t, 9, 1), STMT).unwrap();
    // The writer sees its own changes before it commits, from the command after them.
    let own: Vec<(i32, i64)> = vec![(0, 7), (1, 100), (2, 100), (4, 100), (9, 1)];
    assert_eq!(visit_all(&mut w, &t, u32::MAX), own);
    assert_eq!(
        visit_all(&mut w, &t, STMT.cid),
        at_start,
        "not in its own statement"
    );
    w.commit().unwrap();
    assert_eq!(visit_all(&mut r, &t, u32::MAX), at_start);
    let s2 = r.snapshot().unwrap();
    r.set_read_snapshot(Some(s2));
    assert_eq!(visit_all(&mut r, &t, u32::MAX), own);
    // Each visited row is one a scan returns, and the other way round.
    let mut scanned: Vec<(i32, i64)> = scan(&mut r, &t).values().map(|v| (v.0, v.1)).collect();
    scanned.sort();
    assert_eq!(scanned, own);
    r.commit().unwrap();
}

#[test]
fn visiting_in_parallel_sees_what_a_serial_visit_sees() {
    let e = engine();
    let oid = 8;
    let t = setup(e, oid, 3000);
    // Some rows changed and deleted, committed.
    let mut w = e.begin();
    let rows = scan(&mut w, &t);
    for (&rid, &(id, _, tid)) in rows.iter() {
        if id % 3 == 0 {
            w.update(&t, rid, tid, &row(&t, id, i64::from(id)), STMT)
                .unwrap();
        } else if id % 7 == 0 {
            w.delete(&t, rid, tid, STMT).unwrap();
        }
    }
    w.commit().unwrap();
    let (mut r, _) = reader(e);
    // After the reader's snapshot: a committed update and delete, and an insert not
    // committed; neither visit sees them.
    let mut later = e.begin();
    let now = scan(&mut later, &t);
    let (&r1, &(id1, _, t1)) = now.iter().find(|(_, v)| v.0 % 3 == 1).unwrap();
    let (&r2, &(_, _, t2)) = now.iter().find(|(_, v)| v.0 % 3 == 2).unwrap();
    later.update(&t, r1, t1, &row(&t, id1, -5), STMT).unwrap();
    later.delete(&t, r2, t2, STMT).unwrap();
    later.commit().unwrap();
    let mut pending = e.begin();
    pending.insert(&t, &row(&t, 77777, 1), STMT).unwrap();
    let serial = visit_all(&mut r, &t, u32::MAX);
    assert_eq!(
        serial.len(),
        3000 - 3000 / 7 + 3000 / 21,
        "the snapshot's rows"
    );
    let end = t.peek_next_rowid().0;
    for threads in [1usize, 2, 3, 5] {
        let mut states = vec![Vec::new(); threads];
        let (removed, visited) = r
            .scan_visit_parallel(
                &t,
                None,
                0,
                end,
                &mut states,
                |s: &mut Vec<(i32, i64)>, d| s.push(unpack(&t, d)),
            )
            .unwrap()
            .expect("a committed view");
        let mut all: Vec<(i32, i64)> = states.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all, serial, "{threads} threads");
        assert_eq!((removed, visited as usize), (0, serial.len()));
    }
    // With a filter: bal >= 100 (the rows not updated).
    let mut f = RowFilter::new();
    let mut key = Vec::new();
    memfdw_engine::keys::encode_value(ColumnType::Int8, Some(&100i64.to_le_bytes()), &mut key)
        .unwrap();
    f.push(
        1,
        ColumnType::Int8,
        ColumnCond::Range {
            lo: Some((key, true)),
            hi: None,
        },
    );
    let f = std::sync::Arc::new(f);
    let mut states = vec![0usize; 2];
    let (removed, visited) = r
        .scan_visit_parallel(&t, Some(&f), 0, end, &mut states, |n: &mut usize, _| {
            *n += 1
        })
        .unwrap()
        .unwrap();
    let want = serial.iter().filter(|(_, b)| *b >= 100).count();
    assert_eq!(
        (visited as usize, states.iter().sum::<usize>()),
        (want, want)
    );
    assert_eq!(removed as usize, serial.len() - want);
    r.commit().unwrap();
    pending.abort();
    // A transaction with its own writes to the table is told to visit serially.
    let mut w = e.begin();
    w.insert(&t, &row(&t, 99999, 1), STMT).unwrap();
    let mut states = vec![0usize; 2];
    assert!(w
        .scan_visit_parallel(&t, None, 0, end, &mut states, |n: &mut usize, _| *n += 1)
        .unwrap()
        .is_none());
    w.abort();
}
