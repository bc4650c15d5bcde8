//! Direct UPDATE and DELETE: the scan that finds the rows writes them.
//!
//! PostgreSQL's usual path for `UPDATE m SET v = v + 1 WHERE id = $1` builds a
//! whole-row value of every row the scan returns, hands it to ModifyTable, which takes
//! it apart again, computes the new row and calls `ExecForeignUpdate` with the row's
//! ctid; memfdw then looks up the version its scan saw. When nothing has to run for
//! each row outside memfdw (PostgreSQL checks for row triggers, stored generated
//! columns and WITH CHECK OPTIONs before asking), the scan does it all instead: it
//! evaluates the quals, locks the row, computes the SET expressions over the row it
//! holds, checks the table's constraints and writes the new version, in one pass.
//!
//! Taken only when the scan is the ModifyTable's immediate child on the target
//! relation itself: not for joins (`UPDATE ... FROM`), inheritance and partitions
//! (ModifyTable routes rows between them), or SET expressions with subqueries. The
//! SET expressions move from the scan's target list to `fdw_exprs` (where setrefs
//! prepares them) and the target list reads the new values back from the row written,
//! so that RETURNING evaluates nothing twice. Row locks, waits, READ COMMITTED
//! rechecks and serialization failures are the scan's (see `scan`), as for the usual
//! path.

use crate::errors::OrRaise;
use crate::plan_private::{DirectPrivate, LockPolicy, ScanPrivate};
use crate::scan::{self, ScanState};
use crate::types::{self, Packer};
use crate::xact;
use memfdw_engine::WriteOutcome;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The state of a direct modification, beside its scan's (`ScanState::direct`).
pub struct DirectState {
    update: bool,
    /// Per assigned column: its position and its compiled SET expression.
    set: Vec<(usize, *mut pg_sys::ExprState)>,
    /// The new row of an UPDATE (a virtual slot of the table's row type).
    new_slot: *mut pg_sys::TupleTableSlot,
    packer: Packer,
    rinfo: *mut pg_sys::ResultRelInfo,
    returning: bool,
    set_tag: bool,
    /// Rows written (for `es_processed` without RETURNING, and the access counters).
    written: u64,
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn plan_direct_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    _subplan_index: std::ffi::c_int,
) -> bool {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let op = (*plan).operation;
        if op != pg_sys::CmdType::CMD_UPDATE && op != pg_sys::CmdType::CMD_DELETE {
            return false;
        }
        // Inheritance and partitions: ModifyTable checks and routes rows between the
        // tables (and their scans sit under an Append).
        if (*plan).rootRelation != 0 || (*(*root).parse).resultRelation as u32 != result_relation {
            return false;
        }
        let sub = (*plan).plan.lefttree;
        if sub.is_null() || (*sub).type_ != pg_sys::NodeTag::T_ForeignScan {
            return false;
        }
        let fscan = sub as *mut pg_sys::ForeignScan;
        if (*fscan).scan.scanrelid != result_relation
            || (*fscan).operation != pg_sys::CmdType::CMD_SELECT
        {
            return false;
        }
        let rte = *(*root).simple_rte_array.add(result_relation as usize);
        let relid = (*rte).relid;
        if pg_sys::get_rel_relispartition(relid) {
            return false;
        }
        let private = ScanPrivate::from_list((*fscan).fdw_private);
        // (A plan that left conditions to its index is a plain SELECT's, never a
        // modification's; the SET expressions could not follow them in fdw_exprs.)
        if private.lock != LockPolicy::None || private.dropped_at >= 0 {
            return false;
        }
        let tlist = (*fscan).scan.plan.targetlist;
        // A subquery in the target list (a MULTIEXPR `SET (a, b) = (SELECT ...)`, a
        // correlated one) runs in ModifyTable's projection, not here.
        if pg_sys::contain_subplans(tlist.cast()) {
            return false;
        }
        let first_expr = crate::pglist::len((*fscan).fdw_exprs);
        let mut colnos: *mut pg_sys::List = std::ptr::null_mut();
        if op == pg_sys::CmdType::CMD_UPDATE {
            let update_colnos = (*root).update_colnos;
            let n = crate::pglist::len(update_colnos);
            if crate::pglist::len(tlist) < n {
                return false;
            }
            // Check every assignment before changing anything.
            let mut moves = Vec::with_capacity(n as usize);
            for i in 0..n {
                let tle = crate::pglist::nth(tlist, i) as *mut pg_sys::TargetEntry;
                let attno = crate::pglist::nth_int(update_colnos, i) as pg_sys::AttrNumber;
                if (*tle).resjunk || attno <= 0 {
                    return false;
                }
                let (mut ty, mut typmod, mut coll) = (pg_sys::InvalidOid, -1, pg_sys::InvalidOid);
                pg_sys::get_atttypetypmodcoll(relid, attno, &mut ty, &mut typmod, &mut coll);
                let expr = (*tle).expr as *mut pg_sys::Node;
                if pg_sys::exprType(expr) != ty {
                    return false;
                }
                moves.push((tle, attno, ty, typmod, coll));
            }
            for (tle, attno, ty, typmod, coll) in moves {
                (*fscan).fdw_exprs = pg_sys::lappend((*fscan).fdw_exprs, (*tle).expr.cast());
                (*tle).expr =
                    pg_sys::makeVar(result_relation as _, attno, ty, typmod, coll, 0).cast();
                colnos = pg_sys::lappend_int(colnos, attno as i32);
            }
        }
        let direct = DirectPrivate {
            first_expr,
            set_tag: (*plan).canSetTag,
            returning: !(*plan).returningLists.is_null(),
            colnos,
        };
        let private = ScanPrivate {
            direct: direct.to_list(),
            ..private
        };
        (*fscan).fdw_private = private.to_list();
        (*fscan).operation = op;
        (*fscan).resultRelation = result_relation;
        true
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_direct_modify(
    node: *mut pg_sys::ForeignScanState,
    eflags: std::ffi::c_int,
) {
    // SAFETY: executor structures handed to us by PostgreSQL.
    unsafe {
        scan::begin_foreign_scan(node, eflags);
        let st = (*node).fdw_state as *mut ScanState;
        let Some(st) = st.as_mut() else {
            return; // EXPLAIN without ANALYZE
        };
        let plan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let private = DirectPrivate::from_list(ScanPrivate::from_list((*plan).fdw_private).direct);
        let rinfo = (*node).resultRelInfo;
        let rel = (*rinfo).ri_RelationDesc;
        crate::error_fields::writing(rel);
        let update = (*plan).operation == pg_sys::CmdType::CMD_UPDATE;
        let set = (0..crate::pglist::len(private.colnos))
            .map(|i| {
                let e = crate::pglist::nth((*plan).fdw_exprs, private.first_expr + i);
                let pos = crate::pglist::nth_int(private.colnos, i) as usize - 1;
                (pos, pg_sys::ExecInitExpr(e.cast(), node.cast()))
            })
            .collect();
        let new_slot = if update {
            let s = pg_sys::ExecInitExtraTupleSlot(
                (*node).ss.ps.state,
                (*rel).rd_att,
                &raw const pg_sys::TTSOpsVirtual,
            );
            // For CHECK constraints and RETURNING that read `tableoid`.
            (*s).tts_tableOid = (*rel).rd_id;
            s
        } else {
            std::ptr::null_mut()
        };
        let returning = private.returning;
        if update || returning {
            // Every column of the new row, or of the old row returned. (An UPDATE's
            // scan reads them all anyway, for the whole-row value PostgreSQL asks a
            // foreign table for.)
            st.need_all_columns();
        }
        // The scan evaluates the quals before it locks a row; PostgreSQL must not
        // evaluate them again on the rows returned for RETURNING (new versions).
        (*node).ss.ps.qual = std::ptr::null_mut();
        st.direct = Some(Box::new(DirectState {
            update,
            set,
            new_slot,
            packer: Packer::new(&st.table().def),
            rinfo,
            returning,
            set_tag: private.set_tag,
            written: 0,
        }));
    }
}

/// Writes the rows the scan finds; returns each row written for RETURNING, or
/// nothing after writing them all.
///
/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn iterate_direct_modify(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: executor structures handed to us by PostgreSQL; fdw_state is ours.
    unsafe {
        let st = (*node).fdw_state as *mut ScanState;
        let estate = (*node).ss.ps.state;
        let econtext = (*node).ss.ps.ps_ExprContext;
        loop {
            // Without RETURNING all rows are written in this one call: free each row's
            // values (and what the constraint checks allocated) before the next.
            pg_sys::MemoryContextReset((*econtext).ecxt_per_tuple_memory);
            let checks = (*estate).es_per_tuple_exprcontext;
            if !checks.is_null() {
                pg_sys::MemoryContextReset((*checks).ecxt_per_tuple_memory);
            }
            let slot = scan::iterate_foreign_scan(node);
            let st = &mut *st;
            // Out of the scan state while it is used beside the scan's table (put back
            // below; an error ends the statement and frees it).
            let mut d = st.direct.take().expect("set up by begin_direct_modify");
            if (*slot).tts_flags & pg_sys::TTS_FLAG_EMPTY as u16 != 0 {
                if !d.returning {
                    if d.set_tag {
                        (*estate).es_processed += d.written;
                    }
                    // EXPLAIN ANALYZE's row count: the rows written.
                    let instr = (*node).ss.ps.instrument;
                    if !instr.is_null() {
                        (*instr).tuplecount += d.written as f64;
                    }
                }
                st.direct = Some(d);
                return slot;
            }
            let rowid = types::ctid_to_rowid(&(*slot).tts_tid);
            let tid = st.last_tid;
            let table = st.table();
            let stmt = xact::current_stmt(true);
            let out = if d.update {
                let new = new_row(&mut d, econtext, slot);
                crate::modify::check_constraints(estate, d.rinfo, new);
                d.packer.pack(&table.layout, new).or_raise();
                xact::ensure_holder_lock();
                let packed = &d.packer.out;
                let r = crate::modify::waiting_for_keys(|| {
                    xact::with_txn(|t| t.update(table, rowid, tid, packed, stmt))
                });
                types::rowid_to_ctid(rowid, &mut (*new).tts_tid);
                (r.or_raise(), new)
            } else {
                (
                    xact::with_txn(|t| t.delete(table, rowid, tid, stmt)).or_raise(),
                    slot,
                )
            };
            let returning = d.returning;
            match out {
                (WriteOutcome::Done, row) => {
                    d.written += 1;
                    if returning {
                        (*row).tts_tableOid = (*(*d.rinfo).ri_RelationDesc).rd_id;
                        let proj = (*d.rinfo).ri_projectReturning;
                        (*(*proj).pi_exprContext).ecxt_scantuple = row;
                        if d.set_tag {
                            (*estate).es_processed += 1;
                        }
                    }
                    st.direct = Some(d);
                    if returning {
                        return row;
                    }
                }
                // Written already by this statement, or gone: skipped, as PostgreSQL
                // skips a row its own command updated.
                (WriteOutcome::AlreadyModified | WriteOutcome::NotFound, _) => {
                    st.direct = Some(d);
                }
            }
        }
    }
}

/// The new version of the row in `old`: its values, with the SET expressions'
/// (evaluated over `old`) in the assigned columns.
///
/// # Safety
/// Executor structures of the running direct UPDATE; `old` holds a row of the table.
unsafe fn new_row(
    d: &mut DirectState,
    econtext: *mut pg_sys::ExprContext,
    old: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: forwarded contract; both slots have the table's row type.
    unsafe {
        let new = d.new_slot;
        types::clear_slot(new);
        let n = (*(*new).tts_tupleDescriptor).natts as usize;
        std::ptr::copy_nonoverlapping((*old).tts_values, (*new).tts_values, n);
        std::ptr::copy_nonoverlapping((*old).tts_isnull, (*new).tts_isnull, n);
        (*econtext).ecxt_scantuple = old;
        for &(pos, e) in &d.set {
            let (v, isnull) = scan::eval_expr(e, econtext);
            *(*new).tts_values.add(pos) = v;
            *(*new).tts_isnull.add(pos) = isnull;
        }
        types::store_virtual(new)
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_direct_modify(node: *mut pg_sys::ForeignScanState) {
    // SAFETY: fdw_state is ours (null for EXPLAIN without ANALYZE).
    unsafe {
        if let Some(st) = ((*node).fdw_state as *mut ScanState).as_mut() {
            if let Some(d) = st.direct.as_ref() {
                use std::sync::atomic::Ordering::Relaxed;
                let a = &st.table().access;
                let n = d.written;
                a.changed_since_analyze.fetch_add(n, Relaxed);
                if d.update {
                    a.n_tup_upd.fetch_add(n, Relaxed);
                } else {
                    a.n_tup_del.fetch_add(n, Relaxed);
                }
            }
        }
        scan::end_foreign_scan(node);
    }
    crate::error_fields::done();
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn explain_direct_modify(
    node: *mut pg_sys::ForeignScanState,
    es: *mut pg_sys::ExplainState,
) {
    // SAFETY: forwarded contract.
    unsafe { scan::explain_foreign_scan(node, es) }
}
