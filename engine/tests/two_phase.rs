//! Commits in two halves, as PostgreSQL's PRE_COMMIT and COMMIT drive them: nothing
//! is visible between them (readers of the rows wait, and see the commit once
//! finished), an abort after the first half leaves nothing, and recovery applies a
//! commit tagged with a PostgreSQL transaction id only if that transaction committed.

mod common;

use common::*;
use memfdw_engine::recovery::recover_engine_with;
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::*;
use std::collections::BTreeMap;
use std::time::Duration;

const STMT: Stmt = Stmt { cid: 0, sub: 1 };

fn logged_engine(dir: &str) -> &'static Engine {
    let _ = std::fs::remove_dir_all(dir);
    let log: &'static SharedLog = Box::leak(SharedLog::start(dir, Lsn(0), 1 << 20).unwrap());
    Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        Some(Box::new(LogSink(log))),
    ))
}

fn insert(e: &'static Engine, t: &TableHandle, keys: &[i64]) -> TxnHandle {
    let mut w = e.begin();
    for &k in keys {
        w.insert(t, &pack(&t.layout, 0, k, "v"), STMT).unwrap();
    }
    w
}

#[test]
fn a_prepared_commit_is_invisible_until_finished_and_readers_wait_for_it() {
    let e = engine();
    let t = table_with_key(e, 1);
    insert(e, &t, &[1]).commit().unwrap();
    let mut w = e.begin();
    let mut row = Vec::new();
    let tid = w.get(&t, RowId(1), 0, &mut row).unwrap();
    w.update(&t, RowId(1), tid, &pack(&t.layout, 0, 1, "new"), STMT)
        .unwrap();
    w.prepare(Some(42), true).unwrap();
    // A reader of the row waits until the commit is finished, then sees it.
    let reader = std::thread::spawn(move || scan_all(e, 1));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !reader.is_finished(),
        "a reader must not see a prepared commit"
    );
    assert!(w.finish(true).unwrap() > tid);
    let seen = reader.join().unwrap();
    assert_eq!(seen.get(&(0, 1)).map(String::as_str), Some("new"));
}

#[test]
fn an_abort_after_prepare_leaves_nothing() {
    let e = engine();
    let t = table_with_key(e, 2);
    insert(e, &t, &[1, 2]).commit().unwrap();
    let before = scan_all(e, 2);
    let mut w = insert(e, &t, &[3]);
    let mut row = Vec::new();
    let tid = w.get(&t, RowId(1), 0, &mut row).unwrap();
    w.update(&t, RowId(1), tid, &pack(&t.layout, 0, 1, "changed"), STMT)
        .unwrap();
    let tid2 = w.get(&t, RowId(2), 0, &mut row).unwrap();
    w.delete(&t, RowId(2), tid2, STMT).unwrap();
    w.prepare(None, true).unwrap();
    w.abort();
    assert_eq!(scan_all(e, 2), before);
    // Its locks and its key are free again.
    let mut w2 = insert(e, &t, &[3]);
    let tid = w2.get(&t, RowId(1), 0, &mut row).unwrap();
    w2.update(&t, RowId(1), tid, &pack(&t.layout, 0, 1, "later"), STMT)
        .unwrap();
    w2.commit().unwrap();
    let after = scan_all(e, 2);
    assert_eq!(after.len(), 3);
    assert_eq!(after.get(&(0, 1)).map(String::as_str), Some("later"));
}

#[test]
fn recovery_applies_a_tagged_commit_only_if_its_transaction_committed() {
    let dir = format!("/tmp/memfdw-two-phase-{}", std::process::id());
    let e = logged_engine(&dir);
    e.create_table(table_id(3), table_def()).unwrap();
    let t = e.table(table_id(3)).unwrap();
    // xid 100 commits; xid 101's PostgreSQL commit never happened (a crash before its
    // commit record, or a failure after PRE_COMMIT); a commit without xid is memfdw's.
    let mut a = insert(e, &t, &[1]);
    a.prepare(Some(100), true).unwrap();
    a.finish(true).unwrap();
    let mut b = insert(e, &t, &[2]);
    b.prepare(Some(101), true).unwrap();
    b.abort();
    insert(e, &t, &[3]).commit().unwrap();
    // A big commit (logged in parts) of a transaction that did not commit either.
    let big: Vec<i64> = (10..5000).collect();
    let mut c = e.begin();
    let pad = "p".repeat(400);
    for &k in &big {
        c.insert(&t, &pack(&t.layout, 0, k, &pad), STMT).unwrap();
    }
    c.prepare(Some(102), true).unwrap();
    c.abort();
    // One of a committed transaction after it.
    let mut d = insert(e, &t, &[4]);
    d.prepare(Some(103), true).unwrap();
    d.finish(true).unwrap();
    let live = scan_all(e, 3);

    let fresh: &'static Engine = engine();
    let r = recover_engine_with(fresh, &dir, |_| true, |xid| xid == 100 || xid == 103).unwrap();
    assert_eq!(r.aborted_commits, 2, "{r:?}");
    let recovered = scan_all(fresh, 3);
    assert_eq!(recovered, live);
    let keys: Vec<i64> = recovered.keys().map(|k| k.1).collect();
    assert_eq!(keys, vec![1, 3, 4]);
    // Without the oracle every logged commit would come back.
    let naive: &'static Engine = engine();
    recover_engine_with(naive, &dir, |_| true, |_| true).unwrap();
    let all: BTreeMap<_, _> = scan_all(naive, 3);
    assert_eq!(all.len(), 3 + 1 + big.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_uncommitted_insert_holds_its_unique_key_for_others() {
    let e = engine();
    let t = table_with_key(e, 4);
    for commit in [true, false] {
        let k = commit as i64;
        let mut a = insert(e, &t, &[k]);
        let mut b = e.begin();
        let r = b.insert(&t, &pack(&t.layout, 0, k, "b"), STMT);
        let Err(Error::KeyPending { holder }) = r else {
            panic!("expected to wait for the inserter: {r:?}");
        };
        assert_eq!(
            rowlock::txn_of(holder),
            a.lock_tag(),
            "the inserter is named"
        );
        if commit {
            a.commit().unwrap();
            assert!(matches!(
                b.insert(&t, &pack(&t.layout, 0, k, "b"), STMT),
                Err(Error::UniqueViolation { .. })
            ));
        } else {
            a.abort();
            b.insert(&t, &pack(&t.layout, 0, k, "b"), STMT).unwrap();
            b.commit().unwrap();
        }
    }
    let keys: Vec<(i64, String)> = scan_all(e, 4)
        .into_iter()
        .map(|((_, k), v)| (k, v))
        .collect();
    assert_eq!(keys, vec![(0, "b".into()), (1, "v".into())]);
}

/// Two transactions give two rows the same new key by updates (new keys of updated
/// rows are linked at commit, so neither statement saw the other's). The first to
/// prepare holds the key's stripe until it finishes; the other then finds the key
/// taken. The first also inserts more rows than the commit encodes keys for (it takes
/// every stripe instead): the key's stripe must be among them.
#[test]
fn a_large_commit_holds_the_stripes_of_its_new_keys() {
    let e = engine();
    let t = table_with_key(e, 5);
    insert(e, &t, &[1, 2]).commit().unwrap();
    const TAKEN: i64 = 1_000_000;
    let update_to = |txn: &mut TxnHandle, rowid: u64| {
        let mut row = Vec::new();
        let tid = txn.get(&t, RowId(rowid), 0, &mut row).unwrap();
        txn.update(&t, RowId(rowid), tid, &pack(&t.layout, 0, TAKEN, "u"), STMT)
            .unwrap();
    };
    for (big, first) in [(20_000i64, 10i64), (10, 100_000)] {
        let mut small = e.begin();
        update_to(&mut small, 1);
        let mut large = insert(e, &t, &(first..first + big).collect::<Vec<_>>());
        update_to(&mut large, 2);
        large.prepare(None, true).unwrap();
        let waiter = std::thread::spawn(move || small.commit());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiter.is_finished(),
            "the key's stripe is held ({big} rows)"
        );
        large.finish(true).unwrap();
        assert!(
            matches!(waiter.join().unwrap(), Err(Error::UniqueViolation { .. })),
            "{big} rows"
        );
        // Back to the rows 1 and 2 for the next round.
        let mut undo = e.begin();
        let mut row = Vec::new();
        let tid = undo.get(&t, RowId(2), 0, &mut row).unwrap();
        undo.update(&t, RowId(2), tid, &pack(&t.layout, 0, 2, "v"), STMT)
            .unwrap();
        undo.commit().unwrap();
    }
    assert_eq!(scan_all(e, 5).len(), 2 + 20_010);
}

/// A commit that loads many rows into a table without a unique key, and one row into
/// a table with one, holds only that row's key stripe: another transaction's commit
/// of another key in that table goes through while the first is prepared.
#[test]
fn a_large_load_of_a_table_without_unique_keys_holds_no_other_stripes() {
    let e = engine();
    let keyed = table_with_key(e, 6);
    e.create_table(table_id(7), table_def()).unwrap();
    let plain = e.table(table_id(7)).unwrap();
    let mut load = e.begin();
    for k in 0..20_000 {
        load.insert(&plain, &pack(&plain.layout, 0, k, "p"), STMT)
            .unwrap();
    }
    load.insert(&keyed, &pack(&keyed.layout, 0, 1, "k"), STMT)
        .unwrap();
    load.prepare(None, true).unwrap();
    let other = std::thread::spawn(move || insert(e, &keyed, &[2]).commit());
    std::thread::sleep(Duration::from_millis(100));
    assert!(other.is_finished(), "the other key's stripe is free");
    other.join().unwrap().unwrap();
    load.finish(true).unwrap();
    assert_eq!(scan_all(e, 6).len(), 2);
    assert_eq!(scan_all(e, 7).len(), 20_000);
}
