//! Scans shared by several participants (PostgreSQL's parallel query): together they
//! read every row visible at the leader's snapshot exactly once, whatever commits
//! meanwhile and whatever their batch sizes; a leader that sees its own writes reads
//! alone; a participant given another table refuses.

mod common;

use common::acct::{bal, row};
use common::engine;
use memfdw_engine::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const STMT: Stmt = Stmt { cid: 1, sub: 1 };

fn id_of(t: &TableHandle, r: &[u8]) -> i32 {
    i32::from_le_bytes(t.layout.get(r, 0).unwrap().try_into().unwrap())
}

/// Reads with `participants` threads sharing `shared`; rows by row id.
fn read_shared(
    e: &'static Engine,
    oid: u32,
    shared: &Arc<SharedScan>,
    participants: usize,
    batch_rows: usize,
) -> BTreeMap<RowId, (i32, i64)> {
    let handles: Vec<_> = (0..participants)
        .map(|p| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let t = e.table(common::table_id(oid)).unwrap();
                let mut cursor = SharedCursor::new();
                let mut batch = RowBatch::new();
                let mut out = Vec::new();
                while !cursor.done() {
                    assert!(e.shared_scan(&t, &shared, &mut cursor, &mut batch, batch_rows + p));
                    while let Some(r) = batch.next() {
                        out.push((r.rowid, id_of(&t, r.data), bal(&t, r.data)));
                    }
                }
                out
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for h in handles {
        for (rowid, id, b) in h.join().unwrap() {
            assert!(
                all.insert(rowid, (id, b)).is_none(),
                "row {rowid:?} read twice"
            );
        }
    }
    all
}

/// What the leader's own scan reads at its snapshot.
fn read_alone(txn: &mut TxnHandle, t: &TableHandle) -> BTreeMap<RowId, (i32, i64)> {
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    let mut out = BTreeMap::new();
    while !cursor.done() {
        txn.scan(t, &mut cursor, u32::MAX, &mut batch, 100).unwrap();
        while let Some(r) = batch.next() {
            out.insert(r.rowid, (id_of(t, r.data), bal(t, r.data)));
        }
    }
    out
}

#[test]
fn participants_read_each_row_once_at_the_leaders_snapshot() {
    let e = engine();
    let oid = 9101;
    // More than a few blocks, and a gap of deleted rows spanning a whole block.
    let t = common::acct::setup(e, oid, 5000, 100);
    let mut del = e.begin();
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    while !cursor.done() {
        del.scan(&t, &mut cursor, u32::MAX, &mut batch, 500)
            .unwrap();
        while let Some(r) = batch.next() {
            let id = id_of(&t, r.data);
            if (1000..2500).contains(&id) {
                del.delete(&t, r.rowid, r.tid, STMT).unwrap();
            }
        }
    }
    del.commit().unwrap();

    let mut leader = e.begin();
    let at = leader.snapshot().unwrap();
    leader.set_read_snapshot(Some(at));
    let expected = read_alone(&mut leader, &t);
    assert_eq!(expected.len(), 3500);
    let shared = Arc::new(leader.start_shared_scan(&t));
    assert!(!shared.leader_only());

    // Commits after the snapshot: updates, deletes and inserts the scan must not see.
    let mut w = e.begin();
    let mut cursor = ScanCursor::new();
    while !cursor.done() {
        w.scan(&t, &mut cursor, u32::MAX, &mut batch, 500).unwrap();
        while let Some(r) = batch.next() {
            let id = id_of(&t, r.data);
            if id % 7 == 0 {
                w.update(&t, r.rowid, r.tid, &row(&t, id, -1), STMT)
                    .unwrap();
            } else if id % 11 == 0 {
                w.delete(&t, r.rowid, r.tid, STMT).unwrap();
            }
        }
    }
    for i in 0..3000 {
        w.insert(&t, &row(&t, 100_000 + i, -2), STMT).unwrap();
    }
    w.commit().unwrap();

    for (participants, batch_rows) in [(1, 1), (2, 7), (3, 100), (4, 5000)] {
        shared.restart();
        let got = read_shared(e, oid, &shared, participants, batch_rows);
        assert_eq!(
            got, expected,
            "{participants} participants, batches of {batch_rows}"
        );
    }
    leader.commit().unwrap();
}

#[test]
fn small_and_empty_tables_are_read_whole() {
    // The block holding the end mark is claimed open-ended, and an empty table still
    // has one block: no visible row is left out however few there are.
    let e = engine();
    let oid = 9102;
    let t = common::acct::setup(e, oid, 10, 100);
    let mut leader = e.begin();
    let at = leader.snapshot().unwrap();
    leader.set_read_snapshot(Some(at));
    let shared = Arc::new(leader.start_shared_scan(&t));
    let got = read_shared(e, oid, &shared, 2, 3);
    assert_eq!(got.len(), 10);
    // An empty table still gets one (open-ended) block.
    let empty = 9103;
    e.create_table(
        common::table_id(empty),
        TableDef {
            database: 1,
            name: "acct".into(),
            columns: vec![
                ColumnDef::new("id", ColumnType::Int4, false),
                ColumnDef::new("bal", ColumnType::Int8, false),
            ],
        },
    )
    .unwrap();
    let te = e.table(common::table_id(empty)).unwrap();
    let shared = Arc::new(leader.start_shared_scan(&te));
    assert!(read_shared(e, empty, &shared, 2, 3).is_empty());
    leader.commit().unwrap();
}

#[test]
fn a_leader_that_wrote_the_table_reads_it_alone() {
    let e = engine();
    let oid = 9104;
    let t = common::acct::setup(e, oid, 100, 100);
    let mut leader = e.begin();
    leader.insert(&t, &row(&t, 1000, 1), STMT).unwrap();
    let shared = Arc::new(leader.start_shared_scan(&t));
    assert!(shared.leader_only());
    assert!(read_shared(e, oid, &shared, 2, 10).is_empty());
    leader.abort();

    // A TRUNCATE in the transaction: its table is a twin the others cannot see.
    let mut leader = e.begin();
    leader.truncate(&t, 1).unwrap();
    let twin = leader.table(common::table_id(oid)).unwrap();
    let shared = leader.start_shared_scan(&twin);
    assert!(shared.leader_only());
    // The others read nothing, though they see the committed table.
    let mut cursor = SharedCursor::new();
    let mut batch = RowBatch::new();
    assert!(e.shared_scan(&t, &shared, &mut cursor, &mut batch, 10));
    assert!(batch.is_empty() && cursor.done());
    leader.abort();

    // A participant that holds another table than the leader's refuses.
    let mut leader = e.begin();
    let shared = leader.start_shared_scan(&t);
    assert!(!shared.leader_only());
    let other = common::acct::setup(e, oid + 1, 5, 1);
    let mut cursor = SharedCursor::new();
    assert!(!e.shared_scan(&other, &shared, &mut cursor, &mut batch, 10));
    leader.abort();
}
