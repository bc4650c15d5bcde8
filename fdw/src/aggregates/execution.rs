//! Executing an aggregate computed in memory: one pass over the table (on several
//! threads past 100,000 rows), then a row per group (see the parent module).

use super::accumulators::{Acc, AggKind};
use super::groups::{key_values, Groups};
use crate::errors::{self, OrRaise};
use crate::plan_private::AggPrivate;
use crate::types::{self, Codec};
use crate::xact;
use memfdw_engine::{IntForm, RowBatch, ScanCursor, TableHandle, Tid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::ffi::CString;

/// The state of an aggregate scan.
pub struct AggScanState {
    table: TableHandle,
    /// The aggregates, zeroed.
    accs: Vec<Acc>,
    /// GROUP BY columns: (column index, codec); their places in the scan tuple follow
    /// the aggregates'.
    groups: Vec<(usize, Codec)>,
    /// The last pass's groups, and the next one to return.
    result: Option<Groups>,
    next: usize,
    /// Per qual column that is not a grouping column: (its place in the scan tuple,
    /// column index, codec).
    qual_cols: Vec<(usize, usize, Codec)>,
    qual: *mut pg_sys::ExprState,
    /// The row filter's conditions, and its values' expressions and base types
    /// (indexed as `fdw_exprs`; see `row_filters`).
    filter_conds: Vec<crate::index_paths::Cond>,
    filter_exprs: Vec<*mut pg_sys::ExprState>,
    filter_types: Vec<pg_sys::Oid>,
    /// Rows the filter rejected.
    removed: u64,
    cid: u32,
    snapshot: Option<Tid>,
    starts: u64,
    examined: u64,
    /// Threads and rounds of the last pass (1 and 0 on one thread).
    threads: usize,
    rounds: u64,
}

/// True if `node` is an aggregate scan (the grouped relation's, `scanrelid = 0`).
///
/// # Safety
/// `node` is a ForeignScanState of a memfdw plan.
pub unsafe fn is_aggregate(node: *mut pg_sys::ForeignScanState) -> bool {
    // SAFETY: forwarded contract.
    unsafe {
        (*((*node).ss.ps.plan as *mut pg_sys::ForeignScan))
            .scan
            .scanrelid
            == 0
    }
}

/// The range table index of the relation an aggregate scan reads.
///
/// # Safety
/// `node` is an aggregate scan's state, initialised by the executor.
unsafe fn scanned_rti(node: *mut pg_sys::ForeignScanState) -> pg_sys::Index {
    // SAFETY: forwarded contract: its plan names exactly one base relation.
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        pg_sys::bms_next_member((*plan).fs_relids, -1) as pg_sys::Index
    }
}

/// The relation an aggregate scan reads.
///
/// # Safety
/// As [`scanned_rti`].
unsafe fn scanned_relation(node: *mut pg_sys::ForeignScanState) -> pg_sys::Oid {
    // SAFETY: forwarded contract.
    unsafe { (*pg_sys::exec_rt_fetch(scanned_rti(node), (*node).ss.ps.state)).relid }
}

/// `BeginForeignScan` of an aggregate scan.
///
/// # Safety
/// Called from `BeginForeignScan` for an aggregate scan.
pub unsafe fn begin(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: executor structures handed to us by PostgreSQL.
    unsafe {
        if pg_sys::ParallelWorkerNumber >= 0 {
            // Never planned so (the path is not parallel safe).
            errors::internal("a memory-table aggregate ran in a parallel worker".into());
        }
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let estate = (*node).ss.ps.state;
        // (Opened and locked by the executor already.)
        let rel = pg_sys::ExecGetRangeTableRelation(estate, scanned_rti(node));
        let relid = (*rel).rd_id;
        let Some(table) = xact::table(relid) else {
            errors::missing_table(relid)
        };
        let private = AggPrivate::from_plan_list((*plan).fdw_private);
        let ncols = table.def.columns.len();
        let natts = (*(*rel).rd_att).natts;
        if natts as usize != ncols {
            // As a scan: never read rows with the wrong layout.
            errors::internal(format!(
                "memory table \"{}\" does not match its catalog definition ({} columns in the engine, {} in the catalog)",
                types::relation_name(relid),
                ncols,
                natts
            ));
        }
        let type_of = |col: usize| table.def.columns.get(col).map(|c| c.ty);
        let accs = private
            .specs
            .iter()
            .map(|&spec| {
                let form = match spec.kind {
                    AggKind::CountStar | AggKind::Count => None,
                    _ => spec.col.and_then(type_of).and_then(IntForm::of),
                };
                let usable = match spec.kind {
                    AggKind::CountStar => true,
                    AggKind::Count => spec.col.is_some_and(|c| c < ncols),
                    _ => form.is_some(),
                };
                if !usable {
                    // Plans are invalidated when the table changes: a bug.
                    errors::internal(format!(
                        "memory table \"{}\" does not match the aggregate's plan",
                        types::relation_name(relid)
                    ));
                }
                Acc {
                    spec,
                    form,
                    n: 0,
                    sum: 0,
                    best: 0,
                }
            })
            .collect();
        let naggs = private.specs.len();
        let column = |attno: usize| {
            let ty = type_of(attno.wrapping_sub(1)).unwrap_or_else(|| {
                errors::internal("a memory-table aggregate's column is gone".into())
            });
            (attno - 1, Codec::of(ty))
        };
        let groups: Vec<(usize, Codec)> = (0..crate::pglist::len(private.groups))
            .map(|i| column(crate::pglist::nth_int(private.groups, i) as usize))
            .collect();
        let ngroups = groups.len();
        let qual_cols = (0..crate::pglist::len(private.qual_cols))
            .map(|i| {
                let (col, codec) = column(crate::pglist::nth_int(private.qual_cols, i) as usize);
                (naggs + ngroups + i as usize, col, codec)
            })
            .collect();
        // fdw_exprs: the filter's values, then the quals PostgreSQL evaluates.
        let nvalues = private.nvalues;
        let filter_exprs =
            crate::scan::init_exprs((*plan).fdw_exprs, nvalues, node as *mut pg_sys::PlanState);
        let filter_types = crate::row_filters::expr_types((*plan).fdw_exprs, nvalues);
        let mut quals: *mut pg_sys::List = std::ptr::null_mut();
        for i in nvalues..crate::pglist::len((*plan).fdw_exprs) {
            quals = pg_sys::lappend(quals, crate::pglist::nth((*plan).fdw_exprs, i));
        }
        let qual = if quals.is_null() {
            std::ptr::null_mut()
        } else {
            pg_sys::ExecInitQual(quals, node as *mut pg_sys::PlanState)
        };
        let state = AggScanState {
            accs,
            groups,
            result: None,
            next: 0,
            qual_cols,
            qual,
            filter_conds: crate::row_filters::conds_from_list(private.filter),
            filter_exprs,
            filter_types,
            removed: 0,
            cid: (*(*estate).es_snapshot).curcid,
            snapshot: crate::snapshots::statement_snapshot((*estate).es_snapshot),
            table,
            threads: 1,
            rounds: 0,
            starts: 1,
            examined: 0,
        };
        (*node).fdw_state = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state)
            as *mut std::ffi::c_void;
    }
}

/// Rows read from the engine at a time, between checks for cancellation.
const VISIT_ROWS: usize = 16 * 1024;

/// `IterateForeignScan` of an aggregate scan: the aggregates' row, once.
///
/// # Safety
/// Called from `IterateForeignScan` for an aggregate scan.
pub unsafe fn iterate(node: *mut pg_sys::ForeignScanState) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: executor structures handed to us by PostgreSQL; fdw_state is ours.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        let Some(st) = ((*node).fdw_state as *mut AggScanState).as_mut() else {
            return pg_sys::ExecClearTuple(slot);
        };
        if st.result.is_none() {
            compute(node, st);
            st.next = 0;
        }
        let econtext = (*node).ss.ps.ps_ExprContext;
        let groups = st.result.as_ref().expect("computed");
        let Some((key, accs)) = groups.states.get(st.next) else {
            return pg_sys::ExecClearTuple(slot);
        };
        st.next += 1;
        // The row: the aggregates, the group's columns, then NULL qual columns;
        // values allocated for this row only (the context is reset before the next).
        let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
        types::clear_slot(slot);
        let n = (*(*slot).tts_tupleDescriptor).natts as usize;
        let values = std::slice::from_raw_parts_mut((*slot).tts_values, n);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, n);
        nulls.iter_mut().for_each(|x| *x = true);
        for (i, a) in accs.iter().enumerate() {
            if let Some(d) = a.result() {
                values[i] = d;
                nulls[i] = false;
            }
        }
        let naggs = accs.len();
        for (i, v) in key_values(key).into_iter().enumerate() {
            if let Some(b) = v {
                values[naggs + i] = types::datum(st.groups[i].1, b);
                nulls[naggs + i] = false;
            }
        }
        pg_sys::MemoryContextSwitchTo(old);
        types::store_virtual(slot)
    }
}

/// One pass over the table: the aggregates of every group (of the whole table without
/// GROUP BY) into `st.result`.
///
/// # Safety
/// `node` is the aggregate scan whose state is `st`.
unsafe fn compute(node: *mut pg_sys::ForeignScanState, st: &mut AggScanState) {
    // SAFETY: executor structures of the running scan.
    unsafe {
        let mut groups = Groups::new(
            st.groups
                .iter()
                .map(|g| (g.0, matches!(g.1, Codec::Blank(_))))
                .collect(),
            st.accs.clone(),
        );
        // Four times a hash aggregate's memory: estimates are estimates.
        groups.limit = pg_sys::get_hash_memory_limit().saturating_mul(4);
        let filter = (!st.filter_conds.is_empty()).then(|| {
            let types: Vec<_> = st.table.def.columns.iter().map(|c| c.ty).collect();
            std::sync::Arc::new(crate::row_filters::build(
                &st.filter_conds,
                &st.filter_exprs,
                &st.filter_types,
                &types,
                (*node).ss.ps.ps_ExprContext,
            ))
        });
        let mut cursor = match &filter {
            Some(f) => ScanCursor::filtered(f.clone()),
            None => ScanCursor::new(),
        };
        (st.threads, st.rounds) = (1, 0);
        if st.qual.is_null() && !cursor.done() && parallel_pass(st, filter.as_ref(), &mut groups) {
            // Done on every core.
        } else if st.qual.is_null() {
            let AggScanState {
                table,
                cid,
                snapshot,
                examined,
                ..
            } = st;
            let layout = &table.layout;
            while !cursor.done() {
                pgrx::check_for_interrupts!();
                xact::with_txn(|t| {
                    t.set_read_snapshot(*snapshot);
                    t.scan_visit(table, &mut cursor, *cid, VISIT_ROWS, |row| {
                        *examined += 1;
                        groups.add(layout, row);
                    })
                })
                .or_raise();
            }
        } else {
            filtered_pass(node, st, &mut cursor, &mut groups);
        }
        st.removed += cursor.removed();
        if groups.overflow {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "too many groups for an aggregate computed in memory (more than {} before the limit of 4 x work_mem x hash_mem_multiplier)",
                    groups.states.len()
                ),
                "memfdw",
            )
            .set_detail("The planner estimated fewer groups.")
            .set_hint("ANALYZE the table, or SET memfdw.enable_aggregate_pushdown = off for this query.")
            .report(PgLogLevel::ERROR);
            unreachable!("an ERROR does not return");
        }
        st.result = Some(groups);
    }
}

/// Tables with fewer live rows than this are aggregated on one thread.
const PARALLEL_MIN_ROWS: i64 = 100_000;
/// Rounds a parallel pass makes at least (between them, cancels are seen), and the
/// fewest row ids a round covers.
const PARALLEL_ROUNDS: u64 = 16;
const PARALLEL_MIN_ROUND: u64 = 1 << 16;

/// The pass on several cores (the engine's helper threads, see
/// `memfdw_engine::threads`): as many as `max_parallel_workers_per_gather` allows
/// PostgreSQL's own parallel plans, plus this one. Each thread aggregates a part of
/// each round of row ids into groups of its own (each part under the whole limit),
/// merged at the end. Returns false, having changed nothing, when the table is small,
/// one thread is allowed, or the transaction sees the table otherwise than as
/// committed (its own writes): the caller then makes the pass on its thread.
///
/// # Safety
/// Called by `compute` for a scan without PostgreSQL-evaluated quals.
unsafe fn parallel_pass(
    st: &mut AggScanState,
    filter: Option<&std::sync::Arc<memfdw_engine::RowFilter>>,
    groups: &mut Groups,
) -> bool {
    let live = crate::shmem::engine()
        .table_stats(st.table.id)
        .map_or(0, |s| s.rows);
    // SAFETY: a GUC variable, read on the backend's thread.
    let allowed = unsafe { pg_sys::max_parallel_workers_per_gather }.max(0) as usize + 1;
    if live < PARALLEL_MIN_ROWS || allowed < 2 {
        return false;
    }
    let threads = memfdw_engine::helper_threads().min(allowed);
    if threads < 2 {
        return false;
    }
    let end = st.table.peek_next_rowid().0;
    let round = (end / PARALLEL_ROUNDS).max(PARALLEL_MIN_ROUND);
    let AggScanState {
        table, snapshot, ..
    } = st;
    let layout = &table.layout;
    let mut parts: Vec<Groups> = (0..threads)
        .map(|_| {
            let mut g = Groups::new(groups.cols.clone(), groups.template.clone());
            g.limit = groups.limit;
            g
        })
        .collect();
    let (mut removed, mut visited, mut rounds) = (0, 0, 0);
    let mut from = 0;
    while from < end {
        pgrx::check_for_interrupts!();
        let to = (from + round).min(end);
        let done = xact::with_txn(|t| {
            t.set_read_snapshot(*snapshot);
            t.scan_visit_parallel(
                table,
                filter,
                from,
                to,
                &mut parts,
                |g: &mut Groups, row| g.add(layout, row),
            )
        })
        .or_raise();
        let Some((r, v)) = done else {
            // (Known at the first round: the transaction's view does not change
            // within the statement.)
            return false;
        };
        removed += r;
        visited += v;
        rounds += 1;
        if let Some(i) = parts.iter().position(|p| p.overflow) {
            // A part's groups are groups of the table: one thread would fail too.
            *groups = parts.swap_remove(i);
            return true;
        }
        from = to;
    }
    let mut parts = parts.into_iter();
    *groups = parts.next().expect("two parts or more");
    for p in parts {
        groups.merge(p);
    }
    st.removed += removed;
    st.examined += visited;
    st.threads = threads;
    st.rounds = rounds;
    true
}

/// Adds the rows that pass the quals: they are copied out in batches, and each one's
/// qual columns are put in the scan tuple for PostgreSQL to evaluate the quals on.
///
/// # Safety
/// `node` is the aggregate scan whose state is `st`.
unsafe fn filtered_pass(
    node: *mut pg_sys::ForeignScanState,
    st: &mut AggScanState,
    cursor: &mut ScanCursor,
    result: &mut Groups,
) {
    // SAFETY: executor structures of the running scan.
    unsafe {
        let slot = (*node).ss.ss_ScanTupleSlot;
        let econtext = (*node).ss.ps.ps_ExprContext;
        let n = (*(*slot).tts_tupleDescriptor).natts as usize;
        let mut batch = RowBatch::new();
        let batch_rows = crate::settings::SCAN_BATCH_ROWS.get().max(1) as usize;
        let AggScanState {
            table,
            accs,
            groups,
            qual_cols,
            qual,
            cid,
            snapshot,
            examined,
            ..
        } = st;
        // The quals read grouping columns from their places after the aggregates.
        let naggs = accs.len();
        let row_cols: Vec<(usize, usize, Codec)> = groups
            .iter()
            .enumerate()
            .map(|(i, &(col, codec))| (naggs + i, col, codec))
            .chain(qual_cols.iter().copied())
            .collect();
        let layout = &table.layout;
        while !cursor.done() {
            pgrx::check_for_interrupts!();
            xact::with_txn(|t| {
                t.set_read_snapshot(*snapshot);
                t.scan(table, cursor, *cid, &mut batch, batch_rows)
            })
            .or_raise();
            while let Some(r) = batch.next() {
                *examined += 1;
                pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
                let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
                types::clear_slot(slot);
                let values = std::slice::from_raw_parts_mut((*slot).tts_values, n);
                let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, n);
                nulls.iter_mut().for_each(|x| *x = true);
                for &(pos, col, codec) in row_cols.iter() {
                    if let Some(b) = layout.get(r.data, col) {
                        values[pos] = types::datum(codec, b);
                        nulls[pos] = false;
                    }
                }
                types::store_virtual(slot);
                (*econtext).ecxt_scantuple = slot;
                let pass = pg_sys::ExecQual(*qual, econtext);
                pg_sys::MemoryContextSwitchTo(old);
                if pass {
                    result.add(layout, r.data);
                }
            }
        }
        pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
    }
}

/// `ReScanForeignScan` of an aggregate scan (its quals' parameters may have changed).
///
/// # Safety
/// Called from `ReScanForeignScan` for an aggregate scan.
pub unsafe fn rescan(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours.
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut AggScanState).as_mut() {
            st.result = None;
            st.starts += 1;
        }
    }
}

/// `EndForeignScan` of an aggregate scan: its reads count as sequential scans of the
/// table.
///
/// # Safety
/// Called from `EndForeignScan` for an aggregate scan.
pub unsafe fn end(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours (null for EXPLAIN without ANALYZE).
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut AggScanState).as_ref() {
            use std::sync::atomic::Ordering::Relaxed;
            let a = &st.table.access;
            a.seq_scan.fetch_add(st.starts, Relaxed);
            a.seq_tup_read.fetch_add(st.examined, Relaxed);
        }
    }
}

/// `ExplainForeignScan` of an aggregate scan.
///
/// # Safety
/// Called from `ExplainForeignScan` for an aggregate scan.
pub unsafe fn explain(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    // SAFETY: executor and explain structures handed to us by PostgreSQL.
    unsafe {
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let relid = scanned_relation(node);
        let rel = CString::new(format!(
            "Aggregate on {}",
            types::quote_ident(&types::relation_name(relid))
        ))
        .expect("no NUL");
        pg_sys::ExplainPropertyText(c"Relations".as_ptr(), rel.as_ptr(), es);
        pg_sys::ExplainPropertyText(
            c"Memory Table Access".as_ptr(),
            c"full scan (row id order), aggregated in memory".as_ptr(),
            es,
        );
        let private = AggPrivate::from_plan_list((*plan).fdw_private);
        if !private.groups.is_null() {
            let names: Vec<String> = (0..crate::pglist::len(private.groups))
                .map(|i| {
                    let attno = crate::pglist::nth_int(private.groups, i);
                    types::quote_ident(&types::column_name(relid, (attno - 1) as u16))
                })
                .collect();
            let text = CString::new(names.join(", ")).expect("no NUL");
            pg_sys::ExplainPropertyText(c"Group Key".as_ptr(), text.as_ptr(), es);
        }
        let filter = crate::row_filters::conds_from_list(private.filter);
        if !filter.is_empty() {
            let text = crate::row_filters::explain_text(plan, es, relid, &filter);
            let text = CString::new(text).expect("no NUL");
            pg_sys::ExplainPropertyText(c"Memory Filter".as_ptr(), text.as_ptr(), es);
        }
        let mut quals: *mut pg_sys::List = std::ptr::null_mut();
        for i in private.nvalues..crate::pglist::len((*plan).fdw_exprs) {
            quals = pg_sys::lappend(quals, crate::pglist::nth((*plan).fdw_exprs, i));
        }
        if !quals.is_null() {
            let context = pg_sys::set_deparse_context_plan(
                (*es).deparse_cxt,
                plan as *mut pg_sys::Plan,
                std::ptr::null_mut(),
            );
            let quals = pg_sys::make_ands_explicit(quals);
            let s = pg_sys::deparse_expression(quals as _, context, (*es).verbose, false);
            pg_sys::ExplainPropertyText(c"Filter".as_ptr(), s, es);
        }
        if (*es).analyze {
            if let Some(st) = ((*node).fdw_state as *mut AggScanState).as_ref() {
                pg_sys::ExplainPropertyInteger(
                    c"Rows Examined".as_ptr(),
                    std::ptr::null(),
                    st.examined as i64,
                    es,
                );
                pg_sys::ExplainPropertyInteger(
                    c"Threads".as_ptr(),
                    std::ptr::null(),
                    st.threads as i64,
                    es,
                );
                if !st.filter_conds.is_empty() {
                    pg_sys::ExplainPropertyInteger(
                        c"Rows Removed by Memory Filter".as_ptr(),
                        std::ptr::null(),
                        st.removed as i64,
                        es,
                    );
                }
            }
        }
    }
}
