//! Key indexes: unique checks at the statement and at commit, index scans against a
//! model (own writes, key updates, aborts, savepoints), races for one unique key
//! between threads, builds on populated tables, and replay rebuilding indexes.

mod common;

use common::{engine, replay_all, table_id, Forward, Recorder, Rng};
use memfdw_engine::keys::encode_value;
use memfdw_engine::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

/// t(k int4 null, v int8 null, s text null)
fn def() -> TableDef {
    TableDef {
        database: 1,
        name: "t".into(),
        columns: vec![
            ColumnDef::new("k", ColumnType::Int4, true),
            ColumnDef::new("v", ColumnType::Int8, true),
            ColumnDef::new("s", ColumnType::Text, true),
        ],
    }
}

fn row(t: &TableHandle, k: Option<i32>, v: Option<i64>) -> Vec<u8> {
    let kb = k.map(|k| k.to_le_bytes());
    let vb = v.map(|v| v.to_le_bytes());
    t.layout
        .pack(&[
            kb.as_ref().map(|b| &b[..]),
            vb.as_ref().map(|b| &b[..]),
            Some(b"x"),
        ])
        .unwrap()
}

fn cols(t: &TableHandle, r: &[u8]) -> (Option<i32>, Option<i64>) {
    (
        t.layout
            .get(r, 0)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap())),
        t.layout
            .get(r, 1)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap())),
    )
}

fn index(id: u32, name: &str, columns: Vec<u16>, unique: bool) -> IndexDef {
    IndexDef {
        id,
        name: name.into(),
        columns,
        unique,
        primary: false,
    }
}

fn k_enc(k: Option<i32>) -> Vec<u8> {
    let b = k.map(|k| k.to_le_bytes());
    let mut out = Vec::new();
    encode_value(ColumnType::Int4, b.as_ref().map(|b| &b[..]), &mut out).unwrap();
    out
}

/// Every row a scan returns: (row id, k, v).
fn collect(
    txn: &mut TxnHandle,
    t: &TableHandle,
    mut scan: IndexScan,
    cid: u32,
) -> Vec<(RowId, Option<i32>, Option<i64>)> {
    let mut out = Vec::new();
    let mut batch = RowBatch::new();
    while !scan.done() {
        // Small batches exercise the cursor.
        txn.index_scan(t, &mut scan, cid, &mut batch, 3).unwrap();
        while let Some(r) = batch.next() {
            let (k, v) = cols(t, r.data);
            out.push((r.rowid, k, v));
        }
    }
    out
}

/// A point lookup of `k` in unique index `id` (as the glue builds it for `k = $1`).
fn point(id: u32, k: i32) -> IndexScan {
    let mut s = IndexScan::new(id, &k_enc(Some(k)), None, false);
    s.unique_point = true;
    s
}

/// A point lookup answers at the reader's snapshot even when the key's row changed
/// since and a newer reader put the new row in the index's point cache: the row the
/// snapshot sees, or none.
#[test]
fn point_lookups_see_their_snapshot_whatever_the_cache_holds() {
    let e = engine();
    e.create_table(table_id(3), def()).unwrap();
    let t = e.table(table_id(3)).unwrap();
    let mut setup = e.begin();
    setup
        .create_index(&t, index(20, "uk", vec![0], true))
        .unwrap();
    let s1 = Stmt { cid: 1, sub: 1 };
    let a = setup.insert(&t, &row(&t, Some(5), Some(1)), s1).unwrap();
    setup.insert(&t, &row(&t, Some(6), Some(1)), s1).unwrap();
    setup.commit().unwrap();
    let mut old = e.begin();
    old.set_isolation(Isolation::RepeatableRead).unwrap();
    assert_eq!(
        collect(&mut old, &t, point(20, 5), 1),
        vec![(a, Some(5), Some(1))]
    );
    // The row with key 5 is deleted and another takes the key; key 6 moves to 7.
    let mut w = e.begin();
    let mut buf = Vec::new();
    let tid = w.get(&t, a, 1, &mut buf).unwrap();
    w.delete(&t, a, tid, s1).unwrap();
    let b = w.insert(&t, &row(&t, Some(5), Some(2)), s1).unwrap();
    w.commit().unwrap();
    let mut newer = e.begin();
    for _ in 0..2 {
        assert_eq!(
            collect(&mut newer, &t, point(20, 5), 1),
            vec![(b, Some(5), Some(2))]
        );
    }
    newer.commit().unwrap();
    for _ in 0..2 {
        assert_eq!(
            collect(&mut old, &t, point(20, 5), 1),
            vec![(a, Some(5), Some(1))]
        );
    }
    old.commit().unwrap();
    // An insert that aborts after its own lookups cached it: others do not see it.
    let mut ins = e.begin();
    let c = ins.insert(&t, &row(&t, Some(9), Some(3)), s1).unwrap();
    for _ in 0..2 {
        assert_eq!(
            collect(&mut ins, &t, point(20, 9), 2),
            vec![(c, Some(9), Some(3))]
        );
    }
    ins.abort();
    let mut r = e.begin();
    for _ in 0..2 {
        assert_eq!(collect(&mut r, &t, point(20, 9), 1), vec![]);
        assert_eq!(
            collect(&mut r, &t, point(20, 5), 1),
            vec![(b, Some(5), Some(2))]
        );
    }
    r.commit().unwrap();
}

/// The background warm-up fills the point cache of a unique index nobody looked up
/// yet (as after a restart), in steps of a bounded number of entries.
#[test]
fn warm_up_fills_point_caches_in_steps() {
    let e = engine();
    e.create_table(table_id(4), def()).unwrap();
    let t = e.table(table_id(4)).unwrap();
    let mut txn = e.begin();
    txn.create_index(&t, index(30, "uk", vec![0], true))
        .unwrap();
    txn.create_index(&t, index(31, "vk", vec![1], false))
        .unwrap();
    let s1 = Stmt { cid: 1, sub: 1 };
    let ids: Vec<RowId> = (0..5000)
        .map(|k| txn.insert(&t, &row(&t, Some(k), Some(1)), s1).unwrap())
        .collect();
    txn.commit().unwrap();
    // Inserts alone leave the cache empty.
    assert_eq!(e.point_cache_lookup(table_id(4), 30, &k_enc(Some(7))), None);
    let mut w = memfdw_engine::point_cache::Warmup::new();
    let mut steps = 0;
    while !e.warm_point_caches(&mut w, 700) {
        steps += 1;
        assert!(steps < 100);
    }
    assert!(steps >= 5, "{steps}");
    let cached = (0..5000)
        .filter(|&k| {
            e.point_cache_lookup(table_id(4), 30, &k_enc(Some(k))) == Some(ids[k as usize])
        })
        .count();
    assert!(cached > 4000, "{cached}");
    // Lookups find the rows (from the cache or the index).
    let mut r = e.begin();
    assert_eq!(
        collect(&mut r, &t, point(30, 4321), 1),
        vec![(ids[4321], Some(4321), Some(1))]
    );
    r.commit().unwrap();
}

fn is_unique_violation(e: &Error, name: &str) -> bool {
    matches!(e, Error::UniqueViolation { index, .. } if index == name)
}

#[test]
fn unique_checks_at_the_statement_nulls_never_conflict() {
    let e = engine();
    e.create_table(table_id(1), def()).unwrap();
    let t = e.table(table_id(1)).unwrap();
    let mut txn = e.begin();
    txn.create_index(&t, index(1, "t_k_key", vec![0], true))
        .unwrap();
    let s = |cid| Stmt { cid, sub: 1 };
    txn.insert(&t, &row(&t, Some(1), Some(10)), s(1)).unwrap();
    // Same statement or a later one: PostgreSQL checks every row at once.
    let err = txn
        .insert(&t, &row(&t, Some(1), Some(11)), s(1))
        .unwrap_err();
    assert!(is_unique_violation(&err, "t_k_key"), "{err:?}");
    assert_eq!(err.sqlstate(), "23505");
    txn.insert(&t, &row(&t, None, Some(1)), s(2)).unwrap();
    txn.insert(&t, &row(&t, None, Some(2)), s(2)).unwrap();
    let r2 = txn.insert(&t, &row(&t, Some(2), Some(20)), s(2)).unwrap();
    txn.commit().unwrap();

    let mut txn = e.begin();
    let err = txn.insert(&t, &row(&t, Some(2), None), s(1)).unwrap_err();
    assert!(is_unique_violation(&err, "t_k_key"));
    // An update onto a held key fails; moving the holder away first frees it.
    let mut buf = Vec::new();
    let all = collect(&mut txn, &t, IndexScan::new(1, &[], None, false), 1);
    let r1 = all.iter().find(|r| r.1 == Some(1)).unwrap().0;
    let tid1 = txn.get(&t, r1, 1, &mut buf).unwrap();
    let err = txn
        .update(&t, r1, tid1, &row(&t, Some(2), Some(10)), s(1))
        .unwrap_err();
    assert!(is_unique_violation(&err, "t_k_key"));
    let tid2 = txn.get(&t, r2, 1, &mut buf).unwrap();
    txn.update(&t, r2, tid2, &row(&t, Some(3), Some(20)), s(1))
        .unwrap();
    txn.update(&t, r1, tid1, &row(&t, Some(2), Some(10)), s(2))
        .unwrap();
    // Deleting a holder frees its key for an insert of the same transaction.
    let tid0 = txn.get(&t, r1, 3, &mut buf).unwrap();
    assert_eq!(tid0, tid1);
    txn.delete(&t, r1, tid1, s(3)).unwrap();
    txn.insert(&t, &row(&t, Some(2), Some(99)), s(4)).unwrap();
    txn.commit().unwrap();

    let mut txn = e.begin();
    let got = collect(&mut txn, &t, IndexScan::new(1, &[], None, false), 1);
    let keys: Vec<_> = got.iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(
        keys,
        vec![
            (Some(2), Some(99)),
            (Some(3), Some(20)),
            (None, Some(1)),
            (None, Some(2))
        ]
    );
    // Point lookup, IS NULL, reverse.
    let p = collect(
        &mut txn,
        &t,
        IndexScan::new(1, &k_enc(Some(3)), None, false),
        1,
    );
    assert_eq!(p.iter().map(|r| r.2).collect::<Vec<_>>(), vec![Some(20)]);
    let n = collect(
        &mut txn,
        &t,
        IndexScan::new(1, &k_enc(None), None, false),
        1,
    );
    assert_eq!(n.len(), 2);
    let rev = collect(&mut txn, &t, IndexScan::new(1, &[], None, true), 1);
    assert_eq!(rev.first().unwrap().1, None);
    assert_eq!(rev.last().unwrap().1, Some(2));
    txn.commit().unwrap();
}

/// A transaction's view, as the model keeps it: row id -> (k, v).
type View = BTreeMap<RowId, (Option<i32>, Option<i64>)>;

fn nulls_last(k: Option<i32>) -> (bool, i32) {
    (k.is_none(), k.unwrap_or(0))
}

#[test]
fn index_scans_match_a_model_through_updates_aborts_and_savepoints() {
    let e = engine();
    e.create_table(table_id(2), def()).unwrap();
    let t = e.table(table_id(2)).unwrap();
    let mut setup = e.begin();
    setup
        .create_index(&t, index(10, "uk", vec![0], true))
        .unwrap();
    setup
        .create_index(&t, index(11, "vk", vec![1, 0], false))
        .unwrap();
    setup.commit().unwrap();
    let mut committed = View::new();
    let mut rng = Rng::new(7);
    let mut buf = Vec::new();
    for round in 0..300 {
        let mut txn = e.begin();
        let mut view = committed.clone();
        let mut saved: Option<(View, u32)> = None;
        let mut cid = 1u32;
        let mut sub = 1u32;
        for _ in 0..rng.below(8) + 1 {
            let op = rng.below(10);
            let k = (rng.below(8) != 0).then(|| rng.below(40) as i32);
            let v = (rng.below(8) != 0).then(|| rng.below(5) as i64);
            let stmt = Stmt { cid, sub };
            let holder = |view: &View, k: Option<i32>, me: Option<RowId>| {
                k.is_some() && view.iter().any(|(id, r)| r.0 == k && Some(*id) != me)
            };
            if op < 4 || view.is_empty() {
                let res = txn.insert(&t, &row(&t, k, v), stmt);
                if holder(&view, k, None) {
                    assert!(is_unique_violation(&res.unwrap_err(), "uk"));
                } else {
                    view.insert(res.unwrap(), (k, v));
                }
            } else if op < 8 {
                let id = *view
                    .keys()
                    .nth(rng.below(view.len() as u64) as usize)
                    .unwrap();
                let tid = txn.get(&t, id, cid, &mut buf).expect("visible");
                let res = txn.update(&t, id, tid, &row(&t, k, v), stmt);
                if holder(&view, k, Some(id)) {
                    assert!(is_unique_violation(&res.unwrap_err(), "uk"));
                } else {
                    assert_eq!(res.unwrap(), WriteOutcome::Done);
                    view.insert(id, (k, v));
                }
            } else if op < 9 {
                let id = *view
                    .keys()
                    .nth(rng.below(view.len() as u64) as usize)
                    .unwrap();
                let tid = txn.get(&t, id, cid, &mut buf).expect("visible");
                txn.delete(&t, id, tid, stmt).unwrap();
                view.remove(&id);
            } else if let Some((v0, s0)) = saved.take() {
                txn.rollback_to(s0);
                view = v0;
            } else {
                sub += 1;
                saved = Some((view.clone(), sub));
            }
            cid += 1;
            // Full scan in key order (NULLs last), then row id.
            let mut want: Vec<_> = view.iter().map(|(id, r)| (*id, r.0, r.1)).collect();
            want.sort_by_key(|r| (nulls_last(r.1), r.0));
            let got = collect(&mut txn, &t, IndexScan::new(10, &[], None, false), cid);
            assert_eq!(got, want, "round {round}: full scan");
            // A range lo <= k < hi.
            let (lo, hi) = (rng.below(40) as i32, rng.below(40) as i32);
            let lo_b = Some((k_enc(Some(lo)), true));
            let hi_b = Some((k_enc(Some(hi)), false));
            let got = collect(
                &mut txn,
                &t,
                IndexScan::new(10, &[], Some((lo_b, hi_b)), rng.below(2) == 0),
                cid,
            );
            let mut got_ids: Vec<_> = got.iter().map(|r| r.0).collect();
            got_ids.sort();
            let want_ids: Vec<_> = view
                .iter()
                .filter(|(_, r)| r.0.is_some_and(|k| k >= lo && k < hi))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(got_ids, want_ids, "round {round}: range");
            // Equality on the leading column of the non-unique index.
            let probe = rng.below(5) as i64;
            let mut p = Vec::new();
            encode_value(ColumnType::Int8, Some(&probe.to_le_bytes()), &mut p).unwrap();
            let got = collect(&mut txn, &t, IndexScan::new(11, &p, None, false), cid);
            let mut got_ids: Vec<_> = got.iter().map(|r| r.0).collect();
            got_ids.sort();
            let want_ids: Vec<_> = view
                .iter()
                .filter(|(_, r)| r.1 == Some(probe))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(got_ids, want_ids, "round {round}: v = {probe}");
            // Point lookups in the unique index (twice each: the second may come from
            // its point cache, filled by this or an earlier transaction, possibly one
            // that aborted or changed the row since).
            for _ in 0..3 {
                let k = rng.below(40) as i32;
                let want: Vec<_> = view
                    .iter()
                    .filter(|(_, r)| r.0 == Some(k))
                    .map(|(id, r)| (*id, r.0, r.1))
                    .collect();
                for _ in 0..2 {
                    let got = collect(&mut txn, &t, point(10, k), cid);
                    assert_eq!(got, want, "round {round}: k = {k}");
                }
            }
        }
        if rng.below(4) == 0 {
            txn.abort();
        } else {
            txn.commit().unwrap();
            committed = view;
        }
    }
    // No stale entries left behind: each index holds one entry per row.
    assert_eq!(t.index_entries(10), Some(committed.len()));
    assert_eq!(t.index_entries(11), Some(committed.len()));
}

#[test]
fn racing_inserts_of_one_key_exactly_one_wins() {
    let e = engine();
    e.create_table(table_id(3), def()).unwrap();
    let t = e.table(table_id(3)).unwrap();
    let mut txn = e.begin();
    txn.create_index(&t, index(20, "race_key", vec![0], true))
        .unwrap();
    txn.commit().unwrap();
    const ROUNDS: i32 = 300;
    let barrier = Arc::new(Barrier::new(4));
    let wins = Arc::new(Mutex::new(vec![0u32; ROUNDS as usize]));
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let (barrier, wins) = (barrier.clone(), wins.clone());
            std::thread::spawn(move || {
                let t = e.table(table_id(3)).unwrap();
                for k in 0..ROUNDS {
                    barrier.wait();
                    let mut txn = e.begin();
                    let ins = txn.insert(&t, &row(&t, Some(k), Some(w)), Stmt { cid: 1, sub: 1 });
                    // Odd rounds: everybody has tried to insert before anybody commits;
                    // who found the key inserted by another, not committed, gets
                    // KeyPending (the glue waits for that transaction, then retries).
                    if k % 2 == 1 {
                        barrier.wait();
                    }
                    let res = ins.and_then(|_| txn.commit());
                    match res {
                        Ok(_) => wins.lock().unwrap()[k as usize] += 1,
                        Err(Error::UniqueViolation { .. })
                        | Err(Error::KeyPending { .. })
                        | Err(Error::Conflict(AbortReason::UniqueKeyBusy)) => {}
                        Err(other) => panic!("unexpected {other:?}"),
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    let wins = wins.lock().unwrap();
    let mut txn = e.begin();
    let rows = collect(&mut txn, &t, IndexScan::new(20, &[], None, false), 1);
    for k in 0..ROUNDS {
        assert!(
            wins[k as usize] <= 1,
            "key {k} won {} times",
            wins[k as usize]
        );
        let n = rows.iter().filter(|r| r.1 == Some(k)).count();
        assert_eq!(n as u32, wins[k as usize], "key {k}");
    }
    // Busy-key aborts are possible but rare; nearly every key must have a winner.
    let won = wins.iter().filter(|&&w| w == 1).count();
    assert!(won as i32 > ROUNDS * 9 / 10, "only {won} keys won");
}

#[test]
fn concurrent_key_updates_keep_every_row_findable_once() {
    let e = engine();
    e.create_table(table_id(4), def()).unwrap();
    let t = e.table(table_id(4)).unwrap();
    let mut txn = e.begin();
    txn.create_index(&t, index(30, "mv_key", vec![0], true))
        .unwrap();
    for w in 0..4i64 {
        for i in 0..25 {
            txn.insert(
                &t,
                &row(&t, Some((w * 1000 + i) as i32), Some(w)),
                Stmt { cid: 1, sub: 1 },
            )
            .unwrap();
        }
    }
    txn.commit().unwrap();
    let threads: Vec<_> = (0..4i64)
        .map(|w| {
            std::thread::spawn(move || {
                let t = e.table(table_id(4)).unwrap();
                let mut rng = Rng::new(w as u64 + 1);
                let mut buf = Vec::new();
                let mut next = 100_000 * (w as i32 + 1);
                for _ in 0..400 {
                    let mut txn = e.begin();
                    // My rows: v = w. Move one to a fresh key; readers run meanwhile.
                    let mut pre = Vec::new();
                    encode_value(ColumnType::Int8, Some(&w.to_le_bytes()), &mut pre).unwrap();
                    let mine: Vec<_> = {
                        let mut all =
                            collect(&mut txn, &t, IndexScan::new(30, &[], None, false), 1);
                        all.retain(|r| r.2 == Some(w));
                        all
                    };
                    assert_eq!(mine.len(), 25, "worker {w} sees its 25 rows once");
                    let pick = mine[rng.below(25) as usize].0;
                    let tid = txn.get(&t, pick, 1, &mut buf).unwrap();
                    next += 1;
                    txn.update(
                        &t,
                        pick,
                        tid,
                        &row(&t, Some(next), Some(w)),
                        Stmt { cid: 1, sub: 1 },
                    )
                    .unwrap();
                    txn.commit().unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    let mut txn = e.begin();
    let rows = collect(&mut txn, &t, IndexScan::new(30, &[], None, false), 1);
    assert_eq!(rows.len(), 100);
    assert_eq!(t.index_entries(30), Some(100));
}

#[test]
fn building_on_populated_tables_and_duplicates_leave_no_index() {
    let e = engine();
    e.create_table(table_id(5), def()).unwrap();
    let t = e.table(table_id(5)).unwrap();
    let mut txn = e.begin();
    for i in 0..1000 {
        txn.insert(
            &t,
            &row(&t, Some(i % 500), Some(i as i64)),
            Stmt { cid: 1, sub: 1 },
        )
        .unwrap();
    }
    txn.commit().unwrap();
    let mut txn = e.begin();
    let err = txn
        .create_index(&t, index(40, "dup_key", vec![0], true))
        .unwrap_err();
    assert!(is_unique_violation(&err, "dup_key"));
    assert!(t.index_defs().is_empty());
    txn.create_index(&t, index(41, "v_key", vec![1], true))
        .unwrap();
    // Own uncommitted inserts are indexed and checked too.
    txn.insert(&t, &row(&t, Some(1), Some(5000)), Stmt { cid: 2, sub: 1 })
        .unwrap();
    let err = txn.create_index(&t, index(42, "k_v", vec![0, 1], true));
    assert!(err.is_ok());
    let err = txn
        .insert(&t, &row(&t, Some(1), Some(5000)), Stmt { cid: 3, sub: 1 })
        .unwrap_err();
    assert!(is_unique_violation(&err, "v_key") || is_unique_violation(&err, "k_v"));
    assert_eq!(
        txn.create_index(&t, index(43, "v_key", vec![2], false))
            .unwrap_err()
            .sqlstate(),
        "42P07"
    );
    txn.commit().unwrap();
    let mut txn = e.begin();
    let got = collect(&mut txn, &t, IndexScan::new(41, &[], None, false), 1);
    assert_eq!(got.len(), 1001);
    assert!(got.windows(2).all(|w| w[0].2 < w[1].2));
    assert!(e.drop_index(table_id(5), 41).unwrap());
    assert!(!e.drop_index(table_id(5), 41).unwrap());
    let err = txn.index_scan(
        &t,
        &mut IndexScan::new(41, &[], None, false),
        1,
        &mut RowBatch::new(),
        10,
    );
    assert_eq!(err.unwrap_err().sqlstate(), "42704");
}

/// A unique index built inside a transaction checks the keys the rows have as that
/// transaction sees them (own updates, deletes and inserts), on the sorted keys, with
/// NULLs never in conflict; big builds sort and link with several threads and find
/// every row.
#[test]
fn unique_builds_check_the_keys_as_the_transaction_sees_them() {
    let e = engine();
    e.create_table(table_id(8), def()).unwrap();
    let t = e.table(table_id(8)).unwrap();
    let s = Stmt { cid: 1, sub: 1 };
    let mut txn = e.begin();
    let mut ids = Vec::new();
    for k in [Some(1), Some(2), None, None, Some(3)] {
        ids.push(txn.insert(&t, &row(&t, k, Some(0)), s).unwrap());
    }
    txn.commit().unwrap();
    let mut buf = Vec::new();
    let set = |txn: &mut TxnHandle, i: usize, k: Option<i32>| {
        let mut buf = Vec::new();
        let tid = txn.get(&t, ids[i], 1, &mut buf).unwrap();
        txn.update(&t, ids[i], tid, &row(&t, k, Some(0)), s)
            .unwrap();
    };
    // 1 moves to 4 and a new row takes 1: no duplicate as this transaction sees it.
    let mut txn = e.begin();
    set(&mut txn, 0, Some(4));
    txn.insert(&t, &row(&t, Some(1), Some(0)), s).unwrap();
    txn.create_index(&t, index(80, "k1", vec![0], true))
        .unwrap();
    txn.abort();
    // (An index outlives the engine transaction that built it: the glue drops it.)
    assert!(e.drop_index(table_id(8), 80).unwrap());
    // 2 moves to 3, which row 5 has: a duplicate although the committed keys differ.
    let mut txn = e.begin();
    set(&mut txn, 1, Some(3));
    let err = txn
        .create_index(&t, index(81, "k2", vec![0], true))
        .unwrap_err();
    assert!(is_unique_violation(&err, "k2"), "{err}");
    txn.abort();
    // Two changed rows onto one key: a duplicate.
    let mut txn = e.begin();
    set(&mut txn, 0, Some(9));
    set(&mut txn, 1, Some(9));
    let err = txn
        .create_index(&t, index(82, "k3", vec![0], true))
        .unwrap_err();
    assert!(is_unique_violation(&err, "k3"), "{err}");
    txn.abort();
    // A row deleted, its key inserted again; a committed key set to NULL, its key
    // taken by a new row.
    let mut txn = e.begin();
    let tid = txn.get(&t, ids[4], 1, &mut buf).unwrap();
    txn.delete(&t, ids[4], tid, s).unwrap();
    txn.insert(&t, &row(&t, Some(3), Some(0)), s).unwrap();
    set(&mut txn, 1, None);
    txn.insert(&t, &row(&t, Some(2), Some(0)), s).unwrap();
    txn.create_index(&t, index(83, "k4", vec![0], true))
        .unwrap();
    txn.commit().unwrap();
    assert_eq!(t.index_entries(83), Some(6));

    // Big: the parallel sort and link paths.
    e.create_table(table_id(9), def()).unwrap();
    let big = e.table(table_id(9)).unwrap();
    let n = 150_000i32;
    let mut txn = e.begin();
    for i in 0..n {
        // Keys in an order unlike the row ids'.
        let k = (i64::from(i) * 7919 % i64::from(n)) as i32;
        txn.insert(&big, &row(&big, Some(k), Some(i64::from(i % 1000))), s)
            .unwrap();
    }
    txn.commit().unwrap();
    let mut txn = e.begin();
    txn.create_index(&big, index(90, "big_k", vec![0], true))
        .unwrap();
    txn.create_index(&big, index(91, "big_v", vec![1], false))
        .unwrap();
    let err = txn
        .create_index(&big, index(92, "big_dup", vec![1], true))
        .unwrap_err();
    assert!(is_unique_violation(&err, "big_dup"));
    txn.commit().unwrap();
    let mut txn = e.begin();
    let all = collect(&mut txn, &big, IndexScan::new(90, &[], None, false), 1);
    assert_eq!(all.len(), n as usize);
    assert!(all.windows(2).all(|w| w[0].1 < w[1].1), "in key order");
    for k in [0, 1, n / 2, n - 1] {
        let got = collect(
            &mut txn,
            &big,
            IndexScan::new(90, &k_enc(Some(k)), None, false),
            1,
        );
        assert_eq!(got.len(), 1, "key {k}");
    }
    assert_eq!(big.index_entries(91), Some(n as usize));
}

/// A key update back to a key the row held in an older version (whose index entry a
/// snapshot keeps) links no new entry; its commit must still count as giving the
/// table a key, or a concurrent insert of that key would skip its commit check and
/// commit a duplicate.
#[test]
fn a_key_updated_back_under_an_old_snapshot_still_blocks_a_concurrent_insert() {
    let e = engine();
    e.create_table(table_id(10), def()).unwrap();
    let t = e.table(table_id(10)).unwrap();
    let s = Stmt { cid: 1, sub: 1 };
    let mut txn = e.begin();
    txn.create_index(&t, index(100, "k_uniq", vec![0], true))
        .unwrap();
    let r = txn.insert(&t, &row(&t, Some(1), Some(0)), s).unwrap();
    txn.commit().unwrap();
    // An old snapshot keeps the entry (1, r) after r moves to 2.
    let mut old = e.begin();
    old.set_isolation(Isolation::RepeatableRead).unwrap();
    let mut buf = Vec::new();
    old.get(&t, r, 1, &mut buf).unwrap();
    let mut t0 = e.begin();
    let tid = t0.get(&t, r, 1, &mut buf).unwrap();
    t0.update(&t, r, tid, &row(&t, Some(2), Some(0)), s)
        .unwrap();
    t0.commit().unwrap();
    // B moves r back to 1; A inserts 1. Both statements pass their checks.
    let mut b = e.begin();
    let tid = b.get(&t, r, 1, &mut buf).unwrap();
    b.update(&t, r, tid, &row(&t, Some(1), Some(0)), s).unwrap();
    let mut a = e.begin();
    a.insert(&t, &row(&t, Some(1), Some(9)), s).unwrap();
    b.commit().unwrap();
    let err = a.commit().unwrap_err();
    assert!(is_unique_violation(&err, "k_uniq"), "{err}");
    drop(old);
}

#[test]
fn replay_rebuilds_indexes_and_their_drops() {
    let log: &'static Recorder = Box::leak(Box::default());
    let a: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        Some(Box::new(Forward(log))),
    ));
    a.create_table(table_id(6), def()).unwrap();
    let t = a.table(table_id(6)).unwrap();
    let mut txn = a.begin();
    txn.create_index(&t, index(50, "a_key", vec![0], true))
        .unwrap();
    txn.create_index(&t, index(51, "gone", vec![1], false))
        .unwrap();
    txn.commit().unwrap();
    let mut rng = Rng::new(3);
    let mut buf = Vec::new();
    for i in 0..400 {
        let mut txn = a.begin();
        let s = Stmt { cid: 1, sub: 1 };
        let all = collect(&mut txn, &t, IndexScan::new(50, &[], None, false), 1);
        if all.is_empty() || rng.below(3) == 0 {
            let _ = txn.insert(&t, &row(&t, Some(i), Some(i as i64)), s);
        } else {
            let r = all[rng.below(all.len() as u64) as usize];
            let tid = txn.get(&t, r.0, 1, &mut buf).unwrap();
            if rng.below(4) == 0 {
                txn.delete(&t, r.0, tid, s).unwrap();
            } else {
                let _ = txn.update(&t, r.0, tid, &row(&t, Some(10_000 + i), r.2), s);
            }
        }
        txn.commit().unwrap();
    }
    assert!(a.drop_index(table_id(6), 51).unwrap());
    let b: &'static Engine = engine();
    replay_all(b, log.0.lock().unwrap().iter()).unwrap();
    let tb = b.table(table_id(6)).unwrap();
    let defs: Vec<_> = tb.index_defs().into_iter().map(|d| d.name).collect();
    assert_eq!(defs, vec!["a_key".to_string()]);
    let (mut ta, mut txb) = (a.begin(), b.begin());
    let want = collect(&mut ta, &t, IndexScan::new(50, &[], None, false), 1);
    let got = collect(&mut txb, &tb, IndexScan::new(50, &[], None, false), 1);
    assert_eq!(got, want);
    assert_eq!(tb.index_entries(50), Some(want.len()));
    // New index ids do not collide with replayed ones.
    assert!(b.next_index_id() > 51);
}

#[test]
fn an_index_built_after_own_updates_gets_their_new_keys_at_commit() {
    let e = engine();
    e.create_table(table_id(7), def()).unwrap();
    let t = e.table(table_id(7)).unwrap();
    let mut txn = e.begin();
    let r = txn
        .insert(&t, &row(&t, Some(1), Some(10)), Stmt { cid: 1, sub: 1 })
        .unwrap();
    txn.commit().unwrap();
    let mut txn = e.begin();
    let mut buf = Vec::new();
    let tid = txn.get(&t, r, 1, &mut buf).unwrap();
    txn.update(
        &t,
        r,
        tid,
        &row(&t, Some(1), Some(20)),
        Stmt { cid: 1, sub: 1 },
    )
    .unwrap();
    txn.create_index(&t, index(70, "late_v", vec![1], false))
        .unwrap();
    txn.commit().unwrap();
    let mut txn = e.begin();
    let v = |n: i64| {
        let mut k = Vec::new();
        encode_value(ColumnType::Int8, Some(&n.to_le_bytes()), &mut k).unwrap();
        k
    };
    assert_eq!(
        collect(&mut txn, &t, IndexScan::new(70, &v(20), None, false), 1).len(),
        1
    );
    assert_eq!(
        collect(&mut txn, &t, IndexScan::new(70, &v(10), None, false), 1).len(),
        0
    );
    assert_eq!(t.index_entries(70), Some(1));
}

/// A transaction that wrote rows before it created or dropped an index writes the
/// next rows with the new list of indexes (a transaction keeps a table's index list
/// between writes while the table's index generation stays the same).
#[test]
fn writes_after_an_index_is_created_or_dropped_in_the_transaction_use_the_new_list() {
    let e = engine();
    e.create_table(table_id(8), def()).unwrap();
    let t = e.table(table_id(8)).unwrap();
    let s = |cid| Stmt { cid, sub: 1 };
    let mut txn = e.begin();
    txn.create_index(&t, index(80, "k8", vec![0], true))
        .unwrap();
    let a = txn.insert(&t, &row(&t, Some(1), Some(10)), s(1)).unwrap();
    txn.create_index(&t, index(81, "v8", vec![1], false))
        .unwrap();
    txn.insert(&t, &row(&t, Some(2), Some(20)), s(2)).unwrap();
    let mut buf = Vec::new();
    let tid = txn.get(&t, a, 3, &mut buf).unwrap();
    txn.update(&t, a, tid, &row(&t, Some(1), Some(30)), s(3))
        .unwrap();
    txn.commit().unwrap();
    let v = |n: i64| {
        let mut k = Vec::new();
        encode_value(ColumnType::Int8, Some(&n.to_le_bytes()), &mut k).unwrap();
        k
    };
    let mut txn = e.begin();
    for (val, want) in [(10, 0), (20, 1), (30, 1)] {
        let got = collect(&mut txn, &t, IndexScan::new(81, &v(val), None, false), 1);
        assert_eq!(got.len(), want, "v = {val}");
    }
    assert_eq!(t.index_entries(81), Some(2));
    // Dropped: the next insert of a duplicate key is no longer refused.
    assert!(e.drop_index(table_id(8), 80).unwrap());
    txn.insert(&t, &row(&t, Some(2), Some(40)), s(4)).unwrap();
    txn.commit().unwrap();
}

/// Recovery's replayer (big batches applied by two threads, indexes over existing rows
/// built by two threads) ends in the same state as replaying record by record: big batches (inserts, key
/// changes, deletes), an index dropped and one created later, a table dropped and
/// recreated under the same OID.
#[test]
fn the_parallel_replayer_matches_record_by_record_replay() {
    let log: &'static Recorder = Box::leak(Box::default());
    let a: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        Some(Box::new(Forward(log))),
    ));
    // A table that goes away, then comes back with other rows and no index.
    a.create_table(table_id(9), def()).unwrap();
    let t9 = a.table(table_id(9)).unwrap();
    let mut txn = a.begin();
    txn.create_index(&t9, index(90, "t9_k", vec![0], true))
        .unwrap();
    for i in 0..100 {
        txn.insert(&t9, &row(&t9, Some(i), None), Stmt { cid: 1, sub: 1 })
            .unwrap();
    }
    txn.commit().unwrap();
    drop(t9);
    assert!(a.drop_table(table_id(9)).unwrap());
    a.create_table(table_id(9), def()).unwrap();
    let t9 = a.table(table_id(9)).unwrap();
    let mut txn = a.begin();
    txn.insert(&t9, &row(&t9, Some(7), Some(7)), Stmt { cid: 1, sub: 1 })
        .unwrap();
    txn.commit().unwrap();

    a.create_table(table_id(8), def()).unwrap();
    let t = a.table(table_id(8)).unwrap();
    let mut txn = a.begin();
    txn.create_index(&t, index(80, "k_key", vec![0], true))
        .unwrap();
    txn.create_index(&t, index(81, "v_gone", vec![1], false))
        .unwrap();
    txn.commit().unwrap();
    const N: i32 = 20_000;
    let s = Stmt { cid: 1, sub: 1 };
    let mut txn = a.begin();
    let rowids: Vec<RowId> = (0..N)
        .map(|i| {
            txn.insert(&t, &row(&t, Some(i), Some(i as i64 % 97)), s)
                .unwrap()
        })
        .collect();
    txn.commit().unwrap();
    // One big commit moving the keys of half the rows, one deleting a quarter.
    let mut buf = Vec::new();
    let mut txn = a.begin();
    for (i, &r) in rowids.iter().enumerate().step_by(2) {
        let tid = txn.get(&t, r, 1, &mut buf).unwrap();
        txn.update(&t, r, tid, &row(&t, Some(N + i as i32), Some(-1)), s)
            .unwrap();
    }
    txn.commit().unwrap();
    let mut txn = a.begin();
    for &r in rowids.iter().skip(1).step_by(4) {
        let tid = txn.get(&t, r, 1, &mut buf).unwrap();
        txn.delete(&t, r, tid, s).unwrap();
    }
    txn.commit().unwrap();
    assert!(a.drop_index(table_id(8), 81).unwrap());
    let mut txn = a.begin();
    txn.create_index(&t, index(82, "v_late", vec![1], false))
        .unwrap();
    txn.commit().unwrap();
    // Many single-row commits: distinct rows (applied together by two threads), then
    // the same rows again (applied in log order).
    let mut small = Vec::new();
    for i in 0..9000 {
        let mut txn = a.begin();
        small.push(
            txn.insert(&t, &row(&t, Some(3 * N + i), Some(i as i64)), s)
                .unwrap(),
        );
        txn.commit().unwrap();
    }
    // Index DDL between them ends the batch of distinct rows.
    let mut txn = a.begin();
    txn.create_index(&t, index(83, "k_again", vec![0], false))
        .unwrap();
    txn.commit().unwrap();
    for (i, &r) in small.iter().enumerate().take(300) {
        for round in 0..2 {
            let mut txn = a.begin();
            let tid = txn.get(&t, r, 1, &mut buf).unwrap();
            let k = 4 * N + 2 * i as i32 + round;
            txn.update(&t, r, tid, &row(&t, Some(k), Some(round as i64)), s)
                .unwrap();
            txn.commit().unwrap();
        }
    }

    let records = log.0.lock().unwrap().clone();
    let one_by_one: &'static Engine = engine();
    replay_all(one_by_one, &records).unwrap();
    let parallel: &'static Engine = engine();
    let mut replayer = Replayer::new(parallel, 2);
    let mut payload = Vec::new();
    for rec in &records {
        payload.clear();
        rec.encode(&mut payload);
        replayer.apply(&payload).unwrap();
    }
    replayer.finish().unwrap();

    for (oid, ids) in [(8u32, vec![80u32, 82, 83]), (9, vec![])] {
        let ta = a.table(table_id(oid)).unwrap();
        for b in [one_by_one, parallel] {
            let tb = b.table(table_id(oid)).unwrap();
            let names = |t: &TableHandle| -> Vec<String> {
                t.index_defs().into_iter().map(|d| d.name).collect()
            };
            assert_eq!(names(&tb), names(&ta));
            assert_eq!(b.table_stats(table_id(oid)), a.table_stats(table_id(oid)));
            for &id in &ids {
                let (mut txa, mut txb) = (a.begin(), b.begin());
                let want = collect(&mut txa, &ta, IndexScan::new(id, &[], None, false), 1);
                let got = collect(&mut txb, &tb, IndexScan::new(id, &[], None, false), 1);
                assert_eq!(got.len(), want.len());
                assert_eq!(got, want);
                assert_eq!(tb.index_entries(id), Some(want.len()));
            }
        }
    }
    assert_eq!(
        parallel.table_stats(table_id(8)).unwrap().rows as usize,
        N as usize - N as usize / 4 + 9000
    );
    assert!(parallel.next_index_id() > 83);
    assert!(parallel.last_tid() >= a.last_tid());
}
