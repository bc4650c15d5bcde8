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
    /// Per column: does the plan read it? Others are returned as NULL, unpacked never.
    needed: Vec<bool>,
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
        let fdw_private = needed_columns(baserel, quals);
        pg_sys::make_foreignscan(
            tlist,
            quals,
            (*baserel).relid,
            std::ptr::null_mut(),
            fdw_private,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}

/// The columns the plan reads (the relation's target list and its quals), as an
/// integer list of attribute numbers; a list holding only 0 means every column.
///
/// # Safety
/// Planner structures of the scanned relation.
unsafe fn needed_columns(
    baserel: *mut pg_sys::RelOptInfo,
    quals: *mut pg_sys::List,
) -> *mut pg_sys::List {
    // SAFETY: forwarded contract.
    unsafe {
        let relid = (*baserel).relid;
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        pg_sys::pull_varattnos(
            (*(*baserel).reltarget).exprs as *mut pg_sys::Node,
            relid,
            &mut attrs,
        );
        pg_sys::pull_varattnos(quals as *mut pg_sys::Node, relid, &mut attrs);
        let mut list: *mut pg_sys::List = std::ptr::null_mut();
        let mut m = -1;
        loop {
            m = pg_sys::bms_next_member(attrs, m);
            if m < 0 {
                break;
            }
            let attno = m + pg_sys::FirstLowInvalidHeapAttributeNumber;
            if attno == 0 {
                // A whole-row reference needs every column.
                return pg_sys::lappend_int(std::ptr::null_mut(), 0);
            }
            if attno > 0 {
                list = pg_sys::lappend_int(list, attno);
            }
        }
        list
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
        let ncols = table.def.columns.len();
        let private = (*plan).fdw_private;
        let mut needed = vec![false; ncols];
        for i in 0..pg_sys::list_length(private) {
            match pg_sys::list_nth_int(private, i) {
                0 => needed.iter_mut().for_each(|n| *n = true),
                a if a as usize <= ncols => needed[a as usize - 1] = true,
                _ => {}
            }
        }
        let state = ScanState {
            relid: relid.to_u32(),
            needed,
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
            needed,
            cursor,
            batch,
            cid,
            for_update,
            batch_rows,
            examined,
        } = &mut *st;
        loop {
            if let Some(r) = batch.next() {
                types::unpack(codecs, Some(needed.as_slice()), &table.layout, r.data, slot);
                types::rowid_to_ctid(r.rowid, &mut (*slot).tts_tid);
                if *for_update {
                    xact::note_fetched(*relid, r.rowid, r.tid);
                }
                *examined += 1;
                return types::store_virtual(slot);
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
