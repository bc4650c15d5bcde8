//! memfdw's background worker: recovers the engine at start-up (see `shmem`), then syncs the redo log every `WRITER_DELAY` (so
//! asynchronous commits are lost at most that long after they return) and takes
//! checkpoints when `memfdw.checkpoint_timeout` has passed or the log has grown past
//! `memfdw.max_log_size`. Restarted by the postmaster if it dies.

use crate::shmem::{engine, log};
use memfdw_engine::redo::RedoSink;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How often the worker syncs the log.
pub const WRITER_DELAY: Duration = Duration::from_millis(200);

/// A SIGTERM seen by [`shutdown_requested`] (pgrx's flag is cleared when read).
static SHUTDOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once the worker was asked to stop (SIGTERM); stays true.
pub fn shutdown_requested() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    if BackgroundWorker::sigterm_received() {
        SHUTDOWN.store(true, Relaxed);
    }
    SHUTDOWN.load(Relaxed)
}

/// Registers the worker (from `_PG_init`, while preloading).
pub fn register() {
    BackgroundWorkerBuilder::new("memfdw log writer and checkpointer")
        .set_type("memfdw")
        .set_library("memfdw")
        .set_function("memfdw_worker_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// # Safety
/// Called by PostgreSQL as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memfdw_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    if !crate::shmem::start_engine() {
        // Recovery failed: stay, idle, until shutdown (exiting would have the
        // postmaster start us again into the same failure).
        while !shutdown_requested() && BackgroundWorker::wait_latch(None) {}
        return;
    }
    let e = engine();
    let log = log();
    pgrx::log!(
        "memfdw: background worker started (log sync every {} ms)",
        WRITER_DELAY.as_millis()
    );
    let mut last_checkpoint = Instant::now();
    while !shutdown_requested() && BackgroundWorker::wait_latch(Some(WRITER_DELAY)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration file, as every worker does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if let Err(err) = log.make_durable(log.written_lsn()) {
            crate::errors::raise(memfdw_engine::Error::NotDurable(err.to_string()));
        }
        let limit = (crate::settings::MAX_LOG_SIZE_MB.get().max(1) as u64) << 20;
        let timeout =
            Duration::from_secs(crate::settings::CHECKPOINT_TIMEOUT_S.get().max(1) as u64);
        let grown = log.bytes_since_checkpoint();
        if grown >= limit || (grown > 0 && last_checkpoint.elapsed() >= timeout) {
            match memfdw_engine::redo::checkpoint::write_checkpoint(e, log) {
                Ok(i) => {
                    last_checkpoint = Instant::now();
                    pgrx::log!(
                        "memfdw: checkpoint at LSN {:X}: {} tables, {} rows, {} bytes in {:.3} s; {} log segments removed",
                        i.start_lsn,
                        i.tables,
                        i.rows,
                        i.bytes,
                        i.seconds,
                        i.segments_removed
                    );
                }
                Err(memfdw_engine::redo::checkpoint::CheckpointError::Busy) => {}
                Err(err) => pgrx::warning!("memfdw: checkpoint failed: {err}"),
            }
        }
    }
}
