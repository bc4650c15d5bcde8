//! Parallel sequential scans of memory tables (PostgreSQL's parallel query).
//!
//! The engine lives in shared memory, so any process can read a table: a parallel
//! worker reads it through the engine directly, at the leader's snapshot, claiming
//! blocks of row ids from a [`SharedScan`] the leader places in the query's dynamic
//! shared memory (see `memfdw_engine::txn::shared_scan`).
//!
//! Rules kept here:
//! * Only the full-table scan has a partial (parallel-aware) path. Every other memory
//!   table path is marked parallel-unsafe, so no plan runs a non-shared memfdw scan in
//!   a worker: a worker has no engine transaction or snapshot of its own, and one it
//!   took would not be the leader's.
//! * Queries that lock or write rows are never parallel (PostgreSQL plans them
//!   without workers; `is_parallel_safe` says no to row marks as well).
//! * A leader whose transaction sees its own version of the table reads it alone (the
//!   engine marks such a scan leader-only); so does a leader that runs the plan
//!   without a parallel context (no shared scan was set up).

use crate::errors;
use crate::scan::ScanState;
use crate::shmem::engine;
use crate::xact;
use memfdw_engine::SharedScan;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// `IsForeignScanParallelSafe`.
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn is_parallel_safe(
    root: *mut pg_sys::PlannerInfo,
    _rel: *mut pg_sys::RelOptInfo,
    _rte: *mut pg_sys::RangeTblEntry,
) -> bool {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let parse = (*root).parse;
        crate::shmem::preloaded()
            && (*parse).commandType == pg_sys::CmdType::CMD_SELECT
            && (*parse).rowMarks.is_null()
    }
}

/// Adds the partial path of a full scan whose serial cost is `startup` +
/// `run_cost`, with as many workers as PostgreSQL would give a heap table of the same
/// size; then marks every other path of the relation parallel-unsafe (see the module
/// documentation).
///
/// # Safety
/// Planner structures of the relation being planned.
pub unsafe fn add_partial_path(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Oid,
    startup: f64,
    run_cost: f64,
) {
    // SAFETY: forwarded contract.
    unsafe {
        for p in pgrx::PgList::<pg_sys::Path>::from_pg((*baserel).pathlist).iter_ptr() {
            (*p).parallel_safe = false;
        }
        if !(*baserel).consider_parallel || !(*baserel).lateral_relids.is_null() {
            return;
        }
        let bytes = engine()
            .table_stats(crate::handler::table_id(relid))
            .map_or(0, |s| s.data_bytes.max(0));
        let pages = (bytes as f64 / pg_sys::BLCKSZ as f64).ceil();
        let workers = pg_sys::compute_parallel_worker(
            baserel,
            pages,
            -1.0,
            pg_sys::max_parallel_workers_per_gather,
        );
        if workers <= 0 {
            return;
        }
        // costsize.c's get_parallel_divisor: the leader contributes less as workers
        // are added.
        let mut divisor = workers as f64;
        if pg_sys::parallel_leader_participation {
            let leader = 1.0 - 0.3 * workers as f64;
            if leader > 0.0 {
                divisor += leader;
            }
        }
        let path = pg_sys::create_foreignscan_path(
            root,
            baserel,
            std::ptr::null_mut(),
            ((*baserel).rows / divisor).round().max(1.0),
            startup,
            startup + run_cost / divisor,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        (*path).path.parallel_aware = true;
        (*path).path.parallel_safe = true;
        (*path).path.parallel_workers = workers;
        pg_sys::add_partial_path(baserel, path as *mut pg_sys::Path);
    }
}

/// `EstimateDSMForeignScan`.
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn estimate_dsm(
    _node: *mut pg_sys::ForeignScanState,
    _pcxt: *mut pg_sys::ParallelContext,
) -> pg_sys::Size {
    std::mem::size_of::<SharedScan>()
}

/// `InitializeDSMForeignScan` (leader): sets the shared scan up at the statement's
/// snapshot.
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises;
/// `coordinate` has room for [`estimate_dsm`]'s bytes, MAXALIGNed.
#[pg_guard]
pub unsafe extern "C-unwind" fn initialize_dsm(
    node: *mut pg_sys::ForeignScanState,
    _pcxt: *mut pg_sys::ParallelContext,
    coordinate: *mut std::ffi::c_void,
) {
    // SAFETY: fdw_state is ours; `coordinate` is the scan's part of the DSM segment.
    unsafe {
        let Some(st) = ((*node).fdw_state as *mut ScanState).as_mut() else {
            return;
        };
        let shared = xact::with_txn(|t| {
            t.set_read_snapshot(st.snapshot());
            t.start_shared_scan(st.table())
        });
        let p = coordinate as *mut SharedScan;
        p.write(shared);
        st.shared = Some(p);
    }
}

/// `ReInitializeDSMForeignScan` (leader, before a rescan with new workers).
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn reinitialize_dsm(
    _node: *mut pg_sys::ForeignScanState,
    _pcxt: *mut pg_sys::ParallelContext,
    coordinate: *mut std::ffi::c_void,
) {
    // SAFETY: initialised by `initialize_dsm`; no participant runs now.
    unsafe { (*(coordinate as *const SharedScan)).restart() }
}

/// `InitializeWorkerForeignScan`.
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn initialize_worker(
    node: *mut pg_sys::ForeignScanState,
    _toc: *mut pg_sys::shm_toc,
    coordinate: *mut std::ffi::c_void,
) {
    // SAFETY: fdw_state is ours; the leader initialised `coordinate`.
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut ScanState).as_mut() {
            st.shared = Some(coordinate as *const SharedScan);
        }
    }
}

/// A participant found another table than the leader's (a bug: the leader holds its
/// lock on the relation while the query runs).
pub fn table_mismatch(relid: u32) -> ! {
    errors::internal(format!(
        "parallel scan of memory table \"{}\" found a different table in a worker",
        crate::types::relation_name(pg_sys::Oid::from(relid))
    ))
}

/// A memfdw scan that is not shared ran in a parallel worker (a bug: such paths are
/// marked parallel-unsafe).
pub fn not_shared(relid: u32) -> ! {
    errors::internal(format!(
        "memory table \"{}\" cannot be scanned in a parallel worker outside a shared scan",
        crate::types::relation_name(pg_sys::Oid::from(relid))
    ))
}
