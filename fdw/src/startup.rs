//! Where the engine of one shared memory segment is in its start-up, shared by every
//! process of the segment: NOT_STARTED -> RECOVERING -> READY | FAILED. The
//! postmaster creates the state with the engine ([`create`]); the background worker
//! moves it ([`begin_recovery`], [`publish_ready`], [`publish_failure`]); sessions wait
//! for it ([`wait_until_ready`]).

use memfdw_engine::redo::shared::SharedLog;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// The start-up state of the current segment's engine (set by the postmaster with
/// it; lives in the arena).
static STARTUP: AtomicPtr<Startup> = AtomicPtr::new(std::ptr::null_mut());

/// Recovery has not begun (the background worker has not started yet).
const NOT_STARTED: u32 = 0;
/// The background worker is recovering.
const RECOVERING: u32 = 1;
/// Recovered, redo log started: sessions may use the engine.
const READY: u32 = 2;
/// Recovery failed; `failure` says why. Memory tables stay unavailable until restart.
const FAILED: u32 = 3;

const FAILURE_BYTES: usize = 2048;

/// Where the engine of one shared memory segment is in its start-up. Lives in the
/// arena, so every process of the segment sees the same one.
///
/// Invariants: `state` only moves NOT_STARTED -> RECOVERING -> READY | FAILED, by the
/// background worker. `log` is set before `state` becomes READY; `failure` and
/// `failure_len` are written once, before `state` becomes FAILED, and never again; both
/// are published by the Release store of `state` and read after an Acquire load of it.
struct Startup {
    state: AtomicU32,
    log: AtomicPtr<SharedLog>,
    failure_len: AtomicUsize,
    failure: UnsafeCell<[u8; FAILURE_BYTES]>,
    /// Progress of the latest checkpoint and of recovery (see `progress`).
    checkpoint: crate::progress::Slot,
    recovery: crate::progress::Slot,
}

// SAFETY: `failure` is written by one process before the Release store that makes
// `state` FAILED and only read after an Acquire load that saw FAILED (see the type's
// invariants); everything else is atomic.
unsafe impl Sync for Startup {}

impl Startup {
    fn state(&self) -> u32 {
        self.state.load(Ordering::Acquire)
    }

    /// Records why recovery failed and publishes FAILED (first call only).
    fn fail(&self, why: &str) {
        let prev = self.state.load(Ordering::Acquire);
        if prev == READY || prev == FAILED {
            return;
        }
        let n = why.floor_char_boundary(FAILURE_BYTES);
        // SAFETY: only the background worker writes, once, before publishing FAILED
        // (nobody reads `failure` before seeing FAILED).
        unsafe { (&mut *self.failure.get())[..n].copy_from_slice(&why.as_bytes()[..n]) };
        self.failure_len.store(n, Ordering::Relaxed);
        self.state.store(FAILED, Ordering::Release);
    }

    fn failure(&self) -> String {
        let n = self.failure_len.load(Ordering::Relaxed);
        // SAFETY: called only after an Acquire load saw FAILED: written and final.
        String::from_utf8_lossy(unsafe { &(&*self.failure.get())[..n] }).into_owned()
    }
}

fn startup() -> &'static Startup {
    let p = STARTUP.load(Ordering::Acquire);
    // SAFETY: set with ENGINE by the postmaster before forking (callers checked ENGINE);
    // lives in the arena as long as the segment.
    unsafe { p.as_ref() }.expect("memfdw: no start-up state")
}

/// Waits (cancellable) until the background worker has recovered the engine; raises
/// the recovery failure if it failed.
pub fn wait_until_ready() {
    let st = startup();
    loop {
        match st.state() {
            READY => return,
            FAILED => {
                pgrx::pg_sys::panic::ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    "memfdw: memory tables are unavailable: their recovery failed",
                    "memfdw::engine",
                )
                .set_detail(st.failure())
                .set_hint("See the server log; fix or remove the damaged redo file and restart the server.")
                .report(PgLogLevel::ERROR);
                unreachable!();
            }
            _ => {}
        }
        // SAFETY: a plain latch wait of this backend, as PostgreSQL's own waits do; the
        // latch is reset before interrupts are checked, so no wake-up is lost.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                10,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

/// Creates the start-up state of a new segment's engine (NOT_STARTED), in the arena.
/// Called by the postmaster in the shmem startup hook.
pub fn create() {
    let startup: &'static Startup = {
        let _s = memfdw_engine::scope::enter();
        Box::leak(Box::new(Startup {
            state: AtomicU32::new(NOT_STARTED),
            log: AtomicPtr::new(std::ptr::null_mut()),
            failure_len: AtomicUsize::new(0),
            failure: UnsafeCell::new([0; FAILURE_BYTES]),
            checkpoint: Default::default(),
            recovery: Default::default(),
        }))
    };
    STARTUP.store(startup as *const Startup as *mut Startup, Ordering::Release);
}

/// What [`begin_recovery`] found.
pub enum Begin {
    /// This worker recovers now.
    Recover,
    /// An earlier worker of this segment already recovered the engine.
    AlreadyReady,
    /// Memory tables are unavailable (recovery failed, now or before).
    Failed,
}

/// Claims recovery for the calling background worker.
pub fn begin_recovery() -> Begin {
    let st = startup();
    match st
        .state
        .compare_exchange(NOT_STARTED, RECOVERING, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => Begin::Recover,
        Err(READY) => Begin::AlreadyReady,
        Err(FAILED) => Begin::Failed,
        Err(_) => {
            // A previous worker died half-way (an error, not a crash: a crash would have
            // given us a new segment). What it left is not known to be consistent.
            let why = "memfdw: recovery was interrupted (the background worker exited during recovery); restart the server";
            publish_failure(why, None);
            Begin::Failed
        }
    }
}

/// Recovery succeeded and the redo log runs: sessions may use the engine.
pub fn publish_ready(log: &'static SharedLog) {
    let st = startup();
    st.log
        .store(log as *const SharedLog as *mut SharedLog, Ordering::Release);
    st.state.store(READY, Ordering::Release);
}

/// Recovery failed: logs why (LOG level, with `hint`) and makes memory tables
/// unavailable until a restart.
pub fn publish_failure(why: &str, hint: Option<&str>) {
    let mut r = pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
        why.to_owned(),
        "memfdw::recover",
    );
    if let Some(h) = hint {
        r = r.set_hint(h.to_owned());
    }
    // LOG, not FATAL: the worker stays (idle) so the postmaster does not restart it
    // into the same failure every second; sessions get the error when they touch a
    // memory table. Heap tables are unaffected.
    r.report(PgLogLevel::LOG);
    startup().fail(why);
}

/// The checkpoint and recovery progress slots of the current segment (None if
/// memfdw is not preloaded).
pub fn progress_slots() -> Option<(
    &'static crate::progress::Slot,
    &'static crate::progress::Slot,
)> {
    let p = STARTUP.load(Ordering::Acquire);
    // SAFETY: as in `startup`: set by the postmaster, lives as long as the segment.
    unsafe { p.as_ref() }.map(|s| (&s.checkpoint, &s.recovery))
}

/// True if recovery failed (memory tables stay unavailable until a restart).
pub fn failed() -> bool {
    startup().state() == FAILED
}

/// True once the engine is recovered and its log runs.
pub fn ready() -> bool {
    startup().state() == READY
}

/// The shared redo log (once [`ready`]).
pub fn log() -> &'static SharedLog {
    let p = startup().log.load(Ordering::Acquire);
    // SAFETY: set by the background worker before the engine became ready; lives as
    // long as the engine.
    unsafe { p.as_ref() }.expect("memfdw: redo log not started")
}
