//! ALTER TABLE's rewrite: a transaction redefines a table (new columns, dropped
//! columns, new or dropped indexes), fills the empty replacement with the old rows
//! rewritten, and commits it as one logged change; an abort or a savepoint rollback
//! leaves the old table; replay gives the new table with its definition and indexes.

mod common;

use common::*;
use memfdw_engine::*;

const S1: Stmt = Stmt { cid: 0, sub: 1 };

fn logged_engine() -> (&'static Engine, &'static Recorder) {
    let log: &'static Recorder = Box::leak(Box::default());
    let e: &'static Engine = Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        Some(Box::new(Forward(log))),
    ));
    table_with_key(e, 1);
    (e, log)
}

fn fill(e: &'static Engine, keys: std::ops::Range<i64>) {
    let t = e.table(table_id(1)).unwrap();
    let mut txn = e.begin();
    for k in keys {
        txn.insert(&t, &pack(&t.layout, 0, k, &format!("v{k}")), S1)
            .unwrap();
    }
    txn.commit().unwrap();
}

/// The table after `ALTER ... DROP COLUMN val, ADD COLUMN extra bigint` with a new
/// unique index on `extra`.
fn new_def() -> TableDef {
    let mut d = table_def();
    d.columns[2] = ColumnDef::new("........pg.dropped.3........", ColumnType::Dropped, true);
    d.columns
        .push(ColumnDef::new("extra", ColumnType::Int8, true));
    d
}

/// Redefines table 1 in `txn` and copies its rows with `extra` = f(key); returns the
/// number of rows copied or the first error.
fn rewrite(
    e: &'static Engine,
    txn: &mut TxnHandle,
    sub: u32,
    extra: impl Fn(i64) -> i64,
) -> Result<usize> {
    let old = txn.table(table_id(1)).unwrap();
    let mut rows = Vec::new();
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    while !cursor.done() {
        txn.scan_newest(&old, &mut cursor, 100, &mut batch, 64)?;
        while let Some(r) = batch.next() {
            rows.push(r.data.to_vec());
        }
    }
    let mut indexes = old.index_defs();
    indexes.push(IndexDef {
        id: e.next_index_id(),
        name: "extra_key".into(),
        columns: vec![3],
        unique: true,
        primary: false,
    });
    txn.redefine(&old, new_def(), &indexes, sub)?;
    let new = txn.table(table_id(1)).unwrap();
    for r in &rows {
        let worker = old.layout.get(r, 0).unwrap();
        let key = old.layout.get(r, 1).unwrap();
        let k = i64::from_le_bytes(key.try_into().unwrap());
        let x = extra(k).to_le_bytes();
        let packed = new
            .layout
            .pack(&[Some(worker), Some(key), None, Some(&x)])?;
        txn.insert(&new, &packed, Stmt { cid: 101, sub })?;
    }
    Ok(rows.len())
}

fn contents(e: &'static Engine) -> Vec<(i32, i64, Option<i64>)> {
    let t = e.table(table_id(1)).unwrap();
    let mut txn = e.begin();
    let mut out = Vec::new();
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    while !cursor.done() {
        txn.scan(&t, &mut cursor, 0, &mut batch, 64).unwrap();
        while let Some(r) = batch.next() {
            let w = i32::from_le_bytes(t.layout.get(r.data, 0).unwrap().try_into().unwrap());
            let k = i64::from_le_bytes(t.layout.get(r.data, 1).unwrap().try_into().unwrap());
            let x = t
                .layout
                .get(r.data, 3)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()));
            assert!(
                t.layout.get(r.data, 2).is_none(),
                "a dropped column is NULL"
            );
            out.push((w, k, x));
        }
    }
    txn.commit().unwrap();
    out.sort();
    out
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
fn a_committed_rewrite_replaces_definition_rows_and_indexes() {
    let (e, log) = logged_engine();
    fill(e, 0..200);
    let mut txn = e.begin();
    assert_eq!(rewrite(e, &mut txn, 1, |k| k * 10).unwrap(), 200);
    // Others see the old table until the commit.
    assert_eq!(e.table(table_id(1)).unwrap().def, table_def());
    txn.commit().unwrap();
    let t = e.table(table_id(1)).unwrap();
    assert_eq!(t.def.columns, new_def().columns);
    let names: Vec<String> = t.index_defs().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["pk", "extra_key"]);
    let rows = contents(e);
    assert_eq!(rows.len(), 200);
    assert!(rows.iter().all(|&(_, k, x)| x == Some(k * 10)));
    // The new unique index works.
    let mut txn = e.begin();
    let dup = t
        .layout
        .pack(&[
            Some(&7i32.to_le_bytes()),
            Some(&1i64.to_le_bytes()),
            None,
            Some(&50i64.to_le_bytes()),
        ])
        .unwrap();
    let err = txn
        .insert(&t, &dup, S1)
        .err()
        .or_else(|| txn.commit().err())
        .expect("a duplicate extra value");
    assert_eq!(err.sqlstate(), "23505");
    txn.abort();
    // Replay gives the same definition, indexes and rows.
    let b = replayed(log);
    let bt = b.table(table_id(1)).unwrap();
    assert_eq!(bt.def, t.def);
    assert_eq!(bt.index_defs(), t.index_defs());
    assert_eq!(contents(b), rows);
}

#[test]
fn an_aborted_or_rolled_back_rewrite_leaves_the_old_table() {
    let (e, log) = logged_engine();
    fill(e, 0..50);
    let mut txn = e.begin();
    rewrite(e, &mut txn, 1, |k| k).unwrap();
    txn.abort();
    assert_eq!(e.table(table_id(1)).unwrap().def, table_def());
    assert_eq!(scan_all(e, 1).len(), 50);
    // Savepoint: the rewrite of subtransaction 2 is rolled back.
    let mut txn = e.begin();
    rewrite(e, &mut txn, 2, |k| k).unwrap();
    txn.rollback_to(2);
    let t = txn.table(table_id(1)).unwrap();
    assert_eq!(t.def, table_def());
    txn.insert(&t, &pack(&t.layout, 1, 1, "new"), S1).unwrap();
    txn.commit().unwrap();
    assert_eq!(scan_all(e, 1).len(), 51);
    assert_eq!(scan_all(replayed(log), 1), scan_all(e, 1));
}

#[test]
fn a_rewrite_meeting_a_duplicate_key_fails_and_changes_nothing() {
    let (e, _log) = logged_engine();
    fill(e, 0..20);
    let mut txn = e.begin();
    let err = rewrite(e, &mut txn, 1, |k| k % 7)
        .err()
        .or_else(|| txn.commit().err())
        .expect("duplicate extra values");
    assert_eq!(err.sqlstate(), "23505");
    txn.abort();
    assert_eq!(e.table(table_id(1)).unwrap().def, table_def());
    assert_eq!(scan_all(e, 1).len(), 20);
}

#[test]
fn a_rewrite_keeps_rows_committed_after_a_repeatable_read_snapshot() {
    let (e, _log) = logged_engine();
    fill(e, 0..10);
    let mut txn = e.begin();
    txn.set_isolation(Isolation::RepeatableRead).unwrap();
    fill(e, 10..15);
    assert_eq!(rewrite(e, &mut txn, 1, |k| k).unwrap(), 15);
    txn.commit().unwrap();
    assert_eq!(contents(e).len(), 15);
}

#[test]
fn new_definitions_are_validated() {
    let (e, _log) = logged_engine();
    let mut txn = e.begin();
    let t = txn.table(table_id(1)).unwrap();
    let mut bad = table_def();
    bad.columns.push(ColumnDef::new(
        "x",
        ColumnType::Other {
            len: 3,
            byval: true,
        },
        true,
    ));
    assert_eq!(
        txn.redefine(&t, bad, &[], 1).unwrap_err().sqlstate(),
        "0A000"
    );
    // An index on a column without a key encoding.
    let mut def = table_def();
    def.columns.push(ColumnDef::new(
        "arr",
        ColumnType::Other {
            len: -1,
            byval: false,
        },
        true,
    ));
    let idx = IndexDef {
        id: e.next_index_id(),
        name: "arr_idx".into(),
        columns: vec![3],
        unique: false,
        primary: false,
    };
    // (The glue says 0A000 or 42704 by whether PostgreSQL has a btree operator class.)
    assert!(matches!(
        txn.redefine(&t, def, &[idx], 1),
        Err(Error::NotIndexable { .. })
    ));
}

#[test]
fn a_redefining_commit_waits_while_a_checkpoint_writes_tables() {
    let (e, log) = logged_engine();
    fill(e, 0..10);
    // A checkpoint holds the gate: the ALTER's commit must not append or install.
    let gate = e.close_redefines();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut txn = e.begin();
            rewrite(e, &mut txn, 1, |k| k).unwrap();
            txn.commit().unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!done.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(e.table(table_id(1)).unwrap().def, table_def());
    // Commits to other tables go on meanwhile.
    let other = table_with_key(e, 2);
    let mut txn = e.begin();
    txn.insert(&other, &pack(&other.layout, 0, 1, "x"), S1)
        .unwrap();
    txn.commit().unwrap();
    drop(gate);
    worker.join().unwrap();
    assert_eq!(e.table(table_id(1)).unwrap().def.columns, new_def().columns);
    assert_eq!(contents(e).len(), 10);
    assert_eq!(contents(replayed(log)).len(), 10);
    assert_eq!(scan_all(replayed(log), 2).len(), 1);
}
