//! A random single-writer workload (inserts, updates that change the unique key or
//! not, deletes, aborts, big commits split into parts, synchronous and asynchronous
//! commits) through the shared log; at a random moment the machine "crashes": the log
//! keeps everything synced and a random part of what was written after. Recovery must
//! give exactly the state after some prefix of the commits that includes every
//! acknowledged durable one, with a consistent unique index.

mod common;

use common::*;
use memfdw_engine::recovery::recover_engine;
use memfdw_engine::redo::files::segments;
use memfdw_engine::redo::files::HEADER_LEN;
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::*;
use std::collections::BTreeMap;

const OID: u32 = 1;
const KEY_INDEX: u32 = 1;

type Model = BTreeMap<(i32, i64), String>;

/// Copies the log in `dir` as a crash would leave it: sealed segments whole, the last
/// one cut somewhere at or after what is durable.
fn crash_copy(dir: &str, to: &str, log: &SharedLog, rng: &mut Rng) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    let segs = segments(dir).unwrap();
    for s in &segs {
        std::fs::copy(format!("{dir}/{s}"), format!("{to}/{s}")).unwrap();
    }
    // The control file is written durably whenever it changes.
    std::fs::copy(format!("{dir}/control"), format!("{to}/control")).unwrap();
    let last = segs.last().unwrap();
    let start = memfdw_engine::redo::files::parse_segment_name(last).unwrap();
    let path = format!("{to}/{last}");
    let len = frames_end(&path);
    let durable = HEADER_LEN as u64 + log.flushed_lsn().since(start);
    let durable = durable.min(len);
    let cut = durable + rng.below(len - durable + 1);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut).unwrap();
}

fn check_index(e: &'static Engine, rows: &Model) {
    let t = e.table(table_id(OID)).unwrap();
    let mut txn = e.begin();
    let mut scan = IndexScan::new(KEY_INDEX, &[], None, false);
    let mut batch = RowBatch::new();
    let mut keys = Vec::new();
    while !scan.done() {
        txn.index_scan(&t, &mut scan, 1, &mut batch, 64).unwrap();
        while let Some(r) = batch.next() {
            keys.push(unpack(&t.layout, r.data).1);
        }
    }
    let want: Vec<i64> = rows.keys().map(|&(_, k)| k).collect();
    assert_eq!(keys, want, "the unique index does not match the rows");
}

#[test]
fn random_workload_crashes_recover_a_prefix_holding_every_acknowledged_commit() {
    let rounds = if cfg!(debug_assertions) { 12 } else { 40 };
    for round in 0..rounds {
        let mut rng = Rng::new(1000 + round);
        let dir = format!("/tmp/memfdw-crash-{round}-{}", std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
        let log: &'static SharedLog =
            Box::leak(SharedLog::start(&dir, Lsn(0), 16 << 10 << rng.below(3)).unwrap());
        if rng.below(2) == 0 {
            log.set_max_record(512 + rng.below(4096) as usize);
        }
        let e: &'static Engine = Box::leak(Engine::new(
            EngineConfig {
                memory_limit: 1 << 30,
            },
            Some(Box::new(LogSink(log))),
        ));
        e.create_table(table_id(OID), table_def()).unwrap();
        let t = e.table(table_id(OID)).unwrap();
        let mut txn = e.begin();
        txn.create_index(
            &t,
            IndexDef {
                id: KEY_INDEX,
                name: "stress_key".into(),
                columns: vec![1],
                unique: true,
                primary: true,
            },
        )
        .unwrap();
        txn.commit().unwrap();

        // The model after each commit; `acked` commits are known durable.
        let mut model: Model = BTreeMap::new();
        let mut rowids: BTreeMap<i64, RowId> = BTreeMap::new();
        let mut states = vec![model.clone()];
        let mut acked = 1;
        let mut next_key = 0i64;
        let txns = 20 + rng.below(60);
        for n in 0..txns {
            let mut txn = e.begin();
            let (mut m, mut ids) = (model.clone(), rowids.clone());
            let ops = if rng.below(8) == 0 {
                60
            } else {
                1 + rng.below(6)
            };
            for op in 0..ops {
                // One statement per operation: each sees the ones before.
                let cid = op as u32 + 1;
                let s = Stmt { cid, sub: 1 };
                let live: Vec<i64> = ids.keys().copied().collect();
                let choice = if live.is_empty() { 0 } else { rng.below(4) };
                let val = format!("v{round}-{n}-{}", rng.below(1000));
                match choice {
                    0 | 1 => {
                        let k = next_key;
                        next_key += 1;
                        let r = txn.insert(&t, &pack(&t.layout, 0, k, &val), s).unwrap();
                        ids.insert(k, r);
                        m.insert((0, k), val);
                    }
                    2 => {
                        // Update: half of them move the row to a new key.
                        let k = live[rng.below(live.len() as u64) as usize];
                        let r = ids[&k];
                        let mut buf = Vec::new();
                        let tid = txn.get(&t, r, cid, &mut buf).unwrap();
                        let nk = if rng.below(2) == 0 {
                            next_key += 1;
                            next_key - 1
                        } else {
                            k
                        };
                        txn.update(&t, r, tid, &pack(&t.layout, 0, nk, &val), s)
                            .unwrap();
                        m.remove(&(0, k));
                        ids.remove(&k);
                        m.insert((0, nk), val);
                        ids.insert(nk, r);
                    }
                    _ => {
                        let k = live[rng.below(live.len() as u64) as usize];
                        let r = ids.remove(&k).unwrap();
                        let mut buf = Vec::new();
                        let tid = txn.get(&t, r, cid, &mut buf).unwrap();
                        txn.delete(&t, r, tid, s).unwrap();
                        m.remove(&(0, k));
                    }
                }
            }
            if rng.below(10) == 0 {
                txn.abort();
                continue;
            }
            let durable = rng.below(3) != 0;
            txn.commit_with(durable).unwrap();
            model = m;
            rowids = ids;
            states.push(model.clone());
            if durable {
                acked = states.len();
            }
        }
        let copy = format!("{dir}-crashed");
        crash_copy(&dir, &copy, log, &mut rng);
        let b: &'static Engine = Box::leak(Engine::new(
            EngineConfig {
                memory_limit: 1 << 30,
            },
            None,
        ));
        let r = recover_engine(b, &copy).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let got = scan_all(b, OID);
        let k = states
            .iter()
            .rposition(|s| *s == got)
            .unwrap_or_else(|| panic!("round {round}: recovered a state no commit prefix had"));
        assert!(
            k + 1 >= acked,
            "round {round}: lost acknowledged commits ({} of {acked} present; {r:?})",
            k + 1
        );
        check_index(b, &got);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&copy);
    }
}
