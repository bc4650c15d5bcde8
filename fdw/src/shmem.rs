//! The engine in PostgreSQL's main shared memory.
//!
//! The shmem request hook asks for `memfdw.max_memory`; the startup hook (run by the
//! postmaster, again after every crash reinitialisation, in a new segment) turns the
//! region into a fresh arena and builds an empty engine root in it. Backends inherit
//! both pointers through fork. Each backend registers with the epoch collector on first
//! use and leaves it at exit.
//!
//! Recovery (checkpoint + redo log) runs in memfdw's background worker (see
//! `worker`), not in the postmaster: the server accepts connections meanwhile, and a
//! session that touches a memory table waits in [`engine`] (cancellable,
//! `statement_timeout` applies) until the worker publishes the engine as ready (see
//! `startup`). Nobody sees a partially recovered engine, and nothing can commit before
//! the redo log is started where recovery ended.

use memfdw_engine::alloc::install_arena;
use memfdw_engine::arena::{Arena, MIN_ALIGN};
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::{Engine, EngineConfig};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::settings::MAX_MEMORY_MB;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// The engine of the current shared memory segment (set by the postmaster).
static ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());
/// Whether this process registered its exit callback. Backends inherit `false` from
/// the postmaster, which never uses the engine itself.
static EXIT_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Index of `AddinShmemInitLock` in `MainLWLockArray` (PostgreSQL 15's
/// `lwlocknames.txt`; the C macro is not available through pgrx).
const ADDIN_SHMEM_INIT_LOCK: usize = 21;

/// What must run at process exit before this process leaves the epoch collector (the
/// backend's engine transaction is released: `xact`), set once by `_PG_init`.
static BEFORE_EXIT: std::sync::OnceLock<Option<fn()>> = std::sync::OnceLock::new();

/// Sets what runs at process exit before the engine is left (see [`BEFORE_EXIT`]).
pub fn set_before_exit(f: fn()) {
    let _ = BEFORE_EXIT.set(Some(f));
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
        let lock: *mut pg_sys::LWLock =
            &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock;
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
            crate::startup::create();
            ENGINE.store(engine as *const Engine as *mut Engine, Ordering::Release);
            // The postmaster allocates nothing more: the blocks it cached go back (its
            // children forget their inherited copy of the cache).
            memfdw_engine::alloc::release_thread_cache();
        }
        pg_sys::LWLockRelease(lock);
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
    if !crate::startup::ready() {
        crate::startup::wait_until_ready();
    }
    register_exit_callback();
    // SAFETY: set once per segment by the postmaster before forking; lives as long as
    // the segment, i.e. as long as this process.
    unsafe { &*p }
}

/// The shared redo log (after `engine()` succeeded).
pub fn log() -> &'static SharedLog {
    crate::startup::log()
}

/// The engine of this segment for the background worker, which brings it up (no
/// waiting for readiness).
pub fn engine_for_worker() -> &'static Engine {
    let p = ENGINE.load(Ordering::Acquire);
    assert!(
        !p.is_null(),
        "memfdw: the background worker runs without an engine"
    );
    register_exit_callback();
    // SAFETY: set by the postmaster before forking; lives as long as the segment.
    unsafe { &*p }
}

/// True if memfdw was preloaded (its engine exists).
pub fn preloaded() -> bool {
    !ENGINE.load(Ordering::Acquire).is_null()
}

pub fn register_exit_callback() {
    // A load first: `engine()` runs on every row, and a swap is an atomic
    // read-modify-write (it waits for this core's pending stores).
    if !EXIT_REGISTERED.load(Ordering::Relaxed) && !EXIT_REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: registering a plain callback for this process.
        unsafe { pg_sys::on_proc_exit(Some(on_exit), pg_sys::Datum::from(0usize)) };
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    if let Some(release) = BEFORE_EXIT.get().copied().flatten() {
        release();
    }
    memfdw_engine::epoch::unregister_current();
    // Blocks this process cached go back to the arena (after the unregistration,
    // which may free some).
    memfdw_engine::alloc::release_thread_cache();
}
