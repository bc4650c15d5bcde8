//! Planning and executing scans of memory tables.
//!
//! A scan reads the whole table in row-id order (the pseudo-primary key), or an index
//! (see `index_paths` for the paths offered): one or more key ranges (one per value of
//! an `IN` list), forwards or backwards. Every qual is still evaluated by PostgreSQL.
//! Rows are copied out of the engine in batches into backend memory, so no engine pin
//! is held while PostgreSQL runs.

use crate::cross_type::{self, Conv};
use crate::errors::{self, OrRaise};
use crate::index_paths::{CondKind, IndexChoice};
use crate::plan_private::{self, LockPolicy, PathPrivate, ScanPrivate};
use crate::shmem::engine;
use crate::types::{self, Codec};
use crate::xact;
use memfdw_engine::{keys, Error, IndexScan, KeyBound, RowBatch, ScanCursor, TableHandle};
use memfdw_engine::{LockMode, RowId, Tid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::ffi::CString;

pub struct ScanState {
    relid: u32,
    table: TableHandle,
    /// The plan, decoded (its codecs, the columns it reads, its index and filter).
    plan: std::rc::Rc<crate::scan_plans::ScanPlan>,
    /// Every column is read, whatever the plan's `needed` says (a direct DELETE ...
    /// RETURNING). Otherwise columns the plan does not read are returned as NULL,
    /// unpacked never.
    all_columns: bool,
    cursor: ScanCursor,
    batch: RowBatch,
    /// Command id of the statement's snapshot: own writes of earlier commands are seen.
    cid: u32,
    /// The engine snapshot this scan reads at (read committed; see `snapshots`).
    snapshot: Option<memfdw_engine::Tid>,
    /// The scan feeds an UPDATE or DELETE of this table: remember row versions.
    for_update: bool,
    batch_rows: usize,
    examined: u64,
    index: Option<IndexState>,
    lock: LockPolicy,
    mode: LockMode,
    /// The newest version of a row whose lock was waited for.
    reread: Vec<u8>,
    /// Scan starts (the first and each rescan), added to the table's access counters
    /// at the end with `examined`.
    starts: u64,
    /// Parallel query: the scan shared with the other participants (in the dynamic
    /// shared memory of the query), once set up (see `parallel_scan`).
    pub(crate) shared: Option<*const memfdw_engine::SharedScan>,
    pub(crate) shared_cursor: memfdw_engine::SharedCursor,
    /// This process is a parallel worker: it has no engine transaction and reads only
    /// through `shared`.
    pub(crate) in_worker: bool,
    /// The scan's quals (compiled by PostgreSQL), evaluated here before a row is
    /// locked; a direct modification evaluates them only here (see `direct_modify`).
    qual: *mut pg_sys::ExprState,
    /// The version of the row returned last (the one a direct modification writes
    /// over).
    pub(crate) last_tid: Tid,
    /// The scan updates or deletes the rows it finds (a direct modification).
    pub(crate) direct: Option<Box<crate::direct_modify::DirectState>>,
    /// The row filter's value expressions (indexed as `fdw_exprs`; its conditions
    /// and their types are the plan's), and whether the filter for the current
    /// values is on the cursors (built at the first fetch of each scan).
    filter_exprs: Vec<*mut pg_sys::ExprState>,
    filter_ready: bool,
    /// Rows the filter removed in earlier scans (before the last rescan).
    filter_removed: u64,
    /// Where the conditions the plan left to the index start in `fdw_exprs` (-1:
    /// none; see `ScanPrivate::dropped_at`), and their compiled form once the scan
    /// reads the whole table instead of the index (null before).
    dropped_at: i32,
    dropped_qual: *mut pg_sys::ExprState,
}

impl ScanState {
    /// The table this scan reads.
    pub(crate) fn table(&self) -> &TableHandle {
        &self.table
    }

    /// The engine snapshot this scan reads at (read committed).
    pub(crate) fn snapshot(&self) -> Option<Tid> {
        self.snapshot
    }

    /// Every column is read (a direct DELETE ... RETURNING needs the whole old row).
    pub(crate) fn need_all_columns(&mut self) {
        self.all_columns = true;
    }
}

/// An index scan in progress (the index and its conditions are the plan's
/// `choice`).
struct IndexState {
    /// Comparison values (`fdw_exprs`), evaluated at the start and at every rescan.
    exprs: Vec<*mut pg_sys::ExprState>,
    /// Key ranges still to read (built lazily), in order.
    ranges: Option<Vec<IndexScan>>,
    current: usize,
}

fn table_rows(relid: pg_sys::Oid) -> f64 {
    if !crate::shmem::preloaded() {
        return 1000.0;
    }
    engine()
        .table_stats(crate::handler::table_id(relid))
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
    relid: pg_sys::Oid,
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
        if crate::shmem::preloaded() {
            crate::index_paths::add_index_paths(root, baserel, relid);
            crate::parallel_scan::add_partial_path(
                root,
                baserel,
                relid,
                startup,
                tuples * per_tuple,
            );
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_plan(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Oid,
    best_path: *mut pg_sys::ForeignPath,
    tlist: *mut pg_sys::List,
    scan_clauses: *mut pg_sys::List,
    outer_plan: *mut pg_sys::Plan,
) -> *mut pg_sys::ForeignScan {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        if (*baserel).reloptkind == pg_sys::RelOptKind::RELOPT_UPPER_REL {
            return crate::aggregates::plan(best_path, tlist);
        }
        // The index's comparison values go to fdw_exprs, where the planner turns outer
        // columns into params.
        let path = PathPrivate::from_list((*best_path).fdw_private);
        // Conditions the index scan enforces exactly are not evaluated again on each
        // row (as a heap index scan has no Filter for its index conditions): in a
        // plain SELECT only. A query that locks rows or writes may recheck a row with
        // EvalPlanQual (PostgreSQL's quals are the recheck), and a locking scan
        // returns the newest version of a row it waited for, whose key may have moved.
        let (scan_clauses, dropped) = if path.exact.is_null() || !plain_select(root) {
            (scan_clauses, std::ptr::null_mut())
        } else {
            let (mut kept, mut dropped): (*mut pg_sys::List, *mut pg_sys::List) =
                (std::ptr::null_mut(), std::ptr::null_mut());
            for i in 0..crate::pglist::len(scan_clauses) {
                let ri = crate::pglist::nth(scan_clauses, i);
                if pg_sys::list_member_ptr(path.exact, ri) {
                    dropped = pg_sys::lappend(dropped, ri);
                } else {
                    kept = pg_sys::lappend(kept, ri);
                }
            }
            (kept, pg_sys::extract_actual_clauses(dropped, false))
        };
        let quals = pg_sys::extract_actual_clauses(scan_clauses, false);
        // SELECT ... FOR UPDATE/SHARE: rows are locked as they are fetched.
        let mut lock = LockPolicy::None;
        let mut mode = LockMode::KeyShare;
        for rm in pgrx::PgList::<pg_sys::PlanRowMark>::from_pg((*root).rowMarks).iter_ptr() {
            if (*rm).rti == (*baserel).relid
                && (*rm).strength != pg_sys::LockClauseStrength::LCS_NONE
            {
                mode = mode.max(plan_private::lock_mode_from_strength((*rm).strength));
                lock = match (*rm).waitPolicy {
                    pg_sys::LockWaitPolicy::LockWaitSkip => LockPolicy::Skip,
                    pg_sys::LockWaitPolicy::LockWaitError => LockPolicy::NoWait,
                    _ => LockPolicy::Wait,
                };
            }
        }
        // A full scan checks the quals it can on each row where it lies (see
        // `row_filters`); their values follow the index's in fdw_exprs.
        let mut exprs = path.exprs;
        let mut filter: *mut pg_sys::List = std::ptr::null_mut();
        if path.choice.is_null() && crate::shmem::preloaded() {
            if let Some(table) = xact::table_view(relid) {
                let types: Vec<_> = table.def.columns.iter().map(|c| c.ty).collect();
                // (scan_clauses are RestrictInfos, with their security levels.)
                let clauses: Vec<*mut pg_sys::RestrictInfo> = (0..crate::pglist::len(scan_clauses))
                    .map(|i| crate::pglist::nth(scan_clauses, i) as *mut pg_sys::RestrictInfo)
                    .filter(|r| {
                        (**r).type_ == pg_sys::NodeTag::T_RestrictInfo && !(**r).pseudoconstant
                    })
                    .collect();
                (filter, _) =
                    crate::row_filters::plan(root, baserel, relid, &types, &clauses, &mut exprs);
            }
        }
        // The dropped conditions follow the index's values in fdw_exprs (where setrefs
        // and nestloop parameters prepare them as the plan's own expressions), for
        // the scan to check should it have to read the whole table instead.
        let dropped_at = if dropped.is_null() {
            -1
        } else {
            let at = crate::pglist::len(exprs);
            // (A new list: the path's own stays as it was.)
            exprs = pg_sys::list_concat_copy(exprs, dropped);
            at
        };
        let private = ScanPrivate {
            // (The dropped conditions' columns too: they may be checked here.)
            needed: needed_columns(baserel, pg_sys::list_concat_copy(quals, dropped)),
            choice: path.choice,
            lock,
            mode,
            filter,
            dropped_at,
            direct: std::ptr::null_mut(),
            serial: Default::default(),
        };
        pg_sys::make_foreignscan(
            tlist,
            quals,
            (*baserel).relid,
            exprs,
            private.to_list(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            outer_plan,
        )
    }
}

/// The conditions of `fdw_exprs[at..]` (left out of the plan's quals for the index to
/// enforce), compiled in the query's memory for the scan to check on each row of a
/// full scan.
///
/// # Safety
/// `node` is the running scan; `at` is within its plan's `fdw_exprs`.
unsafe fn compile_dropped(node: *mut pg_sys::ForeignScanState, at: i32) -> *mut pg_sys::ExprState {
    // SAFETY: forwarded contract; executor structures of the running query.
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let mut old = PgMemoryContexts::For((*(*node).ss.ps.state).es_query_cxt).set_as_current();
        let mut conds: *mut pg_sys::List = std::ptr::null_mut();
        for i in at..crate::pglist::len((*plan).fdw_exprs) {
            conds = pg_sys::lappend(conds, crate::pglist::nth((*plan).fdw_exprs, i));
        }
        let q = pg_sys::ExecInitQual(conds, node as *mut pg_sys::PlanState);
        old.set_as_current();
        q
    }
}

/// Is the query being planned, and every query it is part of, a SELECT that locks no
/// rows (no EvalPlanQual can recheck its rows)?
///
/// # Safety
/// `root` is the planner's state of the running planning.
unsafe fn plain_select(mut root: *mut pg_sys::PlannerInfo) -> bool {
    // SAFETY: planner structures; parent roots outlive their subqueries' planning.
    unsafe {
        while !root.is_null() {
            let parse = (*root).parse;
            if parse.is_null()
                || (*parse).commandType != pg_sys::CmdType::CMD_SELECT
                || !(*root).rowMarks.is_null()
                || !(*parse).rowMarks.is_null()
            {
                return false;
            }
            root = (*root).parent_root;
        }
        true
    }
}

/// The executor states of the first `n` expressions of `exprs` (a plan's `fdw_exprs`),
/// under `parent`.
///
/// # Safety
/// `exprs` is a list of at least `n` expression nodes; `parent` is the scan's state
/// node, in the executor's memory context.
pub(crate) unsafe fn init_exprs(
    exprs: *mut pg_sys::List,
    n: i32,
    parent: *mut pg_sys::PlanState,
) -> Vec<*mut pg_sys::ExprState> {
    (0..n)
        // SAFETY: forwarded contract.
        .map(|i| unsafe { pg_sys::ExecInitExpr(crate::pglist::nth(exprs, i).cast(), parent) })
        .collect()
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
        for attno in crate::pglist::attnos(attrs) {
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
        if crate::aggregates::is_aggregate(node) {
            return crate::aggregates::begin(node);
        }
        let rel = (*node).ss.ss_currentRelation;
        let relid = (*rel).rd_id;
        // A parallel worker has no engine transaction: it reads the committed table
        // at the leader's snapshot (see `parallel_scan`).
        let in_worker = pg_sys::ParallelWorkerNumber >= 0;
        let table = if in_worker {
            xact::table_view(relid)
        } else {
            xact::table(relid)
        };
        let Some(table) = table else {
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
        let decoded = crate::scan_plans::of(plan, &table);
        let (lock, mode) = if for_update {
            (
                LockPolicy::Wait,
                write_lock_mode(estate, rel, scanrelid, &table),
            )
        } else {
            (decoded.lock, decoded.mode)
        };
        let ncols = table.def.columns.len();
        // (A worker sees the leader's uncommitted catalog but the committed table:
        // one that differs is one the leader changed, which its scan reports.)
        if (*(*rel).rd_att).natts as usize != ncols && !in_worker {
            // Only a change the rewrite did not see (a bug) gets here: refuse to read
            // rows with the wrong layout.
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!(
                    "memory table \"{}\" does not match its catalog definition ({} columns in the engine, {} in the catalog)",
                    crate::types::relation_name(relid),
                    ncols,
                    (*(*rel).rd_att).natts
                )
            );
        }
        let index = decoded.choice.as_ref().map(|_| IndexState {
            exprs: init_exprs(
                (*plan).fdw_exprs,
                decoded.index_exprs,
                node as *mut pg_sys::PlanState,
            ),
            ranges: None,
            current: 0,
        });
        let filter_exprs = init_exprs(
            (*plan).fdw_exprs,
            decoded.filter_exprs,
            node as *mut pg_sys::PlanState,
        );
        let state = ScanState {
            relid: relid.to_u32(),
            all_columns: false,
            table,
            cursor: ScanCursor::new(),
            batch: RowBatch::new(),
            cid: (*(*estate).es_snapshot).curcid,
            snapshot: if in_worker {
                None
            } else {
                crate::snapshots::statement_snapshot((*estate).es_snapshot)
            },
            for_update,
            batch_rows: crate::settings::SCAN_BATCH_ROWS.get().max(1) as usize,
            examined: 0,
            index,
            lock,
            mode,
            reread: Vec::new(),
            starts: 1,
            shared: None,
            shared_cursor: memfdw_engine::SharedCursor::new(),
            in_worker,
            qual: (*node).ss.ps.qual,
            last_tid: Tid::NONE,
            direct: None,
            filter_ready: decoded.filter_conds.is_empty(),
            filter_removed: 0,
            filter_exprs,
            dropped_at: decoded.dropped_at,
            plan: decoded,
            dropped_qual: std::ptr::null_mut(),
        };
        (*node).fdw_state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state)
            as *mut std::ffi::c_void;
        // `tableoid` of the rows, for the quals evaluated here before PostgreSQL sets
        // it on a row returned (clearing the slot keeps it).
        (*(*node).ss.ss_ScanTupleSlot).tts_tableOid = relid;
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
        if crate::aggregates::is_aggregate(node) {
            return crate::aggregates::iterate(node);
        }
        let slot = (*node).ss.ss_ScanTupleSlot;
        let st = (*node).fdw_state as *mut ScanState;
        if st.is_null() {
            return pg_sys::ExecClearTuple(slot);
        }
        let ScanState {
            relid,
            table,
            plan,
            all_columns,
            cursor,
            batch,
            cid,
            snapshot,
            for_update,
            batch_rows,
            examined,
            index,
            lock,
            mode,
            reread,
            starts: _,
            shared,
            shared_cursor,
            in_worker,
            qual,
            last_tid,
            direct,
            filter_exprs,
            filter_ready,
            filter_removed: _,
            dropped_at,
            dropped_qual,
        } = &mut *st;
        let econtext = (*node).ss.ps.ps_ExprContext;
        if !*filter_ready {
            // The filter for this scan's values (parameters change at rescans).
            let f = std::sync::Arc::new(crate::row_filters::build(
                &plan.filter_conds,
                filter_exprs,
                &plan.filter_types,
                &plan.col_types,
                econtext,
            ));
            *cursor = ScanCursor::filtered(f.clone());
            *shared_cursor = memfdw_engine::SharedCursor::filtered(f);
            *filter_ready = true;
        }
        let codecs = &plan.codecs[..];
        let needed = (!*all_columns).then_some(&plan.needed[..]);
        loop {
            if let Some(r) = batch.next() {
                let (rowid, mut tid) = (r.rowid, r.tid);
                types::unpack(codecs, needed, &table.layout, r.data, slot);
                types::rowid_to_ctid(rowid, &mut (*slot).tts_tid);
                types::store_virtual(slot);
                // A full scan in place of the plan's index: the conditions the plan
                // left to the index are checked here.
                if !dropped_qual.is_null() && !qual_passes(node, *dropped_qual, slot) {
                    count_filtered(node);
                    continue;
                }
                if *lock != LockPolicy::None && tid != Tid::NONE {
                    // Rows the statement will not touch are not locked.
                    if !qual_passes(node, *qual, slot) {
                        count_filtered(node);
                        continue;
                    }
                    let Some((locked_tid, fresh)) =
                        lock_row_waiting(table, *relid, rowid, *lock, *mode)
                    else {
                        continue;
                    };
                    if locked_tid != tid {
                        let newest = xact::with_txn(|t| t.get_newest(table, rowid, *cid, reread));
                        // FOR KEY SHARE of a row whose keys no update changed since it was
                        // read: PostgreSQL locks that version and its successors, and
                        // returns it without a recheck or a serialization failure.
                        let keys_kept = *mode == LockMode::KeyShare
                            && newest.is_some()
                            && table.unique_keys_equal(r.data, reread);
                        if !keys_kept {
                            if xact::snapshot_isolation() {
                                // Changed since the snapshot: PostgreSQL's "concurrent
                                // update".
                                errors::raise(memfdw_engine::Error::Conflict(
                                    memfdw_engine::AbortReason::WriteConflict,
                                ));
                            }
                            // Changed while we waited: go on with the newest version if
                            // it still qualifies (PostgreSQL's EvalPlanQual under READ
                            // COMMITTED).
                            let Some(t2) = newest else {
                                if fresh {
                                    xact::with_txn(|t| t.unlock_row(table, rowid));
                                }
                                continue;
                            };
                            types::unpack(codecs, needed, &table.layout, reread, slot);
                            types::rowid_to_ctid(rowid, &mut (*slot).tts_tid);
                            types::store_virtual(slot);
                            if !qual_passes(node, *qual, slot) {
                                count_filtered(node);
                                if fresh {
                                    xact::with_txn(|t| t.unlock_row(table, rowid));
                                }
                                continue;
                            }
                            tid = t2;
                        }
                    }
                } else if direct.is_some() && !qual_passes(node, *qual, slot) {
                    // (PostgreSQL does not evaluate a direct modification's quals.)
                    count_filtered(node);
                    continue;
                }
                if direct.is_some() {
                    *last_tid = tid;
                } else if *for_update {
                    xact::note_fetched(*relid, rowid, tid);
                }
                if index.is_none() {
                    *examined += 1;
                }
                return types::store_virtual(slot);
            }
            pgrx::check_for_interrupts!();
            if let (Some(ix), Some(choice)) = (index.as_mut(), plan.choice.as_ref()) {
                if ix.ranges.is_none() {
                    ix.ranges = Some(build_ranges(
                        choice,
                        &ix.exprs,
                        &plan.index_types,
                        plan.key_types.as_deref(),
                        econtext,
                    ));
                    ix.current = 0;
                }
                let ranges = ix.ranges.as_mut().expect("built");
                while ix.current < ranges.len() && ranges[ix.current].done() {
                    ix.current += 1;
                }
                let Some(range) = ranges.get_mut(ix.current) else {
                    return pg_sys::ExecClearTuple(slot);
                };
                let r = xact::with_txn(|t| {
                    t.set_read_snapshot(*snapshot);
                    t.index_scan(table, range, *cid, batch, *batch_rows)
                });
                // Index entries visited (rows returned, for full scans).
                *examined += std::mem::take(&mut range.examined);
                match r {
                    Ok(()) => {}
                    // Dropped since the plan was made (its transaction aborted, so no
                    // invalidation reached this plan): every qual is checked anyway.
                    Err(Error::NoSuchIndex { .. }) if !choice.ordered => {
                        *index = None;
                        *cursor = ScanCursor::new();
                        if *dropped_at >= 0 && dropped_qual.is_null() {
                            *dropped_qual = compile_dropped(node, *dropped_at);
                        }
                    }
                    Err(e) => errors::raise(e),
                }
                continue;
            }
            // SAFETY: the query's dynamic shared memory outlives its scans.
            match shared.map(|p| &*p) {
                Some(sh) if *in_worker && sh.leader_only() => {
                    crate::parallel_scan::leader_only(*relid)
                }
                Some(sh) if !sh.leader_only() => {
                    if shared_cursor.done() {
                        return pg_sys::ExecClearTuple(slot);
                    }
                    if !engine().shared_scan(table, sh, shared_cursor, batch, *batch_rows) {
                        crate::parallel_scan::table_mismatch(*relid);
                    }
                    continue;
                }
                None if *in_worker => crate::parallel_scan::not_shared(*relid),
                _ => {}
            }
            if cursor.done() {
                return pg_sys::ExecClearTuple(slot);
            }
            if let Err(e) = xact::with_txn(|t| {
                t.set_read_snapshot(*snapshot);
                t.scan(table, cursor, *cid, batch, *batch_rows)
            }) {
                errors::raise(e);
            }
        }
    }
}

/// The row-lock mode of an UPDATE or DELETE, as PostgreSQL's: a DELETE, and an
/// UPDATE that assigns a column of a unique index, lock FOR UPDATE; other UPDATEs FOR
/// NO KEY UPDATE, so they do not wait for (or block) FOR KEY SHARE. (PostgreSQL
/// compares the old and new values of the key columns; memfdw looks at which columns
/// the statement assigns, so `SET k = k` takes the stronger lock, and so does every
/// UPDATE of a table whose BEFORE UPDATE row triggers or stored generated columns may
/// change a key behind the statement's back.)
///
/// # Safety
/// Executor structures of the running statement; `rel` is the scanned relation and
/// `scanrelid` its range table entry.
unsafe fn write_lock_mode(
    estate: *mut pg_sys::EState,
    rel: pg_sys::Relation,
    scanrelid: i32,
    table: &TableHandle,
) -> LockMode {
    // SAFETY: forwarded contract.
    unsafe {
        if (*(*estate).es_plannedstmt).commandType != pg_sys::CmdType::CMD_UPDATE {
            return LockMode::Update;
        }
        let triggers = (*rel).trigdesc;
        let constr = (*(*rel).rd_att).constr;
        if (!triggers.is_null() && (*triggers).trig_update_before_row)
            || (!constr.is_null() && (*constr).has_generated_stored)
        {
            return LockMode::Update;
        }
        let rte = crate::pglist::nth((*estate).es_range_table, scanrelid - 1)
            as *mut pg_sys::RangeTblEntry;
        let assigned = (*rte).updatedCols;
        let key_assigned = table.any_unique_key_column(|c| {
            pg_sys::bms_is_member(
                c as i32 + 1 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                assigned,
            )
        });
        if key_assigned {
            LockMode::Update
        } else {
            LockMode::NoKeyUpdate
        }
    }
}

/// Does the tuple in `slot` pass the scan's quals `qual` (null: there are none)?
///
/// # Safety
/// Executor structures of the running scan; `qual` compiled for it.
unsafe fn qual_passes(
    node: *mut pg_sys::ForeignScanState,
    qual: *mut pg_sys::ExprState,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    // SAFETY: forwarded contract.
    unsafe {
        if qual.is_null() {
            return true;
        }
        let econtext = (*node).ss.ps.ps_ExprContext;
        (*econtext).ecxt_scantuple = slot;
        let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
        let (d, isnull) = eval_expr(qual, econtext);
        pg_sys::MemoryContextSwitchTo(old);
        !isnull && d.value() != 0
    }
}

/// Counts a row the scan's own qual check removed, for EXPLAIN ANALYZE's "Rows
/// Removed by Filter" (PostgreSQL's InstrCountFiltered1).
///
/// # Safety
/// Executor structures of the running scan.
unsafe fn count_filtered(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: forwarded contract; the instrumentation is the node's, or null.
    unsafe {
        if let Some(i) = (*node).ss.ps.instrument.as_mut() {
            i.nfiltered1 += 1.0;
        }
    }
}

/// Evaluates the compiled expression `e` in `econtext` (PostgreSQL's inline
/// `ExecEvalExpr`): its value and whether it is NULL. An error it raises unwinds
/// through the Rust frames of the caller like any error of a `pg_sys` call.
///
/// # Safety
/// `e` compiled for the running plan; `econtext` set up for it.
pub(crate) unsafe fn eval_expr(
    e: *mut pg_sys::ExprState,
    econtext: *mut pg_sys::ExprContext,
) -> (pg_sys::Datum, bool) {
    // SAFETY: forwarded contract; the boundary catches PostgreSQL's longjmp and turns
    // it into a Rust unwind, so no Rust frame is jumped over.
    unsafe {
        let f = (*e).evalfunc.expect("compiled expression");
        let mut isnull = false;
        let d = pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| f(e, econtext, &mut isnull));
        (d, isnull)
    }
}

/// Locks row `rowid` in `mode` for the current statement, waiting for its holders
/// like PostgreSQL waits for a heap row lock: first in the row's queue (PostgreSQL's
/// tuple lock, see [`RowQueue`]), then in PostgreSQL's lock manager on the holder's
/// holder lock (see `xact::wait_for_holder`), so lock_timeout (55P03),
/// statement_timeout and cancel (57014) end the wait and PostgreSQL's deadlock
/// detector sees it (40P01). Returns the row's newest version and whether this call
/// took the lock; None if the row is gone (or locked and the policy is SKIP LOCKED).
fn lock_row_waiting(
    table: &TableHandle,
    relid: u32,
    rowid: RowId,
    policy: LockPolicy,
    mode: LockMode,
) -> Option<(Tid, bool)> {
    use memfdw_engine::RowLock;
    let sub = xact::current_stmt(false).sub;
    // Before the row lock: a waiter that sees the row lock finds this one held.
    xact::ensure_holder_lock();
    let mut queue = RowQueue::new(relid, rowid, mode);
    let mut spins = 0u32;
    // Time waited in the engine for the row itself (see below).
    let mut engine_waited = std::time::Duration::ZERO;
    loop {
        let got = xact::with_txn(|t| t.lock_row(table, rowid, sub, mode)).or_raise();
        if spins > 0 || engine_waited > std::time::Duration::ZERO {
            // It waited: what it found (the row free, changed or gone) may be a commit
            // that is not durable yet.
            xact::depend_on_waited();
        }
        match got {
            RowLock::Locked { tid, fresh } => {
                queue.leave();
                return Some((tid, fresh));
            }
            RowLock::Gone => {
                queue.leave();
                if xact::snapshot_isolation() {
                    // Deleted since the snapshot: PostgreSQL's "concurrent delete".
                    errors::raise(memfdw_engine::Error::Conflict(
                        memfdw_engine::AbortReason::RowDeleted,
                    ));
                }
                return None;
            }
            RowLock::Busy { holder, holding } => {
                let nowait = policy != LockPolicy::Wait;
                // One that holds a lock on the row already does not queue (as in
                // PostgreSQL): those queued may be waiting for its lock.
                if !nowait && (holding || queue.join(false)) {
                    // First in line: wait in the engine for the row itself, briefly. A
                    // holder that commits releases it at its install, before its log
                    // sync and the rest of PostgreSQL's commit (which releases the
                    // holder lock waited for below); so a hot row passes from one
                    // committer to the next at memory speed. A holder that keeps the
                    // row longer is waited for on its holder lock: PostgreSQL's
                    // deadlock detection, lock_timeout and pg_locks see that wait.
                    let budget = fast_wait_budget();
                    if engine_waited < budget {
                        let slice = (budget - engine_waited).min(FAST_WAIT_SLICE);
                        let started = std::time::Instant::now();
                        xact::with_txn(|t| {
                            t.wait_row(table, rowid, holder, slice);
                            t.stop_waiting();
                        });
                        engine_waited += started.elapsed();
                        pgrx::check_for_interrupts!();
                        continue;
                    }
                }
                if !(holding || queue.join(nowait)) || !xact::wait_for_holder(holder, nowait) {
                    queue.leave();
                    if policy == LockPolicy::Skip {
                        return None;
                    }
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                        format!(
                            "could not obtain lock on row in relation \"{}\"",
                            types::relation_name(pg_sys::Oid::from(relid))
                        )
                    );
                }
                // The holder's lock was free: its row lock is gone, unless the row
                // was locked again meanwhile (by another holder, or by the same one
                // still in a transaction that holds its lock at another level).
                pgrx::check_for_interrupts!();
                spins += 1;
                if spins > 3 {
                    xact::with_txn(|t| {
                        t.wait_row(table, rowid, holder, std::time::Duration::from_millis(1));
                        t.stop_waiting();
                    });
                }
            }
        }
    }
}

/// How long a row-lock waiter waits in the engine for the row before it waits on the
/// holder's lock (see `lock_row_waiting`), in slices of [`FAST_WAIT_SLICE`]: a hot row
/// then passes without a trip through the lock manager.
const FAST_WAIT: std::time::Duration = std::time::Duration::from_millis(5);
const FAST_WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// [`FAST_WAIT`], or none under a `lock_timeout`: the wait on the holder's lock then
/// honours it exactly (the holder releases that lock at its install too).
fn fast_wait_budget() -> std::time::Duration {
    // SAFETY: reading a GUC variable.
    if unsafe { pg_sys::LockTimeout } > 0 {
        std::time::Duration::ZERO
    } else {
        FAST_WAIT
    }
}

/// The queue of transactions waiting for one row: PostgreSQL's tuple lock
/// (`LOCKTAG_TUPLE` on the row's ctid, in the heavyweight mode PostgreSQL uses for the
/// row-lock mode), taken only by a transaction that has to wait and held until it has
/// the row. Waiters thus get the row in the order they came (PostgreSQL's lock
/// manager queues them), and pg_locks shows them as it does for heap rows.
struct RowQueue {
    tag: pg_sys::LOCKTAG,
    lockmode: pg_sys::LOCKMODE,
    held: bool,
}

impl RowQueue {
    fn new(relid: u32, rowid: RowId, mode: LockMode) -> RowQueue {
        let mut ctid = pg_sys::ItemPointerData::default();
        types::rowid_to_ctid(rowid, &mut ctid);
        let block = ((ctid.ip_blkid.bi_hi as u32) << 16) | ctid.ip_blkid.bi_lo as u32;
        // PostgreSQL's tupleLockExtraInfo: the heavyweight modes conflict as the row
        // modes do.
        let lockmode = match mode {
            LockMode::KeyShare => pg_sys::AccessShareLock,
            LockMode::Share => pg_sys::RowShareLock,
            LockMode::NoKeyUpdate => pg_sys::ExclusiveLock,
            LockMode::Update => pg_sys::AccessExclusiveLock,
        } as pg_sys::LOCKMODE;
        RowQueue {
            tag: pg_sys::LOCKTAG {
                // SAFETY: reading this backend's database id.
                locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
                locktag_field2: relid,
                locktag_field3: block,
                locktag_field4: ctid.ip_posid,
                locktag_type: pg_sys::LockTagType::LOCKTAG_TUPLE as u8,
                locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
            },
            lockmode,
            held: false,
        }
    }

    /// Takes a place in the queue (once); false if `nowait` and it is taken.
    fn join(&mut self, nowait: bool) -> bool {
        if !self.held {
            // SAFETY: a lock-manager call; errors (deadlock, timeouts, cancel) are
            // raised by PostgreSQL, and the lock then goes with the (sub)transaction.
            let r = unsafe { pg_sys::LockAcquire(&self.tag, self.lockmode, false, nowait) };
            if r == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
                return false;
            }
            self.held = true;
        }
        true
    }

    fn leave(&mut self) {
        if self.held {
            // SAFETY: a lock this backend holds (taken by `join`).
            unsafe { pg_sys::LockRelease(&self.tag, self.lockmode, false) };
            self.held = false;
        }
    }
}

/// Evaluates the comparison values and builds the key ranges of an index scan: one per
/// combination of the equality prefix (several with an IN list), none if a value makes
/// the condition false for every row (a NULL comparison value).
///
/// # Safety
/// Executor structures of the running scan.
unsafe fn build_ranges(
    choice: &IndexChoice,
    exprs: &[*mut pg_sys::ExprState],
    types: &[pg_sys::Oid],
    key_types: Option<&[memfdw_engine::ColumnType]>,
    econtext: *mut pg_sys::ExprContext,
) -> Vec<IndexScan> {
    // SAFETY: forwarded contract.
    unsafe {
        let Some(key_types) = key_types else {
            // Dropped: the iterator reports it.
            return vec![IndexScan::new(choice.index_id, &[], None, choice.reverse)];
        };
        let mut old =
            pgrx::PgMemoryContexts::For((*econtext).ecxt_per_tuple_memory).set_as_current();
        let mut scratch = [0u8; 16];
        let ty_of = |col: usize| key_types[col];
        let mut encode = |col: usize, d: pg_sys::Datum| -> Vec<u8> {
            let ty = ty_of(col);
            let b = types::datum_bytes(Codec::of(ty), d, &mut scratch);
            let mut out = Vec::new();
            keys::encode_value(ty, Some(b), &mut out).unwrap_or_else(|e| errors::raise(e));
            out
        };
        // The value and its base type (of its elements, for IN).
        let eval_raw = |i: i32| -> Option<(pg_sys::Datum, pg_sys::Oid)> {
            let (d, isnull) = eval_expr(exprs[i as usize], econtext);
            (!isnull).then(|| (d, types[i as usize]))
        };
        // The value, converted to the key column's type (see `cross_type`).
        let eval = |i: i32, col: usize| -> Option<Conv> {
            eval_raw(i).map(|(d, ty)| cross_type::to_column(ty_of(col), ty, d))
        };
        let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
        let (mut lo, mut hi): (KeyBound, KeyBound) = (None, None);
        let mut ranged = false;
        let mut empty = false;
        for c in &choice.conds {
            match c.kind {
                CondKind::Eq => match eval(c.expr, c.col) {
                    Some(Conv::Exact(d)) => {
                        let v = encode(c.col, d);
                        prefixes.iter_mut().for_each(|p| p.extend_from_slice(&v));
                    }
                    Some(Conv::Between(..)) => {
                        // The planner takes such values for ranges only.
                        ereport!(
                            ERROR,
                            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                            "memfdw: an equality index condition needs an exact key"
                        );
                    }
                    // NULL, or no value of the column's type equals it.
                    _ => empty = true,
                },
                CondKind::IsNull => {
                    prefixes.iter_mut().for_each(|p| p.push(keys::NULL_MARK));
                }
                CondKind::In => match eval_raw(c.expr) {
                    Some((arr, elem)) => {
                        // Elements no column value equals match nothing.
                        let mut vals: Vec<Vec<u8>> = array_elements(arr)
                            .into_iter()
                            .filter_map(|d| match cross_type::to_column(ty_of(c.col), elem, d) {
                                Conv::Exact(x) => Some(encode(c.col, x)),
                                _ => None,
                            })
                            .collect();
                        vals.sort();
                        vals.dedup();
                        prefixes = prefixes
                            .iter()
                            .flat_map(|p| {
                                vals.iter().map(move |v| {
                                    let mut x = p.clone();
                                    x.extend_from_slice(v);
                                    x
                                })
                            })
                            .collect();
                    }
                    None => empty = true,
                },
                CondKind::Gt | CondKind::Ge => {
                    ranged = true;
                    match eval(c.expr, c.col) {
                        Some(Conv::Exact(d)) => {
                            lo = Some((encode(c.col, d), c.kind == CondKind::Ge))
                        }
                        Some(Conv::Rounded(d)) | Some(Conv::Between(d, _)) => {
                            lo = Some((encode(c.col, d), true))
                        }
                        Some(Conv::BelowAll) => {}
                        Some(Conv::AboveAll) | None => empty = true,
                    }
                }
                CondKind::Lt | CondKind::Le => {
                    ranged = true;
                    match eval(c.expr, c.col) {
                        Some(Conv::Exact(d)) => {
                            hi = Some((encode(c.col, d), c.kind == CondKind::Le))
                        }
                        Some(Conv::Rounded(d)) | Some(Conv::Between(_, d)) => {
                            hi = Some((encode(c.col, d), true))
                        }
                        Some(Conv::AboveAll) => {}
                        Some(Conv::BelowAll) | None => empty = true,
                    }
                }
                CondKind::NotNull => ranged = true,
                CondKind::Like | CondKind::Regex | CondKind::ILike | CondKind::IRegex => {
                    ranged = true;
                    match eval_raw(c.expr) {
                        Some((d, _)) => {
                            let prefix =
                                crate::index_paths::pattern_prefix(c.kind, d).unwrap_or_default();
                            if !prefix.is_empty() {
                                let ty = ty_of(c.col);
                                let mut key = Vec::new();
                                keys::encode_value(ty, Some(&prefix), &mut key).or_raise();
                                lo = Some((key, true));
                                // Past every string that starts with the prefix.
                                let mut succ = prefix;
                                while succ.last() == Some(&0xFF) {
                                    succ.pop();
                                }
                                hi = match succ.last_mut() {
                                    // char(n) keys drop trailing blanks: a successor
                                    // ending in one would lose a byte; no upper bound.
                                    Some(b)
                                        if *b == b' ' - 1
                                            && matches!(ty, memfdw_engine::ColumnType::Char(_)) =>
                                    {
                                        None
                                    }
                                    Some(b) => {
                                        *b += 1;
                                        let mut key = Vec::new();
                                        keys::encode_value(ty, Some(&succ), &mut key).or_raise();
                                        Some((key, false))
                                    }
                                    None => None,
                                };
                            }
                        }
                        None => empty = true,
                    }
                }
            }
        }
        old.set_as_current();
        if empty {
            return Vec::new();
        }
        if choice.reverse {
            prefixes.reverse();
        }
        prefixes
            .iter()
            .map(|p| {
                let range = ranged.then(|| (lo.clone(), hi.clone()));
                let mut s = IndexScan::new(choice.index_id, p, range, choice.reverse);
                s.unique_point = choice.point;
                s
            })
            .collect()
    }
}

/// The non-NULL elements of array datum `arr`.
///
/// # Safety
/// `arr` must be an array datum.
pub(crate) unsafe fn array_elements(arr: pg_sys::Datum) -> Vec<pg_sys::Datum> {
    // SAFETY: forwarded contract.
    unsafe {
        let a = pg_sys::pg_detoast_datum(arr.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let elem = (*a).elemtype;
        let (mut len, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
        pg_sys::get_typlenbyvalalign(elem, &mut len, &mut byval, &mut align);
        let mut values: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        pg_sys::deconstruct_array(
            a,
            elem,
            len as i32,
            byval,
            align,
            &mut values,
            &mut nulls,
            &mut n,
        );
        (0..n as usize)
            .filter(|&i| !*nulls.add(i))
            .map(|i| *values.add(i))
            .collect()
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn rescan_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours.
    unsafe {
        if crate::aggregates::is_aggregate(node) {
            return crate::aggregates::rescan(node);
        }
        let st = (*node).fdw_state as *mut ScanState;
        if let Some(st) = st.as_mut() {
            st.starts += 1;
            st.filter_removed += st.cursor.removed() + st.shared_cursor.removed();
            st.cursor = ScanCursor::new();
            // The shared blocks are made claimable again by ReInitializeDSMForeignScan.
            st.shared_cursor = memfdw_engine::SharedCursor::new();
            // Parameters may have changed: the filter is built again.
            st.filter_ready = st.plan.filter_conds.is_empty();
            st.batch = RowBatch::new();
            if let Some(ix) = st.index.as_mut() {
                // Parameters may have changed: evaluate the values again.
                ix.ranges = None;
            }
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_scan(node: *mut pg_sys::ForeignScanState) {
    // The state is dropped with the executor's memory context; its counts go to the
    // table's access counters (once per scan, not per row).
    // SAFETY: fdw_state is ours (null for EXPLAIN without ANALYZE).
    unsafe {
        if crate::aggregates::is_aggregate(node) {
            return crate::aggregates::end(node);
        }
        if let Some(st) = ((*node).fdw_state as *mut ScanState).as_ref() {
            if st.shared.is_some() && !st.in_worker {
                // The workers have finished: what they read was installed after its
                // log record was written (durable reads).
                xact::with_existing_txn(|t| t.note_shared_reads());
            }
            use std::sync::atomic::Ordering::Relaxed;
            let a = &st.table.access;
            if st.index.is_some() {
                a.idx_scan.fetch_add(st.starts, Relaxed);
                a.idx_tup_fetch.fetch_add(st.examined, Relaxed);
            } else {
                a.seq_scan.fetch_add(st.starts, Relaxed);
                a.seq_tup_read.fetch_add(st.examined, Relaxed);
            }
        }
    }
}

/// The index's conditions as EXPLAIN shows an index scan's `Index Cond`, built from the
/// plan's index choice and its comparison values (`fdw_exprs`, which setrefs keeps
/// valid wherever the scan sits in the plan), e.g. `((grp = 7) AND (val >= 10))`.
///
/// # Safety
/// Executor and explain structures of the scan being explained.
unsafe fn index_cond_text(
    plan: *mut pg_sys::ForeignScan,
    es: *mut pg_sys::ExplainState,
    relid: pg_sys::Oid,
    choice: &IndexChoice,
) -> String {
    // SAFETY: forwarded contract.
    unsafe {
        let def = engine()
            .table(crate::handler::table_id(relid))
            .and_then(|t| t.index_defs().into_iter().find(|d| d.id == choice.index_id));
        let context = pg_sys::set_deparse_context_plan(
            (*es).deparse_cxt,
            plan as *mut pg_sys::Plan,
            std::ptr::null_mut(),
        );
        let useprefix = (*es).verbose;
        let value = |i: i32| -> String {
            let e = crate::pglist::nth((*plan).fdw_exprs, i) as *mut pg_sys::Node;
            let s = pg_sys::deparse_expression(e, context, useprefix, false);
            std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned()
        };
        let parts: Vec<String> = choice
            .conds
            .iter()
            .map(|c| {
                let col = def.as_ref().and_then(|d| d.columns.get(c.col)).map_or_else(
                    || format!("key column {}", c.col + 1),
                    |&p| types::column_name(relid, p),
                );
                let col = types::quote_ident(&col);
                match c.kind {
                    CondKind::Eq => format!("({col} = {})", value(c.expr)),
                    CondKind::Lt => format!("({col} < {})", value(c.expr)),
                    CondKind::Le => format!("({col} <= {})", value(c.expr)),
                    CondKind::Gt => format!("({col} > {})", value(c.expr)),
                    CondKind::Ge => format!("({col} >= {})", value(c.expr)),
                    CondKind::In => format!("({col} = ANY ({}))", value(c.expr)),
                    CondKind::IsNull => format!("({col} IS NULL)"),
                    CondKind::NotNull => format!("({col} IS NOT NULL)"),
                    CondKind::Like => format!("({col} ~~ {})", value(c.expr)),
                    CondKind::Regex => format!("({col} ~ {})", value(c.expr)),
                    CondKind::ILike => format!("({col} ~~* {})", value(c.expr)),
                    CondKind::IRegex => format!("({col} ~* {})", value(c.expr)),
                }
            })
            .collect();
        if parts.len() == 1 {
            parts.into_iter().next().expect("one")
        } else {
            format!("({})", parts.join(" AND "))
        }
    }
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
        if crate::aggregates::is_aggregate(node) {
            return crate::aggregates::explain(node, es);
        }
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let relid = (*(*node).ss.ss_currentRelation).rd_id;
        let choice = IndexChoice::from_list(ScanPrivate::from_list((*plan).fdw_private).choice);
        let access = match &choice {
            None => "full scan (row id order)".to_string(),
            Some(c) => {
                let name = engine()
                    .table(crate::handler::table_id(relid))
                    .and_then(|t| t.index_defs().into_iter().find(|d| d.id == c.index_id))
                    .map_or_else(|| format!("index {}", c.index_id), |d| d.name);
                let order = match (c.ordered, c.reverse) {
                    (true, false) => ", ordered",
                    (true, true) => ", ordered backward",
                    _ => "",
                };
                format!("index scan using {name} ({}{order})", c.kind_name())
            }
        };
        let access = std::ffi::CString::new(access).expect("no NUL");
        pg_sys::ExplainPropertyText(c"Memory Table Access".as_ptr(), access.as_ptr(), es);
        if let Some(c) = choice.as_ref().filter(|c| !c.conds.is_empty()) {
            let text = CString::new(index_cond_text(plan, es, relid, c)).expect("no NUL");
            pg_sys::ExplainPropertyText(c"Index Cond".as_ptr(), text.as_ptr(), es);
        }
        let filter =
            crate::row_filters::conds_from_list(ScanPrivate::from_list((*plan).fdw_private).filter);
        if !filter.is_empty() {
            let text = crate::row_filters::explain_text(plan, es, relid, &filter);
            let text = CString::new(text).expect("no NUL");
            pg_sys::ExplainPropertyText(c"Memory Filter".as_ptr(), text.as_ptr(), es);
        }
        let st = (*node).fdw_state as *mut ScanState;
        if (*es).analyze {
            if let Some(st) = st.as_ref() {
                // A shared scan's workers count their rows in their own processes.
                let label = if st.shared.is_some() {
                    c"Rows Examined by Leader"
                } else {
                    c"Rows Examined"
                };
                pg_sys::ExplainPropertyInteger(
                    label.as_ptr(),
                    std::ptr::null(),
                    st.examined as i64,
                    es,
                );
                if !st.plan.filter_conds.is_empty() {
                    // (Workers count theirs in their own processes.)
                    let label = if st.shared.is_some() {
                        c"Rows Removed by Memory Filter in Leader"
                    } else {
                        c"Rows Removed by Memory Filter"
                    };
                    pg_sys::ExplainPropertyInteger(
                        label.as_ptr(),
                        std::ptr::null(),
                        (st.filter_removed + st.cursor.removed() + st.shared_cursor.removed())
                            as i64,
                        es,
                    );
                }
            }
        }
    }
}
