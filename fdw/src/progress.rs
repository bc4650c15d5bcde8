//! Progress of memfdw's long server-wide operations — checkpoints and recovery — in
//! shared memory, shown by `memfdw.progress()` (CREATE INDEX reports through
//! PostgreSQL's own `pg_stat_progress_create_index`).
//!
//! Each operation has one slot, written by the one process running it (checkpoints
//! exclude each other; recovery runs once per segment in the background worker) and
//! read by anyone; the counters are plain atomics, so a reader may see a mix of two
//! updates, never a torn value. A finished operation stays in its slot (state "done"
//! or "failed") until the next one starts.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

const IDLE: u32 = 0;
const RUNNING: u32 = 1;
const DONE: u32 = 2;
const FAILED: u32 = 3;

/// One operation's progress.
#[derive(Default)]
pub struct Slot {
    state: AtomicU32,
    /// Operation-specific: recovery 1 = loading the checkpoint, 2 = replaying the log.
    phase: AtomicU32,
    pid: AtomicI32,
    started: AtomicI64,
    finished: AtomicI64,
    tables_done: AtomicU64,
    tables_total: AtomicU64,
    rows_done: AtomicU64,
    bytes_done: AtomicU64,
}

impl Slot {
    /// The operation starts in this process.
    pub fn start(&self) {
        self.state.store(RUNNING, Relaxed);
        self.phase.store(0, Relaxed);
        // SAFETY: reading this process's pid; the clock.
        unsafe {
            self.pid.store(pg_sys::MyProcPid, Relaxed);
            self.started.store(pg_sys::GetCurrentTimestamp(), Relaxed);
        }
        self.finished.store(0, Relaxed);
        for c in [
            &self.tables_done,
            &self.tables_total,
            &self.rows_done,
            &self.bytes_done,
        ] {
            c.store(0, Relaxed);
        }
    }

    pub fn set(&self, phase: u32, tables: (u64, u64), rows: u64, bytes: u64) {
        self.phase.store(phase, Relaxed);
        self.tables_done.store(tables.0, Relaxed);
        self.tables_total.store(tables.1, Relaxed);
        self.rows_done.store(rows, Relaxed);
        self.bytes_done.store(bytes, Relaxed);
    }

    /// The final counts of tables and records (bytes as last reported).
    pub fn set_counts(&self, phase: u32, tables: u64, records: u64) {
        self.phase.store(phase, Relaxed);
        self.tables_done.store(tables, Relaxed);
        self.tables_total.store(tables, Relaxed);
        self.rows_done.store(records, Relaxed);
    }

    /// The operation ended (`ok`: completed).
    pub fn finish(&self, ok: bool) {
        // SAFETY: the clock.
        self.finished
            .store(unsafe { pg_sys::GetCurrentTimestamp() }, Relaxed);
        self.state.store(if ok { DONE } else { FAILED }, Relaxed);
    }
}

/// The slots of the current segment (None before the postmaster made them).
fn slots() -> Option<(&'static Slot, &'static Slot)> {
    crate::startup::progress_slots()
}

/// The checkpoint slot, if memfdw is loaded.
pub fn checkpoint() -> Option<&'static Slot> {
    slots().map(|s| s.0)
}

/// The recovery slot, if memfdw is loaded.
pub fn recovery() -> Option<&'static Slot> {
    slots().map(|s| s.1)
}

fn ts(v: i64) -> Option<pgrx::datum::TimestampWithTimeZone> {
    (v != 0)
        .then(|| pgrx::datum::TimestampWithTimeZone::try_from(v).ok())
        .flatten()
}

/// The latest checkpoint and recovery of this server: state (running, done, failed),
/// phase, process, start and end, and counts so far. Rows for operations that have
/// not run since the server started are left out. For checkpoints, `records_done`
/// counts rows written; for recovery, checkpoint frames or log records applied.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn progress() -> TableIterator<
    'static,
    (
        name!(operation, String),
        name!(state, String),
        name!(phase, String),
        name!(pid, i32),
        name!(started, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(finished, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(tables_done, i64),
        name!(tables_total, i64),
        name!(records_done, i64),
        name!(bytes_done, i64),
    ),
> {
    let mut out = Vec::new();
    if let Some((c, r)) = slots() {
        for (name, s) in [("checkpoint", c), ("recovery", r)] {
            let state = match s.state.load(Relaxed) {
                IDLE => continue,
                RUNNING => "running",
                DONE => "done",
                FAILED => "failed",
                _ => "unknown",
            };
            let phase = match (name, s.phase.load(Relaxed)) {
                ("checkpoint", _) => "writing tables",
                (_, 1) => "loading checkpoint",
                (_, 2) => "replaying log",
                _ => "starting",
            };
            let n = |c: &AtomicU64| c.load(Relaxed) as i64;
            out.push((
                name.to_string(),
                state.to_string(),
                phase.to_string(),
                s.pid.load(Relaxed),
                ts(s.started.load(Relaxed)),
                ts(s.finished.load(Relaxed)),
                n(&s.tables_done),
                n(&s.tables_total),
                n(&s.rows_done),
                n(&s.bytes_done),
            ));
        }
    }
    TableIterator::new(out)
}

/// Writes a checkpoint (see `memfdw_engine::redo::checkpoint`), reporting its progress
/// in the checkpoint slot.
pub fn write_checkpoint(
    e: &'static memfdw_engine::Engine,
    log: &memfdw_engine::redo::shared::SharedLog,
) -> Result<
    memfdw_engine::redo::checkpoint::CheckpointInfo,
    memfdw_engine::redo::checkpoint::CheckpointError,
> {
    let slot = checkpoint();
    let mut started = false;
    let r = memfdw_engine::redo::checkpoint::write_checkpoint_reporting(e, log, |i, total| {
        if let Some(s) = slot {
            // Started only once the checkpoint runs (a busy one reports nothing).
            if !started {
                s.start();
                started = true;
            }
            s.set(1, (i.tables as u64, total), i.rows, i.bytes);
        }
    });
    if let (Some(s), true) = (slot, started) {
        if let Ok(i) = &r {
            s.set(1, (i.tables as u64, i.tables as u64), i.rows, i.bytes);
        }
        s.finish(r.is_ok());
    }
    r
}
