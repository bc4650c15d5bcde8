//! Automatic ANALYZE of memory tables: PostgreSQL's autovacuum never analyzes foreign
//! tables, so a newly loaded memory table would keep default estimates until someone
//! ran ANALYZE. memfdw's background worker looks every `memfdw.autoanalyze_naptime`
//! for tables with more rows changed since their last ANALYZE than
//! `memfdw.autoanalyze_threshold` + `memfdw.autoanalyze_scale_factor` × rows (the rule
//! of autovacuum's `autovacuum_analyze_*` settings), and starts a short-lived worker
//! connected to the database of the first one; it runs ANALYZE on each table of that
//! database that is due (filling `pg_statistic` and the engine's key-prefix
//! statistics, see `memfdw_engine::stats`), then exits. One such worker runs at a
//! time; the tables tried least recently go first, so one that fails (the worker
//! logs the error and exits) does not starve the others.

use crate::settings::{
    AUTOANALYZE, AUTOANALYZE_NAPTIME_S, AUTOANALYZE_SCALE_FACTOR, AUTOANALYZE_THRESHOLD,
};
use memfdw_engine::Engine;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// The tables due for an automatic ANALYZE (of `database`, or of all).
fn due(e: &Engine, database: Option<u32>) -> Vec<memfdw_engine::TableId> {
    e.tables_to_analyze(
        database,
        AUTOANALYZE_THRESHOLD.get().max(0) as u64,
        AUTOANALYZE_SCALE_FACTOR.get().max(0.0),
    )
}

/// The background worker's side: starts analyze workers.
pub struct Launcher {
    running: Option<DynamicBackgroundWorker>,
    last: Option<Instant>,
    /// A failure to start a worker was logged (not again until one starts).
    warned: bool,
}

impl Launcher {
    pub fn new() -> Launcher {
        Launcher {
            running: None,
            last: None,
            warned: false,
        }
    }

    /// One turn of the background worker's loop.
    pub fn tick(&mut self, e: &Engine) {
        if let Some(w) = &self.running {
            match w.pid() {
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => return,
                Err(_) => self.running = None,
            }
        }
        if !AUTOANALYZE.get() {
            return;
        }
        let nap = Duration::from_secs(AUTOANALYZE_NAPTIME_S.get().max(1) as u64);
        if self.last.is_some_and(|t| t.elapsed() < nap) {
            return;
        }
        self.last = Some(Instant::now());
        let Some(first) = due(e, None).into_iter().next() else {
            return;
        };
        let started = BackgroundWorkerBuilder::new("memfdw autoanalyze")
            .set_type("memfdw autoanalyze")
            .set_library("memfdw")
            .set_function("memfdw_autoanalyze_main")
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            .set_argument(Some(pg_sys::Datum::from(first.database)))
            .load_dynamic();
        match started {
            Ok(w) => {
                self.running = Some(w);
                self.warned = false;
            }
            Err(_) if !self.warned => {
                self.warned = true;
                pgrx::log!(
                    "memfdw: could not start an automatic analyze worker (max_worker_processes?); will try again"
                );
            }
            Err(_) => {}
        }
    }
}

/// # Safety
/// Called by PostgreSQL as a dynamic background worker's main function; `arg` is the
/// OID of the database to connect to.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memfdw_autoanalyze_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = arg.value() as u32;
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    let e = crate::shmem::engine();
    for id in due(e, Some(database)) {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        let Some(t) = e.table(id) else { continue };
        // SAFETY: reading the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        t.access.autoanalyze_tried.store(now, Relaxed);
        drop(t);
        let relid = pg_sys::Oid::from(id.relation);
        BackgroundWorker::transaction(|| {
            let name: Option<String> = Spi::get_one_with_args(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                &[relid.into()],
            )
            .ok()
            .flatten();
            if let Some(name) = name {
                pgrx::log!("memfdw: automatic analyze of memory table {name}");
                if let Err(err) = Spi::run(&format!("ANALYZE {name}")) {
                    pgrx::warning!("memfdw: automatic analyze of {name} failed: {err}");
                }
            }
        });
    }
}
