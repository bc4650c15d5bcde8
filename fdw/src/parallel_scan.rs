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
//! * A transaction that sees its own version of the table (it wrote, truncated or
//!   altered it) gets no parallel plan for it: workers read only committed rows. A
//!   plan made before such a change (prepared, cached) finds the engine's scan
//!   leader-only; its workers then raise 0A000 rather than leave the rows to the
//!   leader, since PostgreSQL does not promise that the leader runs its part (with
//!   `parallel_leader_participation = off`, a late leader in a Parallel Hash, a
//!   Parallel Append). A leader that runs the plan without a parallel context reads
//!   the table alone through its transaction.
//! * Rows the workers return were installed after their log records were written:
//!   the leader notes the log's end when its scan ends, so its commit waits for
//!   them (durable reads).

use crate::errors;
use crate::scan::ScanState;
use crate::shmem::engine;
use crate::xact;
use memfdw_engine::SharedScan;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Bytes a heap tuple takes besides its data: a 24-byte header and a 4-byte line
/// pointer.
const HEAP_TUPLE_OVERHEAD: i64 = 28;

/// `IsForeignScanParallelSafe`.
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn is_parallel_safe(
    root: *mut pg_sys::PlannerInfo,
    _rel: *mut pg_sys::RelOptInfo,
    rte: *mut pg_sys::RangeTblEntry,
) -> bool {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let parse = (*root).parse;
        if !crate::shmem::preloaded()
            || (*parse).commandType != pg_sys::CmdType::CMD_SELECT
            || !(*parse).rowMarks.is_null()
        {
            return false;
        }
        // Workers read only what is committed (see `leader_only`).
        let id = crate::handler::table_id((*rte).relid);
        let mut own = false;
        xact::with_existing_txn(|t| own = t.own_view_of(id));
        !own
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
        // The pages a heap table with these rows would have: the row data plus a
        // tuple header and a line pointer per row.
        let bytes = engine()
            .table_stats(crate::handler::table_id(relid))
            .map_or(0, |s| {
                s.data_bytes.max(0) + s.rows.max(0) * HEAP_TUPLE_OVERHEAD
            });
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

/// A worker was given a scan only the leader can read: the plan was made before the
/// transaction wrote (or truncated or altered) the table, and PostgreSQL does not
/// promise that the leader runs its part of the plan, so the worker cannot leave the
/// rows to it.
pub fn leader_only(relid: u32) -> ! {
    let name = crate::types::relation_name(pg_sys::Oid::from(relid));
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("a parallel plan cannot read memory table \"{name}\" after this transaction changed it"),
        "memfdw",
    )
    .set_detail("The plan was made before the change (a prepared statement or a cached PL/pgSQL plan); parallel workers read only committed rows.")
    .set_hint("Run the statement with max_parallel_workers_per_gather = 0, or before the change.")
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// A participant found another table than the leader's (a bug: the leader holds its
/// lock on the relation while the query runs).
pub fn table_mismatch(relid: u32) -> ! {
    errors::internal(format!(
        "parallel scan of memory table \"{}\" found a different table in a worker",
        crate::types::relation_name(pg_sys::Oid::from(relid))
    ))
}

/// A memfdw scan that is not shared ran in a parallel worker: a query inside a
/// function marked PARALLEL SAFE (memfdw's own paths that are not shared are
/// parallel-unsafe).
pub fn not_shared(relid: u32) -> ! {
    let name = crate::types::relation_name(pg_sys::Oid::from(relid));
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("memory table \"{name}\" cannot be read by a parallel worker here"),
        "memfdw",
    )
    .set_detail("A parallel worker reads memory tables only through a Parallel Foreign Scan; this query runs inside a function called by a worker.")
    .set_hint("Mark the function that reads it PARALLEL RESTRICTED.")
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}
