//! Replaying the redo records that commits and DDL produce rebuilds the same tables:
//! a recording sink captures what the engine hands to the log while four threads run
//! a write workload; a fresh engine replays it (twice: replay is idempotent) and must
//! hold exactly the same rows.

mod common;

use common::*;
use memfdw_engine::redo::payload::{LogRecord, RowImage};
use memfdw_engine::*;

fn config() -> EngineConfig {
    EngineConfig {
        memory_limit: 1 << 30,
    }
}

#[test]
fn replaying_the_log_rebuilds_the_same_tables() {
    let log: &'static Recorder = Box::leak(Box::default());
    let a: &'static Engine = Box::leak(Engine::new(config(), Some(Box::new(Forward(log)))));
    a.create_table(table_id(5), table_def()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|w| std::thread::spawn(move || run_worker(a, 5, w, 900 + w as u64, 800, 0)))
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    // A second table, filled and dropped: replay must not resurrect it.
    a.create_table(table_id(6), table_def()).unwrap();
    let t6 = a.table(table_id(6)).unwrap();
    let mut txn = a.begin();
    txn.insert(
        &t6,
        &pack(&t6.layout, 0, 1, "gone"),
        Stmt { cid: 0, sub: 1 },
    )
    .unwrap();
    txn.commit().unwrap();
    drop(t6);
    assert!(a.drop_table(table_id(6)).unwrap());

    // The engine logged the DDL itself, in order with the commits.
    let records: Vec<LogRecord> = log.0.lock().unwrap().clone();
    assert_eq!(
        records[0],
        LogRecord::CreateTable {
            table: table_id(5),
            def: table_def()
        }
    );
    assert_eq!(
        records.last(),
        Some(&LogRecord::DropTable { table: table_id(6) })
    );

    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    replay_all(b, &records).unwrap();
    let expected = scan_all(a, 5);
    assert!(expected.len() > 500);
    assert_eq!(scan_all(b, 5), expected);
    assert_eq!(
        b.table_stats(table_id(5)).unwrap().rows as usize,
        expected.len()
    );
    assert!(b.table(table_id(6)).is_none());
    // Idempotent: everything again changes nothing.
    replay_all(b, &records).unwrap();
    assert_eq!(scan_all(b, 5), expected);
    assert_eq!(
        b.table_stats(table_id(5)).unwrap().rows as usize,
        expected.len()
    );
    // New work continues above the recovered row ids and TIDs.
    assert!(b.last_tid() >= a.last_tid());
    let t = b.table(table_id(5)).unwrap();
    let mut txn = b.begin();
    let rowid = txn
        .insert(&t, &pack(&t.layout, 9, 9, "new"), Stmt { cid: 0, sub: 1 })
        .unwrap();
    let tid = txn.commit().unwrap();
    let max_logged = records
        .iter()
        .filter_map(|r| match r {
            LogRecord::Commit { writes, .. } => writes.iter().map(|w| w.rowid).max(),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        rowid > max_logged,
        "new row id {rowid} collides with logged ones (max {max_logged})"
    );
    assert!(tid > a.last_tid());
}

#[test]
fn a_row_that_does_not_match_its_table_is_corruption() {
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    replay_all(
        b,
        &[LogRecord::CreateTable {
            table: table_id(1),
            def: table_def(),
        }],
    )
    .unwrap();
    let bad = LogRecord::Commit {
        tid: Tid(3),
        emptied: vec![],
        writes: vec![RowImage {
            table: table_id(1),
            rowid: RowId(1),
            after: Some(vec![0, 1, 2]),
        }],
    };
    assert_eq!(replay_all(b, [&bad]).unwrap_err().sqlstate(), "XX001");
    assert!(scan_all(b, 1).is_empty());
}

/// Every row of table `id` as (worker, key) -> value.
fn rows_of(e: &'static Engine, id: TableId) -> std::collections::BTreeMap<(i32, i64), String> {
    let t = e.table(id).expect("table");
    let mut txn = e.begin();
    let (mut cursor, mut batch) = (ScanCursor::new(), RowBatch::new());
    let mut out = std::collections::BTreeMap::new();
    while !cursor.done() {
        txn.scan(&t, &mut cursor, u32::MAX, &mut batch, 100)
            .unwrap();
        while let Some(r) = batch.next() {
            let w = i32::from_le_bytes(t.layout.get(r.data, 0).unwrap().try_into().unwrap());
            let k = i64::from_le_bytes(t.layout.get(r.data, 1).unwrap().try_into().unwrap());
            let v = String::from_utf8(t.layout.get(r.data, 2).unwrap().to_vec()).unwrap();
            out.insert((w, k), v);
        }
    }
    txn.commit().unwrap();
    out
}

#[test]
fn a_copied_table_is_independent_keeps_its_keys_and_is_logged() {
    let log: &'static Recorder = Box::leak(Box::default());
    let a: &'static Engine = Box::leak(Engine::new(config(), Some(Box::new(Forward(log)))));
    // Database 1 is the template; database 2 its copy (same relation OID).
    let (src, dst) = (TableId::new(1, 40), TableId::new(2, 40));
    a.create_table(src, table_def()).unwrap();
    let t = a.table(src).unwrap();
    let mut txn = a.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: a.next_index_id(),
            name: "stress_key".into(),
            columns: vec![0, 1],
            unique: true,
            primary: true,
        },
    )
    .unwrap();
    txn.commit().unwrap();
    let mut txn = a.begin();
    for k in 0..25_000 {
        txn.insert(&t, &pack(&t.layout, 0, k, "v"), Stmt { cid: 0, sub: 1 })
            .unwrap();
    }
    txn.commit().unwrap();
    assert_eq!(a.copy_table(src, dst).unwrap(), 25_000);
    let c = a.table(dst).unwrap();
    assert_eq!(c.def.database, 2);
    assert_eq!(rows_of(a, dst), rows_of(a, src));
    let names = |t: &TableHandle| {
        t.index_defs()
            .into_iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&c), names(&t));
    // The copy enforces its own keys, and writes to it leave the template alone.
    let mut txn = a.begin();
    let dup = txn.insert(&c, &pack(&c.layout, 0, 7, "dup"), Stmt { cid: 0, sub: 1 });
    assert_eq!(dup.unwrap_err().sqlstate(), "23505");
    txn.abort();
    let mut txn = a.begin();
    txn.insert(
        &c,
        &pack(&c.layout, 1, 7, "only in the copy"),
        Stmt { cid: 0, sub: 1 },
    )
    .unwrap();
    txn.commit().unwrap();
    assert_eq!(rows_of(a, dst).len(), 25_001);
    assert_eq!(rows_of(a, src).len(), 25_000);
    // Replaying the log rebuilds both, independently.
    let records: Vec<LogRecord> = log.0.lock().unwrap().clone();
    let b: &'static Engine = Box::leak(Engine::new(config(), None));
    replay_all(b, &records).unwrap();
    assert_eq!(rows_of(b, src), rows_of(a, src));
    assert_eq!(rows_of(b, dst), rows_of(a, dst));
    // Dropping the copy leaves the template's table.
    assert!(a.drop_table(dst).unwrap());
    assert_eq!(rows_of(a, src).len(), 25_000);
    // A copy over a leftover table of the new database replaces it.
    a.create_table(TableId::new(3, 40), table_def()).unwrap();
    assert_eq!(a.copy_table(src, TableId::new(3, 40)).unwrap(), 25_000);
}
