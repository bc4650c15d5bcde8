//! A deterministic write workload shared by the thread and fork stress tests.
//!
//! Each worker owns the keys `(worker, n)`; its plan is a pure function of its seed, so
//! the expected final contents can be recomputed without the engine.

#![allow(dead_code)]

pub mod acct;
pub mod mem_dir;

use memfdw_engine::redo::payload::LogRecord;
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::redo::{Appended, RedoSink};
use memfdw_engine::*;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// An engine without arena and without redo log (threads only), leaked.
pub fn engine() -> &'static Engine {
    Box::leak(Engine::new(
        EngineConfig {
            memory_limit: 1 << 30,
        },
        None,
    ))
}

/// A redo sink that keeps every record the engine appends (decoded).
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<LogRecord>>);

impl RedoSink for Recorder {
    fn append(&self, payload: &[u8]) -> std::io::Result<Appended> {
        let mut v = self.0.lock().unwrap();
        v.push(LogRecord::decode(payload).expect("the engine encodes valid records"));
        Ok(Appended {
            end: Lsn(v.len() as u64),
            phase: 0,
        })
    }
    fn make_durable(&self, _upto: Lsn) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink forwarding to a leaked [`Recorder`] (engines take boxed sinks).
pub struct Forward(pub &'static Recorder);

impl RedoSink for Forward {
    fn append(&self, payload: &[u8]) -> std::io::Result<Appended> {
        self.0.append(payload)
    }
    fn make_durable(&self, upto: Lsn) -> std::io::Result<()> {
        self.0.make_durable(upto)
    }
}

/// A sink forwarding everything to a leaked [`SharedLog`] (tests keep the log to look
/// at it; the engine takes a boxed sink).
pub struct LogSink(pub &'static SharedLog);

impl RedoSink for LogSink {
    fn append(&self, p: &[u8]) -> std::io::Result<Appended> {
        self.0.append(p)
    }
    fn append_parts(&self, parts: &[&[u8]]) -> std::io::Result<Appended> {
        self.0.append_parts(parts)
    }
    fn append_stream(
        &self,
        next: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> std::io::Result<Appended> {
        self.0.append_stream(next)
    }
    fn append_stream_to_sync(
        &self,
        next: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> std::io::Result<Appended> {
        self.0.append_stream_to_sync(next)
    }
    fn max_record(&self) -> usize {
        self.0.max_record()
    }
    fn installed(&self, phase: usize) {
        self.0.installed(phase)
    }
    fn make_durable(&self, upto: Lsn) -> std::io::Result<()> {
        self.0.make_durable(upto)
    }
    fn written(&self) -> Lsn {
        self.0.written()
    }
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    Insert { key: i64, val: String },
    Update { key: i64, val: String },
    Delete { key: i64 },
}

#[derive(Clone, Debug)]
pub struct PlannedTxn {
    pub ops: Vec<Op>,
    pub commit: bool,
}

pub fn table_def() -> TableDef {
    TableDef {
        database: 1,
        name: "stress".into(),
        columns: vec![
            ColumnDef::new("worker", ColumnType::Int4, false),
            ColumnDef::new("key", ColumnType::Int8, false),
            ColumnDef::new("val", ColumnType::Text, true),
        ],
    }
}

/// The plan of one worker and the final contents it must leave: key -> value.
pub fn plan(seed: u64, txns: usize) -> (Vec<PlannedTxn>, BTreeMap<i64, String>) {
    let mut rng = Rng::new(seed);
    let mut model: BTreeMap<i64, String> = BTreeMap::new();
    let mut next_key = 0i64;
    let mut out = Vec::with_capacity(txns);
    for _ in 0..txns {
        let mut staged = model.clone();
        let mut ops = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let choice = rng.below(10);
            let existing: Vec<i64> = staged.keys().copied().collect();
            if choice < 5 || existing.is_empty() {
                let val = format!("v{}", rng.below(1_000_000)).repeat(1 + rng.below(4) as usize);
                staged.insert(next_key, val.clone());
                ops.push(Op::Insert { key: next_key, val });
                next_key += 1;
            } else if choice < 8 {
                let key = existing[rng.below(existing.len() as u64) as usize];
                let val = format!("u{}", rng.below(1_000_000));
                staged.insert(key, val.clone());
                ops.push(Op::Update { key, val });
            } else {
                let key = existing[rng.below(existing.len() as u64) as usize];
                staged.remove(&key);
                ops.push(Op::Delete { key });
            }
        }
        let commit = rng.below(10) != 0;
        if commit {
            model = staged;
        }
        out.push(PlannedTxn { ops, commit });
    }
    (out, model)
}

pub fn pack(layout: &RowLayout, worker: i32, key: i64, val: &str) -> Vec<u8> {
    layout
        .pack(&[
            Some(&worker.to_le_bytes()),
            Some(&key.to_le_bytes()),
            Some(val.as_bytes()),
        ])
        .unwrap()
}

pub fn unpack(layout: &RowLayout, row: &[u8]) -> (i32, i64, String) {
    let w = i32::from_le_bytes(layout.get(row, 0).unwrap().try_into().unwrap());
    let k = i64::from_le_bytes(layout.get(row, 1).unwrap().try_into().unwrap());
    let v = String::from_utf8(layout.get(row, 2).unwrap().to_vec()).unwrap();
    (w, k, v)
}

/// Every committed row: (worker, key) -> value.
pub fn scan_all(engine: &'static Engine, oid: u32) -> BTreeMap<(i32, i64), String> {
    let t = engine.table(table_id(oid)).expect("table");
    let mut txn = engine.begin();
    let mut cursor = ScanCursor::new();
    let mut batch = RowBatch::new();
    let mut out = BTreeMap::new();
    loop {
        txn.scan(&t, &mut cursor, u32::MAX, &mut batch, 128)
            .unwrap();
        while let Some(r) = batch.next() {
            let (w, k, v) = unpack(&t.layout, r.data);
            assert!(out.insert((w, k), v).is_none(), "row seen twice");
        }
        if cursor.done() {
            break;
        }
    }
    txn.commit().unwrap();
    out
}

/// Runs a worker's plan. Its keys are its own, so no commit may fail. Every
/// `check_every` transactions it scans the table and checks its own rows.
pub fn run_worker(
    engine: &'static Engine,
    oid: u32,
    worker: i32,
    seed: u64,
    txns: usize,
    check_every: usize,
) {
    let (plan, _) = plan(seed, txns);
    let t = engine.table(table_id(oid)).expect("table");
    // key -> (rowid, tid) of committed rows.
    let mut committed: BTreeMap<i64, (RowId, Tid)> = BTreeMap::new();
    let mut values: BTreeMap<i64, String> = BTreeMap::new();
    for (n, p) in plan.iter().enumerate() {
        let mut txn = engine.begin();
        let mut staged = committed.clone();
        let mut staged_vals = values.clone();
        for (i, op) in p.ops.iter().enumerate() {
            let stmt = Stmt {
                cid: i as u32,
                sub: 1,
            };
            match op {
                Op::Insert { key, val } => {
                    let rowid = txn
                        .insert(&t, &pack(&t.layout, worker, *key, val), stmt)
                        .unwrap();
                    staged.insert(*key, (rowid, Tid::NONE));
                    staged_vals.insert(*key, val.clone());
                }
                Op::Update { key, val } => {
                    let (rowid, tid) = staged[key];
                    let r = txn
                        .update(&t, rowid, tid, &pack(&t.layout, worker, *key, val), stmt)
                        .unwrap();
                    assert_eq!(r, WriteOutcome::Done);
                    staged_vals.insert(*key, val.clone());
                }
                Op::Delete { key } => {
                    let (rowid, tid) = staged[key];
                    assert_eq!(
                        txn.delete(&t, rowid, tid, stmt).unwrap(),
                        WriteOutcome::Done
                    );
                    staged.remove(key);
                    staged_vals.remove(key);
                }
            }
        }
        if p.commit {
            let tid = txn.commit().expect("disjoint keys never conflict");
            for (k, (rowid, t0)) in staged.iter_mut() {
                // Rows written by this transaction now carry its TID.
                let written = p.ops.iter().any(|o| match o {
                    Op::Insert { key, .. } | Op::Update { key, .. } => key == k,
                    Op::Delete { .. } => false,
                });
                if written {
                    *t0 = tid;
                }
                let _ = rowid;
            }
            committed = staged;
            values = staged_vals;
        } else {
            txn.abort();
        }
        if check_every > 0 && n % check_every == 0 {
            let all = scan_all(engine, oid);
            let mine: BTreeMap<i64, String> = all
                .into_iter()
                .filter(|((w, _), _)| *w == worker)
                .map(|((_, k), v)| (k, v))
                .collect();
            assert_eq!(
                mine, values,
                "worker {worker} sees its committed rows exactly"
            );
        }
    }
}

/// Replays `records` into `engine` through a one-thread [`Replayer`] (the one way in),
/// as recovery would read them from the log.
pub fn replay_all<'a>(
    engine: &'static Engine,
    records: impl IntoIterator<Item = &'a LogRecord>,
) -> Result<()> {
    let mut r = Replayer::new(engine, 1);
    let mut payload = Vec::new();
    for rec in records {
        payload.clear();
        rec.encode(&mut payload);
        r.apply(&payload)?;
    }
    r.finish().map(|_| ())
}

/// The engine table of relation `rel` in the tests' database (1).
pub fn table_id(rel: u32) -> TableId {
    TableId::new(1, rel)
}

/// Creates table `rel` (see [`table_def`]) with a primary key on (worker, key);
/// returns its handle.
pub fn table_with_key(e: &'static Engine, rel: u32) -> TableHandle {
    e.create_table(table_id(rel), table_def()).unwrap();
    let t = e.table(table_id(rel)).unwrap();
    let mut txn = e.begin();
    txn.create_index(
        &t,
        IndexDef {
            id: e.next_index_id(),
            name: "pk".into(),
            columns: vec![0, 1],
            unique: true,
            primary: true,
        },
    )
    .unwrap();
    txn.commit().unwrap();
    t
}

/// Where the frames of the segment file at `path` end: segments are written out with
/// zeros to their full size in advance, so the file's length says nothing.
#[allow(dead_code)]
pub fn frames_end(path: &str) -> u64 {
    let data = std::fs::read(path).unwrap();
    data.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}
