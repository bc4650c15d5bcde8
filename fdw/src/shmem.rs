//! The engine in PostgreSQL's main shared memory.
//!
//! The shmem request hook asks for `memfdw.max_memory`; the startup hook (run by the
//! postmaster, again after every crash reinitialisation, in a new segment) turns the
//! region into a fresh arena and builds an empty engine root in it. Backends inherit
//! both pointers through fork. Each backend registers with the epoch collector on first
//! use and leaves it at exit.
//!
//! Recovery (checkpoint + redo log) runs in memfdw's background worker, not in the
//! postmaster: the server accepts connections meanwhile, and a session that touches a
//! memory table waits in [`engine`] (cancellable, `statement_timeout` applies) until the
//! worker publishes the engine as ready. Nobody sees a partially recovered engine, and
//! nothing can commit before the redo log is started where recovery ended.

use memfdw_engine::alloc::install_arena;
use memfdw_engine::arena::{Arena, MIN_ALIGN};
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::{Engine, EngineConfig};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::settings::MAX_MEMORY_MB;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// The engine of the current shared memory segment (set by the postmaster).
static ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());
/// The start-up state of that engine (set by the postmaster with it; lives in the arena).
static STARTUP: AtomicPtr<Startup> = AtomicPtr::new(std::ptr::null_mut());
/// Whether this process registered its exit callback. Backends inherit `false` from
/// the postmaster, which never uses the engine itself.
static EXIT_REGISTERED: AtomicBool = AtomicBool::new(false);

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

fn region_bytes() -> usize {
    (MAX_MEMORY_MB.get().max(16) as usize) << 20
}

/// # Safety
/// Called once from `_PG_init` while shared_preload_libraries is processed.
pub unsafe fn install_hooks() {
    // SAFETY: single-threaded postmaster start-up; we chain the previous hooks.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: chaining the previous hook as PostgreSQL expects.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| prev());
        }
        pg_sys::RequestAddinShmemSpace(region_bytes() + MIN_ALIGN);
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: chaining the previous hook; ShmemInitStruct under AddinShmemInitLock as
    // every extension does.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| prev());
        }
        let lock: *mut pg_sys::LWLock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let len = region_bytes();
        let mut found = false;
        let raw =
            pg_sys::ShmemInitStruct(c"memfdw arena".as_ptr(), len + MIN_ALIGN, &mut found) as usize;
        let region = raw.next_multiple_of(MIN_ALIGN) as *mut u8;
        if !found {
            // A new segment (server start or crash reinitialisation): nothing may keep
            // pointing into an old one, so arena and engine are rebuilt from scratch.
            // SAFETY: the region is ours, mapped before any backend forks.
            let arena = Arena::init(region, len);
            install_arena(arena);
            let engine: &'static Engine = Box::leak(Engine::new(
                EngineConfig::for_arena(arena.stats().capacity),
                None,
            ));
            let startup: &'static Startup = {
                let _s = memfdw_engine::scope::enter();
                Box::leak(Box::new(Startup {
                    state: AtomicU32::new(NOT_STARTED),
                    log: AtomicPtr::new(std::ptr::null_mut()),
                    failure_len: AtomicUsize::new(0),
                    failure: UnsafeCell::new([0; FAILURE_BYTES]),
                }))
            };
            STARTUP.store(startup as *const Startup as *mut Startup, Ordering::Release);
            ENGINE.store(engine as *const Engine as *mut Engine, Ordering::Release);
            // The postmaster allocates nothing more: the blocks it cached go back (its
            // children forget their inherited copy of the cache).
            memfdw_engine::alloc::release_thread_cache();
        }
        pg_sys::LWLockRelease(lock);
    }
}

fn data_directory() -> String {
    crate::settings::DATA_DIRECTORY
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "memfdw".into())
}

/// Brings the engine of this segment up, in the background worker: recovers it unless
/// an earlier worker already did. Returns false if memory tables are unavailable
/// (recovery failed, now or in an earlier worker of this segment).
pub fn start_engine() -> bool {
    let p = ENGINE.load(Ordering::Acquire);
    assert!(
        !p.is_null(),
        "memfdw: the background worker runs without an engine"
    );
    // SAFETY: set by the postmaster before forking; lives as long as the segment.
    let engine: &'static Engine = unsafe { &*p };
    let st = startup();
    match st
        .state
        .compare_exchange(NOT_STARTED, RECOVERING, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => {}
        Err(READY) => return true,
        Err(FAILED) => return false,
        Err(_) => {
            // A previous worker died half-way (an error, not a crash: a crash would have
            // given us a new segment). What it left is not known to be consistent.
            let why = "memfdw: recovery was interrupted (the background worker exited during recovery); restart the server".to_owned();
            report_failure(&why, None);
            st.fail(&why);
            return false;
        }
    }
    register_exit_callback();
    let delay = crate::settings::DEBUG_RECOVERY_DELAY_MS.get();
    if delay > 0 {
        pgrx::log!("memfdw: waiting {delay} ms before recovery (memfdw.debug_recovery_delay)");
        let until = std::time::Instant::now() + std::time::Duration::from_millis(delay as u64);
        while std::time::Instant::now() < until && !crate::worker::shutdown_requested() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if crate::worker::shutdown_requested() {
            let why = "memfdw: recovery was interrupted by a shutdown request";
            report_failure(why, None);
            st.fail(why);
            return false;
        }
    }
    match recover(engine) {
        Ok(log) => {
            st.log
                .store(log as *const SharedLog as *mut SharedLog, Ordering::Release);
            st.state.store(READY, Ordering::Release);
            true
        }
        Err((why, hint)) => {
            report_failure(&why, hint.as_deref());
            st.fail(&why);
            false
        }
    }
}

fn report_failure(why: &str, hint: Option<&str>) {
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
}

/// Rebuilds the engine's tables from the checkpoint and the redo log and starts the log
/// again where it ends. A corrupt log fails recovery: nothing past the corruption may be
/// applied, and nothing may be written after it.
fn recover(engine: &'static Engine) -> Result<&'static SharedLog, (String, Option<String>)> {
    use memfdw_engine::redo::shared::recover_engine_with_progress;
    let dir = data_directory();
    let started = std::time::Instant::now();
    pgrx::log!("memfdw: recovery of memory tables from \"{dir}\" started");
    let progress = |p: memfdw_engine::redo::shared::Progress| {
        let what = if p.phase == "log" {
            "log records"
        } else {
            "checkpoint frames"
        };
        pgrx::log!(
            "memfdw: recovery in progress: {} {what}, {:.1} MB applied in {:.1} s ({:.1} MB/s)",
            p.records,
            p.bytes as f64 / 1e6,
            p.seconds,
            p.bytes as f64 / 1e6 / p.seconds.max(1e-9)
        );
        // A shutdown request stops recovery (within about a second).
        !crate::worker::shutdown_requested()
    };
    let r = recover_engine_with_progress(engine, &dir, progress).map_err(|e| match e {
        memfdw_engine::redo::shared::RecoveryError::Interrupted => (
            "memfdw: recovery was interrupted by a shutdown request".to_owned(),
            None,
        ),
        e => (
            format!("memfdw: recovery from the redo log failed: {e}"),
            Some(format!(
                "The log is in \"{dir}\"; nothing after the reported position was applied. Memory tables are unavailable until the server is restarted with a readable log."
            )),
        ),
    })?;
    if let Some(t) = &r.truncated {
        pgrx::log!(
            "memfdw: redo log ends with a torn write: cut {} bytes of \"{}/{}\" at offset {}",
            t.bytes_dropped,
            dir,
            t.file,
            t.offset
        );
    }
    if r.incomplete_commits > 0 {
        pgrx::log!(
            "memfdw: dropped {} big commits whose log records were incomplete (never acknowledged)",
            r.incomplete_commits
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let rows: i64 = engine
        .table_oids()
        .into_iter()
        .filter_map(|o| engine.table_stats(o))
        .map(|s| s.rows)
        .sum();
    let bytes = engine.memory().in_use as f64;
    pgrx::log!(
        "memfdw: recovered {} tables, {} rows ({:.1} MB in memory) from {} redo records in {} segments in {:.3} s ({:.1} MB/s); log ends at LSN {:X}",
        engine.table_oids().len(),
        rows,
        bytes / 1e6,
        r.records,
        r.segments,
        secs,
        bytes / 1e6 / secs.max(1e-9),
        r.end_lsn
    );
    let segment = (crate::settings::SEGMENT_SIZE_MB.get().max(1) as u64) << 20;
    let log = {
        let _s = memfdw_engine::scope::enter();
        SharedLog::start(&dir, r.end_lsn, segment)
    };
    match log {
        Ok(log) => {
            log.restore_checkpoint_info(r.checkpoint);
            let shared: &'static SharedLog = {
                // SAFETY: the log lives in the arena as long as the engine it is
                // attached to, i.e. as long as the segment; it is never freed.
                unsafe { &*(&*log as *const SharedLog) }
            };
            engine.attach_sink(log);
            Ok(shared)
        }
        Err(e) => Err((
            format!("memfdw: could not start the redo log in \"{dir}\": {e}"),
            None,
        )),
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
fn wait_until_ready() {
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

/// The shared engine. Raises an error telling how to enable memfdw if the library was
/// not preloaded.
pub fn engine() -> &'static Engine {
    let p = ENGINE.load(Ordering::Acquire);
    if p.is_null() {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "memfdw must be loaded at server start",
            "memfdw::engine",
        )
        .set_hint(
            "Add shared_preload_libraries = 'memfdw' to postgresql.conf and restart the server.",
        )
        .report(PgLogLevel::ERROR);
        unreachable!();
    }
    if startup().state() != READY {
        wait_until_ready();
    }
    register_exit_callback();
    // SAFETY: set once per segment by the postmaster before forking; lives as long as
    // the segment, i.e. as long as this process.
    unsafe { &*p }
}

/// The shared redo log (after `engine()` succeeded).
pub fn log() -> &'static SharedLog {
    let p = startup().log.load(Ordering::Acquire);
    // SAFETY: set by the background worker before the engine became ready; lives as
    // long as the engine.
    unsafe { p.as_ref() }.expect("memfdw: redo log not started")
}

/// True if memfdw was preloaded (its engine exists).
pub fn preloaded() -> bool {
    !ENGINE.load(Ordering::Acquire).is_null()
}

fn register_exit_callback() {
    if !EXIT_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: registering a plain callback for this process.
        unsafe { pg_sys::on_proc_exit(Some(on_exit), pg_sys::Datum::from(0usize)) };
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    crate::xact::release_at_exit();
    memfdw_engine::epoch::unregister_current();
    // Blocks this process cached go back to the arena (after the unregistration,
    // which may free some).
    memfdw_engine::alloc::release_thread_cache();
}
