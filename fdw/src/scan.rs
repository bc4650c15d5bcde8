//! Planning and executing scans of memory tables.
//!
//! Today a scan reads the whole table in row-id order (the pseudo-primary key); every
//! qual is evaluated by PostgreSQL. Rows are copied out of the engine in batches into
//! backend memory, so no engine pin is held while PostgreSQL runs.

use crate::errors;
use crate::shmem::engine;
use crate::types::{self, Codec};
use crate::xact;
use memfdw_engine::{RowBatch, ScanCursor, TableHandle};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

pub struct ScanState {
    relid: u32,
    table: TableHandle,
    codecs: Vec<Codec>,
    cursor: ScanCursor,
    batch: RowBatch,
    /// Command id of the statement's snapshot: own writes of earlier commands are seen.
    cid: u32,
    /// The scan feeds an UPDATE or DELETE of this table: remember row versions.
    for_update: bool,
    batch_rows: usize,
    examined: u64,
}

fn table_rows(relid: pg_sys::Oid) -> f64 {
    if !crate::shmem::preloaded() {
        return 1000.0;
    }
    engine()
        .table_stats(relid.to_u32())
        .map(|s| s.rows.max(0) as f64)
        .unwrap_or(0.0)
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_rel_size(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Oid,
) {
    let tuples = table_rows(relid);
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let sel = pg_sys::clauselist_selectivity(
            root,
            (*baserel).baserestrictinfo,
            0,
            pg_sys::JoinType::JOIN_INNER,
            std::ptr::null_mut(),
        );
        (*baserel).tuples = tuples;
        (*baserel).rows = (tuples * sel).round().max(1.0);
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_paths(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _relid: pg_sys::Oid,
) {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let tuples = (*baserel).tuples;
        // Reading a row from memory costs about as much as PostgreSQL's per-tuple CPU
        // cost; there is no I/O.
        let per_tuple = pg_sys::cpu_tuple_cost + (*baserel).baserestrictcost.per_tuple;
        let startup = (*baserel).baserestrictcost.startup;
        let total = startup + tuples * per_tuple;
        let path = pg_sys::create_foreignscan_path(
            root,
            baserel,
            std::ptr::null_mut(),
            (*baserel).rows,
            startup,
            total,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        pg_sys::add_path(baserel, path as *mut pg_sys::Path);
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_plan(
    _root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    _relid: pg_sys::Oid,
    _best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    scan_clauses: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let quals = pg_sys::extract_actual_clauses(scan_clauses, false);
        pg_sys::make_foreignscan(
            tlist,
            quals,
            (*baserel).relid,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    eflags: std::ffi::c_int,
) {
    if eflags as u32 & pg_sys::EXEC_FLAG_EXPLAIN_ONLY != 0 {
        return;
    }
    // SAFETY: executor structures handed to us by PostgreSQL.
    unsafe {
        let rel = (*node).ss.ss_currentRelation;
        let relid = (*rel).rd_id;
        let Some(table) = engine().table(relid.to_u32()) else {
            errors::missing_table(relid)
        };
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let estate = (*node).ss.ps.state;
        let scanrelid = (*plan).scan.scanrelid as i32;
        let for_update =
            pg_sys::list_member_int((*(*estate).es_plannedstmt).resultRelations, scanrelid);
        if for_update {
            xact::clear_fetched();
        }
        let state = ScanState {
            relid: relid.to_u32(),
            codecs: table.def.columns.iter().map(|c| Codec::of(c.ty)).collect(),
            table,
            cursor: ScanCursor::new(),
            batch: RowBatch::new(),
            cid: (*(*estate).es_snapshot).curcid,
            for_update,
            batch_rows: crate::settings::SCAN_BATCH_ROWS.get().max(1) as usize,
            examined: 0,
        };
        (*node).fdw_state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state)
            as *mut std::ffi::c_void;
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: executor structures handed to us by PostgreSQL; fdw_state is ours.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        let st = (*node).fdw_state as *mut ScanState;
        if st.is_null() {
            return pg_sys::ExecClearTuple(slot);
        }
        let ScanState {
            relid,
            table,
            codecs,
            cursor,
            batch,
            cid,
            for_update,
            batch_rows,
            examined,
        } = &mut *st;
        loop {
            if let Some(r) = batch.next() {
                types::unpack(codecs, &table.layout, r.data, slot);
                types::rowid_to_ctid(r.rowid, &mut (*slot).tts_tid);
                if *for_update {
                    xact::note_fetched(*relid, r.rowid, r.tid);
                }
                *examined += 1;
                return pg_sys::ExecStoreVirtualTuple(slot);
            }
            if cursor.done() {
                return pg_sys::ExecClearTuple(slot);
            }
            pgrx::check_for_interrupts!();
            xact::with_txn(|t| t.scan(table, cursor, *cid, batch, *batch_rows));
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours.
    unsafe {
        let st = (*node).fdw_state as *mut ScanState;
        if let Some(st) = st.as_mut() {
            st.cursor = ScanCursor::new();
            st.batch = RowBatch::new();
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_scan(_node: *mut pg_sys::ForeignScanState) {
    // The state is dropped with the executor's memory context.
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn explain_foreign_scan(
    node: *mut pg_sys::ForeignScanState,
    es: *mut pg_sys::ExplainState,
) {
    // SAFETY: executor and explain structures handed to us by PostgreSQL.
    unsafe {
        pg_sys::ExplainPropertyText(
            c"Memory Table Access".as_ptr(),
            c"full scan (row id order)".as_ptr(),
            es,
        );
        let st = (*node).fdw_state as *mut ScanState;
        if (*es).analyze {
            if let Some(st) = st.as_ref() {
                pg_sys::ExplainPropertyInteger(
                    c"Rows Examined".as_ptr(),
                    std::ptr::null(),
                    st.examined as i64,
                    es,
                );
            }
        }
    }
}
