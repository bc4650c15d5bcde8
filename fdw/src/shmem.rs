//! The engine in PostgreSQL's main shared memory.
//!
//! The shmem request hook asks for `memfdw.max_memory`; the startup hook (run by the
//! postmaster, again after every crash reinitialisation, in a new segment) turns the
//! region into a fresh arena and builds the engine root in it. Backends inherit both
//! pointers through fork. Each backend registers with the epoch collector on first use
//! and leaves it at exit.

use memfdw_engine::alloc::install_arena;
use memfdw_engine::arena::{Arena, MIN_ALIGN};
use memfdw_engine::{Engine, EngineConfig};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::settings::MAX_MEMORY_MB;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// The engine of the current shared memory segment (set by the postmaster).
static ENGINE: AtomicPtr<Engine> = AtomicPtr::new(std::ptr::null_mut());
/// Its redo log (owned by the engine, which it is attached to).
static LOG: AtomicPtr<memfdw_engine::redo::shared::SharedLog> =
    AtomicPtr::new(std::ptr::null_mut());
/// Whether this process registered its exit callback. Backends inherit `false` from
/// the postmaster, which never uses the engine itself.
static EXIT_REGISTERED: AtomicBool = AtomicBool::new(false);

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
            recover(engine);
            ENGINE.store(engine as *const Engine as *mut Engine, Ordering::Release);
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

/// Rebuilds the engine's tables from the redo log and starts the log again where it
/// ends. Runs in the postmaster, before any backend exists (at start-up and after
/// every crash reinitialisation). A corrupt log stops the server: nothing past the
/// corruption may be applied, and nothing may be written after it.
fn recover(engine: &'static Engine) {
    use memfdw_engine::redo::shared::{recover_engine_with_progress, SharedLog};
    let dir = data_directory();
    let started = std::time::Instant::now();
    let progress = |p: memfdw_engine::redo::shared::Progress| {
        pgrx::log!(
            "memfdw: recovery in progress: {} records, {:.1} MB replayed in {:.1} s ({:.1} MB/s)",
            p.records,
            p.bytes as f64 / 1e6,
            p.seconds,
            p.bytes as f64 / 1e6 / p.seconds.max(1e-9)
        )
    };
    let r = match recover_engine_with_progress(engine, &dir, progress) {
        Ok(r) => r,
        Err(e) => {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("memfdw: recovery from the redo log failed: {e}"),
                "memfdw::recover",
            )
            .set_hint(format!(
                "The log is in \"{dir}\"; nothing after the reported position was applied."
            ))
            .report(PgLogLevel::FATAL);
            unreachable!();
        }
    };
    if let Some(t) = &r.truncated {
        pgrx::log!(
            "memfdw: redo log ends with a torn write: cut {} bytes of \"{}/{}\" at offset {}",
            t.bytes_dropped,
            dir,
            t.file,
            t.offset
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
            LOG.store(
                &*log as *const SharedLog as *mut SharedLog,
                Ordering::Release,
            );
            engine.attach_sink(log);
        }
        Err(e) => {
            ereport!(
                FATAL,
                PgSqlErrorCode::ERRCODE_IO_ERROR,
                format!("memfdw: could not start the redo log in \"{dir}\": {e}")
            );
        }
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
    register_exit_callback();
    // SAFETY: set once per segment by the postmaster before forking; lives as long as
    // the segment, i.e. as long as this process.
    unsafe { &*p }
}

/// The shared redo log (after `engine()` succeeded).
pub fn log() -> &'static memfdw_engine::redo::shared::SharedLog {
    let p = LOG.load(Ordering::Acquire);
    // SAFETY: set with the engine by the postmaster; lives as long as the engine.
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
}
