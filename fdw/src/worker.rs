//! memfdw's background worker: recovers the engine at start-up (checkpoint and redo
//! log, with progress and failure reporting; `startup` publishes the outcome to the
//! sessions), then syncs the redo log every `WRITER_DELAY` (so
//! asynchronous commits are lost at most that long after they return) and takes
//! checkpoints when `memfdw.checkpoint_timeout` has passed or the log has grown past
//! `memfdw.max_log_size`; fills point caches after a start, and starts automatic
//! ANALYZE workers (`autoanalyze.rs`). Restarted by the postmaster if it dies.

use crate::shmem::{engine, log};
use crate::startup;
use memfdw_engine::redo::shared::SharedLog;
use memfdw_engine::redo::RedoSink;
use memfdw_engine::Engine;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How often the worker syncs the log.
pub const WRITER_DELAY: Duration = Duration::from_millis(200);
/// Bytes of the arena past its bump pointer the worker keeps resident (at most an
/// eighth of the arena), and the most it makes resident per turn of its loop.
const PREFAULT_AHEAD: usize = 128 << 20;
const PREFAULT_STEP: usize = 32 << 20;

/// Index entries put into point caches per turn of the worker's loop after a start
/// (some 10-20 ms of work).
const WARMUP_ENTRIES: usize = 100_000;

/// How often the worker records in the control file how far the log is durable.
const DURABLE_MARKER_DELAY: Duration = Duration::from_secs(5);

/// Items of the horizon queue (one per commit) the worker processes per round.
const RECLAIM_ITEMS: usize = 10_000;

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

/// Did PostgreSQL transaction `xid` commit? Recovery asks for every commit whose redo
/// record names an xid. The worker starts once PostgreSQL's own recovery has finished
/// (`RecoveryFinished`), so the commit log is final: a transaction cut off by a crash
/// reads as not committed.
fn xid_committed(xid: u32) -> bool {
    let x = pg_sys::TransactionId::from(xid);
    // SAFETY: reads of PostgreSQL's transaction state and commit log, after recovery.
    unsafe {
        let oldest = (*pg_sys::ShmemVariableCache).oldestClogXid;
        if pg_sys::TransactionIdPrecedes(x, oldest) {
            // Its commit log is truncated: it ended long before the last checkpoint of
            // anything still in the log, which happens only if memfdw's checkpoints
            // stopped for hundreds of millions of transactions.
            pgrx::warning!(
                "memfdw: the commit log no longer covers transaction {xid}; its logged memory changes are applied"
            );
            return true;
        }
        pg_sys::TransactionIdDidCommit(x)
    }
}

/// Registers the worker (from `_PG_init`, while preloading).
pub fn register() {
    BackgroundWorkerBuilder::new("memfdw log writer and checkpointer")
        .set_type("memfdw")
        .set_library("memfdw")
        .set_function("memfdw_worker_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// # Safety
/// Called by PostgreSQL as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memfdw_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    if !start_engine() {
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
    let mut last_marker = Instant::now();
    // The point caches of unique indexes start empty (a restart, a recovery): fill
    // them from the indexes a slice at a time, between the worker's other duties, so
    // that the first primary-key lookups need no skip-list search.
    let mut warmup = memfdw_engine::point_cache::Warmup::new();
    let mut analyzer = crate::autoanalyze::Launcher::new();
    // When to try again to write out a spare log segment after a failure.
    let mut spare_retry_at: Option<Instant> = None;
    // Whether to keep making the arena's next pages resident (until it fails once).
    let mut prefault = true;
    while !shutdown_requested() && BackgroundWorker::wait_latch(Some(WRITER_DELAY)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration file, as every worker does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if let Err(err) = log.make_durable(log.written_lsn()) {
            crate::errors::raise(memfdw_engine::Error::NotDurable(err.to_string()));
        }
        // The next log segments, written out ahead of need (one per turn, up to two),
        // so that the commit that fills the current one does not write and sync a
        // segment of zeros while every other committer waits (see
        // `SharedLog::prepare_spare`).
        if spare_retry_at.is_none_or(|t| Instant::now() >= t) {
            match log.prepare_spare() {
                Ok(_) => spare_retry_at = None,
                Err(err) => {
                    pgrx::warning!(
                        "memfdw: could not write out the next log segment in advance: {err}"
                    );
                    spare_retry_at = Some(Instant::now() + Duration::from_secs(10));
                }
            }
        }
        // The arena's next pages, resident ahead of need: the kernel allocates and
        // zeroes them here rather than in the first write of a committing backend
        // (see `Arena::prefault_ahead`).
        if prefault {
            if let Some(a) = memfdw_engine::alloc::arena() {
                let ahead = (a.stats().capacity / 8).min(PREFAULT_AHEAD);
                if let Err(err) = a.prefault_ahead(ahead, PREFAULT_STEP) {
                    pgrx::log!("memfdw: not making memory resident ahead of need: {err}");
                    prefault = false;
                }
            }
        }
        if !warmup.done() {
            e.warm_point_caches(&mut warmup, WARMUP_ENTRIES);
        }
        analyzer.tick(e);
        // Old versions, stale keys and deleted rows whose snapshots are gone (also
        // when no commit comes along to clean up after a long reader).
        if e.reclaim_versions(RECLAIM_ITEMS) > 0 {
            e.reclaim();
        }
        if last_marker.elapsed() >= DURABLE_MARKER_DELAY {
            // Recovery refuses a log that ends before this mark (lost acknowledged
            // commits) instead of cutting it as a torn write.
            last_marker = Instant::now();
            if let Err(err) = log.update_durable_marker() {
                pgrx::warning!("memfdw: could not update the control file: {err}");
            }
        }
        let limit = (crate::settings::MAX_LOG_SIZE_MB.get().max(1) as u64) << 20;
        let timeout =
            Duration::from_secs(crate::settings::CHECKPOINT_TIMEOUT_S.get().max(1) as u64);
        let grown = log.bytes_since_checkpoint();
        if grown >= limit || (grown > 0 && last_checkpoint.elapsed() >= timeout) {
            match crate::progress::write_checkpoint(e, log) {
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

pub fn data_directory() -> String {
    crate::settings::DATA_DIRECTORY
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "memfdw".into())
}

/// Brings the engine of this segment up: recovers it unless an earlier worker of this
/// segment already did. Returns false if memory tables are unavailable (recovery
/// failed, now or in an earlier worker of this segment).
fn start_engine() -> bool {
    let engine = crate::shmem::engine_for_worker();
    match startup::begin_recovery() {
        startup::Begin::Recover => {}
        startup::Begin::AlreadyReady => return true,
        startup::Begin::Failed => return false,
    }
    let delay = crate::settings::DEBUG_RECOVERY_DELAY_MS.get();
    if delay > 0 {
        pgrx::log!("memfdw: waiting {delay} ms before recovery (memfdw.debug_recovery_delay)");
        let until = Instant::now() + Duration::from_millis(delay as u64);
        while Instant::now() < until && !shutdown_requested() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if shutdown_requested() {
            startup::publish_failure(
                "memfdw: recovery was interrupted by a shutdown request",
                None,
            );
            return false;
        }
    }
    match recover(engine) {
        Ok(log) => {
            startup::publish_ready(log);
            true
        }
        Err((why, hint)) => {
            startup::publish_failure(&why, hint.as_deref());
            false
        }
    }
}

/// Rebuilds the engine's tables from the checkpoint and the redo log and starts the log
/// again where it ends. A corrupt log fails recovery: nothing past the corruption may be
/// applied, and nothing may be written after it.
fn recover(engine: &'static Engine) -> Result<&'static SharedLog, (String, Option<String>)> {
    let dir = data_directory();
    let started = std::time::Instant::now();
    pgrx::log!("memfdw: recovery of memory tables from \"{dir}\" started");
    let slot = crate::progress::recovery();
    if let Some(s) = slot {
        s.start();
    }
    let progress = |p: memfdw_engine::recovery::Progress| {
        if let Some(s) = slot {
            let phase = if p.phase == "log" { 2 } else { 1 };
            s.set(phase, (0, 0), p.records, p.bytes);
        }
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
        !shutdown_requested()
    };
    let r = memfdw_engine::recovery::recover_engine_with(engine, &dir, progress, xid_committed);
    if let Some(s) = slot {
        if let Ok(r) = &r {
            let tables = engine.table_ids().len() as u64;
            s.set_counts(2, tables, r.records);
        }
        s.finish(r.is_ok());
    }
    let r = r.map_err(|e| match e {
        memfdw_engine::recovery::RecoveryError::Interrupted => (
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
    if r.aborted_commits > 0 {
        pgrx::log!(
            "memfdw: skipped {} logged commits whose PostgreSQL transaction did not commit",
            r.aborted_commits
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
        .table_ids()
        .into_iter()
        .filter_map(|t| engine.table_stats(t))
        .map(|s| s.rows)
        .sum();
    let bytes = engine.memory().in_use as f64;
    pgrx::log!(
        "memfdw: recovered {} tables, {} rows ({:.1} MB in memory) from {} redo records in {} segments in {:.3} s ({:.1} MB/s); log ends at LSN {:X}",
        engine.table_ids().len(),
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
            log.set_sync_delay(crate::settings::DEBUG_LOG_SYNC_DELAY_MS.get().max(0) as u64);
            if let Err(e) = log.restore(&r) {
                return Err((
                    format!("memfdw: could not write the control file in \"{dir}\": {e}"),
                    None,
                ));
            }
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
