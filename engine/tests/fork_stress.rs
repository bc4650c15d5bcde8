//! Multi-process stress test: the engine lives in a `MAP_SHARED` anonymous mapping
//! behind the routing allocator (as in PostgreSQL's shared memory); four forked
//! processes run disjoint write workloads with aborts and concurrent scans. The parent
//! checks the exact final contents against the model, then deletes everything and
//! checks that the memory came back across processes.
//!
//! `harness = false`: forking from libtest's worker threads is not safe.

mod common;

use common::*;
use memfdw_engine::alloc::{install_arena, RoutingAllocator};
use memfdw_engine::arena::Arena;
use memfdw_engine::*;
use std::collections::BTreeMap;

#[global_allocator]
static ALLOC: RoutingAllocator = RoutingAllocator;

const WORKERS: i32 = 4;
const TXNS: usize = 1500;
const REGION: usize = 256 << 20;

fn main() {
    let mut passed = 0;
    let mut failed = 0;
    for (name, f) in [
        (
            "fork_stress::four_processes_match_model",
            four_processes_match_model as fn(),
        ),
        (
            "fork_stress::memory_limit_refuses_then_recovers",
            memory_limit_refuses_then_recovers as fn(),
        ),
        (
            "fork_stress::table_created_by_a_child_is_shared",
            table_created_by_a_child_is_shared as fn(),
        ),
        (
            "fork_stress::processes_share_one_redo_log",
            processes_share_one_redo_log as fn(),
        ),
        (
            "fork_stress::processes_racing_for_unique_keys_one_wins_each",
            processes_racing_for_unique_keys_one_wins_each as fn(),
        ),
        (
            "fork_stress::snapshot_readers_in_other_processes_see_constant_totals",
            snapshot_readers_in_other_processes_see_constant_totals as fn(),
        ),
        (
            "fork_stress::processes_share_one_b_tree_index",
            processes_share_one_b_tree_index as fn(),
        ),
    ] {
        match std::panic::catch_unwind(f) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn shared_region(len: usize) -> *mut u8 {
    // SAFETY: anonymous shared mapping; checked for failure below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap failed");
    p as *mut u8
}

fn setup(len: usize) -> &'static Engine {
    let region = shared_region(len);
    // SAFETY: a fresh mapping used only as this arena, inherited at the same address by
    // the children forked below.
    let arena = unsafe { Arena::init(region, len) };
    install_arena(arena);
    let engine = Engine::new(EngineConfig::for_arena(arena.stats().capacity), None);
    assert!(
        arena.contains(&*engine as *const Engine as *const u8),
        "engine lives in the arena"
    );
    Box::leak(engine)
}

/// Forks `n` children running `f(i)`; returns true if all exited 0.
fn fork_all(n: i32, f: impl Fn(i32)) -> bool {
    let mut pids = Vec::new();
    for i in 0..n {
        // SAFETY: the parent is single-threaded here (harness = false).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))).is_ok();
            memfdw_engine::epoch::unregister_current();
            memfdw_engine::alloc::release_thread_cache();
            // SAFETY: leave without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    let mut all_ok = true;
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        all_ok &= libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    }
    all_ok
}

fn four_processes_match_model() {
    let engine = setup(REGION);
    engine.create_table(table_id(7), table_def()).unwrap();
    let arena = memfdw_engine::alloc::arena().unwrap();
    let baseline = arena.stats().in_use;

    assert!(fork_all(WORKERS, |w| run_worker(
        engine,
        7,
        w,
        500 + w as u64,
        TXNS,
        150
    )));

    let all = scan_all(engine, 7);
    let mut expected = BTreeMap::new();
    for w in 0..WORKERS {
        for (k, v) in plan(500 + w as u64, TXNS).1 {
            expected.insert((w, k), v);
        }
    }
    assert_eq!(all.len(), expected.len());
    assert_eq!(all, expected);
    assert_eq!(
        engine.table_stats(table_id(7)).unwrap().rows as usize,
        expected.len()
    );

    // Delete everything from another set of processes; memory comes back.
    let peak = arena.stats().in_use;
    assert!(fork_all(2, |half| {
        let t = engine.table(table_id(7)).unwrap();
        let mut txn = engine.begin();
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        let mut victims = Vec::new();
        while !cursor.done() {
            txn.scan(&t, &mut cursor, 0, &mut batch, 256).unwrap();
            while let Some(r) = batch.next() {
                if r.rowid.get() % 2 == half as u64 {
                    victims.push((r.rowid, r.tid));
                }
            }
        }
        for (rowid, tid) in victims {
            assert_eq!(
                txn.delete(&t, rowid, tid, Stmt { cid: 1, sub: 1 }).unwrap(),
                WriteOutcome::Done
            );
        }
        txn.commit().unwrap();
        engine.reclaim();
    }));
    assert!(scan_all(engine, 7).is_empty());
    for _ in 0..8 {
        engine.reclaim();
    }
    let after = arena.stats().in_use;
    assert!(
        after - baseline < (peak - baseline) / 4,
        "memory not reclaimed: baseline {baseline}, peak {peak}, after {after}"
    );
    assert!(engine.drop_table(table_id(7)).unwrap());
}

fn memory_limit_refuses_then_recovers() {
    let engine = setup(32 << 20);
    engine.create_table(table_id(9), table_def()).unwrap();
    let t = engine.table(table_id(9)).unwrap();
    let big = "x".repeat(2000);
    let fill = |engine: &'static Engine| -> usize {
        let mut n = 0;
        loop {
            let mut txn = engine.begin();
            match txn.insert(
                &t,
                &pack(&t.layout, 0, n as i64, &big),
                Stmt { cid: 0, sub: 1 },
            ) {
                Ok(_) => {
                    txn.commit().unwrap();
                    n += 1;
                }
                Err(Error::OutOfMemory { .. }) => return n,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    };
    let first = fill(engine);
    assert!(first > 1000, "only {first} rows fit");
    assert_eq!(
        scan_all(engine, 9).len(),
        first,
        "committed rows intact after the refusal"
    );
    // Delete everything in a child process (a full engine can be emptied: deletes may
    // use part of the headroom for their bookkeeping), then the space is usable again
    // here.
    assert!(fork_all(1, |_| {
        let mut v = Vec::new();
        let mut txn = engine.begin();
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        while !cursor.done() {
            txn.scan(&t, &mut cursor, 0, &mut batch, 256).unwrap();
            while let Some(r) = batch.next() {
                v.push((r.rowid, r.tid));
            }
        }
        txn.commit().unwrap();
        for chunk in v.chunks(first / 4) {
            let mut txn = engine.begin();
            for &(rowid, tid) in chunk {
                if let Err(e) = txn.delete(&t, rowid, tid, Stmt { cid: 1, sub: 1 }) {
                    panic!("{e} {:?}", engine.memory())
                }
            }
            txn.commit().unwrap();
        }
    }));
    assert!(scan_all(engine, 9).is_empty());
    let second = fill(engine);
    assert!(
        second * 10 >= first * 9,
        "after delete only {second} of {first} rows fit again"
    );
}

/// A table defined in one process (its definition built in that process's private
/// heap) is usable by every other process.
fn table_created_by_a_child_is_shared() {
    let engine = setup(32 << 20);
    assert!(fork_all(1, |_| {
        // Make the private heap differ from the parent's before building the def.
        let noise: Vec<String> = (0..1000).map(|i| format!("noise {i}")).collect();
        let mut def = table_def();
        def.name = format!("made-by-child-{}", noise.len());
        engine.create_table(table_id(21), def).unwrap();
        let t = engine.table(table_id(21)).unwrap();
        let mut txn = engine.begin();
        txn.insert(&t, &pack(&t.layout, 3, 4, "five"), Stmt { cid: 0, sub: 1 })
            .unwrap();
        txn.commit().unwrap();
        drop(noise);
    }));
    let t = engine.table(table_id(21)).expect("table made by the child");
    assert_eq!(t.def.name, "made-by-child-1000");
    assert_eq!(t.def.columns, table_def().columns);
    drop(t);
    let rows = scan_all(engine, 21);
    assert_eq!(
        rows.into_iter().collect::<Vec<_>>(),
        vec![((3, 4), "five".to_string())]
    );
}

/// Four processes commit through one shared redo log (small segments, so they rotate
/// it under each other); recovery from the files rebuilds exactly the same table.
fn processes_share_one_redo_log() {
    use memfdw_engine::recovery::recover_engine;
    use memfdw_engine::redo::shared::SharedLog;
    let dir = format!("/tmp/memfdw-fork-redo-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    // A fresh arena; the engine built with the log below lives in it too.
    let _ = setup(REGION);
    let log = {
        let _s = memfdw_engine::scope::enter();
        SharedLog::start(&dir, Lsn(0), 64 << 10).unwrap()
    };
    let config = EngineConfig::for_arena(memfdw_engine::alloc::arena().unwrap().stats().capacity);
    let a: &'static Engine = Box::leak(Engine::new(config, Some(log)));
    a.create_table(table_id(31), table_def()).unwrap();
    assert!(fork_all(WORKERS, |w| run_worker(
        a,
        31,
        w,
        700 + w as u64,
        400,
        0
    )));
    let segments = memfdw_engine::redo::files::segments(&dir).unwrap();
    assert!(segments.len() > 2, "segments rotated: {segments:?}");
    let b: &'static Engine = Box::leak(Engine::new(config, None));
    let r = recover_engine(b, &dir).unwrap();
    assert!(r.truncated.is_none());
    let expected = scan_all(a, 31);
    assert!(!expected.is_empty());
    assert_eq!(scan_all(b, 31), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Four processes insert the same keys into a table with a unique index, each key in
/// its own transaction: every key ends up exactly once, and losers get 23505 (or a
/// busy-key 40001), never a duplicate.
fn processes_racing_for_unique_keys_one_wins_each() {
    const KEYS: i64 = 400;
    let engine = setup(64 << 20);
    engine.create_table(table_id(31), table_def()).unwrap();
    let t = engine.table(table_id(31)).unwrap();
    let mut txn = engine.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: 31,
            name: "race_key".into(),
            columns: vec![1],
            unique: true,
            primary: false,
        },
    )
    .unwrap();
    txn.commit().unwrap();
    drop(t);
    assert!(fork_all(WORKERS, |w| {
        let t = engine.table(table_id(31)).unwrap();
        for k in 0..KEYS {
            let mut txn = engine.begin();
            let r = txn
                .insert(&t, &pack(&t.layout, w, k, "x"), Stmt { cid: 0, sub: 1 })
                .and_then(|_| txn.commit());
            match r {
                // KeyPending: another process's insert of the key is not committed
                // yet (the glue would wait for it; here the process moves on).
                Ok(_)
                | Err(Error::UniqueViolation { .. })
                | Err(Error::KeyPending { .. })
                | Err(Error::Conflict(AbortReason::UniqueKeyBusy)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }));
    let rows = scan_all(engine, 31);
    let mut per_key = BTreeMap::new();
    for (_, k) in rows.keys() {
        *per_key.entry(*k).or_insert(0) += 1;
    }
    assert!(
        per_key.values().all(|&n| n == 1),
        "a key was inserted twice"
    );
    assert!(
        per_key.len() as i64 > KEYS * 9 / 10,
        "only {} keys won",
        per_key.len()
    );
    let t = engine.table(table_id(31)).unwrap();
    assert_eq!(t.index_entries(31), Some(rows.len()));
}

/// Two processes move amounts between accounts while two others sum them at
/// snapshots (read committed statement snapshots and repeatable read): every sum is
/// the total, and once all have ended the old versions are reclaimed across processes.
fn snapshot_readers_in_other_processes_see_constant_totals() {
    const ACCOUNTS: i64 = 40;
    const TOTAL: i64 = ACCOUNTS * 100;
    let engine = setup(64 << 20);
    engine.create_table(table_id(41), table_def()).unwrap();
    let t = engine.table(table_id(41)).unwrap();
    let mut txn = engine.begin();
    for k in 0..ACCOUNTS {
        txn.insert(&t, &pack(&t.layout, 0, k, "100"), Stmt { cid: 0, sub: 1 })
            .unwrap();
    }
    txn.commit().unwrap();
    drop(t);
    let sum = |txn: &mut TxnHandle, t: &TableHandle| -> i64 {
        let (mut cursor, mut batch) = (ScanCursor::new(), RowBatch::new());
        let mut total = 0;
        while !cursor.done() {
            txn.scan(t, &mut cursor, u32::MAX, &mut batch, 7).unwrap();
            while let Some(r) = batch.next() {
                total += unpack(&t.layout, r.data).2.parse::<i64>().unwrap();
            }
        }
        total
    };
    assert!(fork_all(4, |p| {
        let t = engine.table(table_id(41)).unwrap();
        let mut rng = Rng::new(p as u64 + 1);
        if p < 2 {
            // Transfers: read the newest versions, move an amount, commit.
            for _ in 0..1500 {
                let mut txn = engine.begin();
                let (a, b) = (
                    rng.below(ACCOUNTS as u64) + 1,
                    rng.below(ACCOUNTS as u64) + 1,
                );
                if a == b {
                    continue;
                }
                let amount = rng.below(20) as i64;
                let mut row = Vec::new();
                let mut ok = true;
                for (rowid, delta) in [(a, -amount), (b, amount)] {
                    let rowid = RowId(rowid);
                    let Some(tid) = txn.get(&t, rowid, 0, &mut row) else {
                        ok = false;
                        break;
                    };
                    let (w, k, v) = unpack(&t.layout, &row);
                    let v = (v.parse::<i64>().unwrap() + delta).to_string();
                    if txn
                        .update(
                            &t,
                            rowid,
                            tid,
                            &pack(&t.layout, w, k, &v),
                            Stmt { cid: 0, sub: 1 },
                        )
                        .is_err()
                    {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    let _ = txn.commit();
                }
            }
        } else {
            for round in 0..300 {
                let mut txn = engine.begin();
                if round % 2 == 0 {
                    let s = txn.snapshot().unwrap();
                    txn.set_read_snapshot(Some(s));
                } else {
                    txn.set_isolation(txn::Isolation::RepeatableRead).unwrap();
                }
                assert_eq!(sum(&mut txn, &t), TOTAL, "round {round}");
                std::thread::yield_now();
                assert_eq!(sum(&mut txn, &t), TOTAL, "round {round}, same snapshot");
                txn.commit().unwrap();
            }
        }
    }));
    let t = engine.table(table_id(41)).unwrap();
    let mut txn = engine.begin();
    assert_eq!(sum(&mut txn, &t), TOTAL);
    txn.commit().unwrap();
    engine.reclaim_versions(usize::MAX);
    let stats = engine.version_stats();
    assert_eq!(
        (stats.versions, stats.queued, stats.oldest),
        (0, 0, None),
        "{stats:?}"
    );
}

/// Rows in key order through index `index` of `t` (all of them, or from `from` on).
fn index_rows(e: &'static Engine, t: &TableHandle, index: u32) -> Vec<(i32, i64)> {
    let mut txn = e.begin();
    let mut scan = IndexScan::new(index, &[], None, false);
    let mut batch = RowBatch::new();
    let mut out = Vec::new();
    while !scan.done() {
        txn.index_scan(t, &mut scan, u32::MAX, &mut batch, 256)
            .unwrap();
        while let Some(r) = batch.next() {
            let (w, k, _) = unpack(&t.layout, r.data);
            out.push((w, k));
        }
    }
    txn.commit().unwrap();
    out
}

/// Four processes write one B+tree index at once (an int8 key: its entries are in a
/// B+tree), with keys interleaved so that they split the same leaves, then delete
/// every other row of theirs (emptying and removing leaves) while a fifth process
/// scans the index: every scan is in key order and sees every row that stays; at the
/// end the index holds exactly the rows.
fn processes_share_one_b_tree_index() {
    const PER: i64 = 3000;
    let engine = setup(128 << 20);
    engine.create_table(table_id(41), table_def()).unwrap();
    let t = engine.table(table_id(41)).unwrap();
    let mut txn = engine.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: 41,
            name: "by_key".into(),
            columns: vec![1],
            unique: false,
            primary: false,
        },
    )
    .unwrap();
    txn.commit().unwrap();
    // Rows that stay (even i) exist before the readers start.
    let key = |w: i32, i: i64| i * 4 + w as i64;
    let mut txn = engine.begin();
    for w in 0..WORKERS {
        for i in (0..PER).step_by(2) {
            txn.insert(
                &t,
                &pack(&t.layout, w, key(w, i), "stay"),
                Stmt { cid: 0, sub: 1 },
            )
            .unwrap();
        }
    }
    txn.commit().unwrap();
    drop(t);
    assert!(fork_all(WORKERS + 1, |w| {
        let t = engine.table(table_id(41)).unwrap();
        if w == WORKERS {
            // The reader: ordered scans that always see the rows that stay.
            for _ in 0..40 {
                let rows = index_rows(engine, &t, 41);
                assert!(rows.windows(2).all(|p| p[0].1 < p[1].1), "out of order");
                let stay = rows.iter().filter(|r| (r.1 / 4) % 2 == 0).count() as i64;
                assert_eq!(stay, WORKERS as i64 * PER / 2);
            }
            return;
        }
        // Writers: the odd rows in, ascending, 50 to a commit; then out again.
        for chunk in (1..PER).step_by(2).collect::<Vec<_>>().chunks(50) {
            let mut txn = engine.begin();
            for &i in chunk {
                txn.insert(
                    &t,
                    &pack(&t.layout, w, key(w, i), "go"),
                    Stmt { cid: 0, sub: 1 },
                )
                .unwrap();
            }
            txn.commit().unwrap();
        }
        let mine: Vec<(RowId, Tid)> = {
            let mut txn = engine.begin();
            let mut cursor = ScanCursor::new();
            let mut batch = RowBatch::new();
            let mut v = Vec::new();
            while !cursor.done() {
                txn.scan(&t, &mut cursor, 0, &mut batch, 256).unwrap();
                while let Some(r) = batch.next() {
                    let (rw, k, _) = unpack(&t.layout, r.data);
                    if rw == w && (k / 4) % 2 == 1 {
                        v.push((r.rowid, r.tid));
                    }
                }
            }
            txn.commit().unwrap();
            v
        };
        assert_eq!(mine.len() as i64, PER / 2);
        for chunk in mine.chunks(50) {
            let mut txn = engine.begin();
            for &(rowid, tid) in chunk {
                assert_eq!(
                    txn.delete(&t, rowid, tid, Stmt { cid: 1, sub: 1 }).unwrap(),
                    WriteOutcome::Done
                );
            }
            txn.commit().unwrap();
        }
    }));
    let t = engine.table(table_id(41)).unwrap();
    let rows = index_rows(engine, &t, 41);
    let want: Vec<(i32, i64)> = {
        let mut v: Vec<_> = (0..WORKERS)
            .flat_map(|w| (0..PER).step_by(2).map(move |i| (w, key(w, i))))
            .collect();
        v.sort_by_key(|r| r.1);
        v
    };
    assert_eq!(rows, want);
    for _ in 0..8 {
        engine.reclaim();
    }
    assert_eq!(t.index_entries(41), Some(want.len()));
}
