//! INSERT, UPDATE, DELETE and COPY FROM on memory tables.
//!
//! UPDATE and DELETE identify rows by `ctid`, which carries the engine row id. The scan
//! that fed the statement remembered the version of every row it returned, and the
//! engine refuses to overwrite a row that changed since (40001).

use crate::errors::{self, OrRaise};
use crate::types::{self, Packer};
use crate::xact;
use memfdw_engine::{RowId, Tid};
use memfdw_engine::{TableHandle, WriteOutcome};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

pub struct ModifyState {
    relid: u32,
    table: TableHandle,
    packer: Packer,
    ctid_attno: pg_sys::AttrNumber,
    /// Buffer for the old row of DELETE ... RETURNING.
    old: Vec<u8>,
    /// INSERT ... ON CONFLICT DO NOTHING: a row whose unique key is taken is skipped
    /// (after waiting for a transaction inserting the same key, as PostgreSQL does).
    skip_conflicts: bool,
    /// Rows inserted, updated and deleted, added to the table's access counters at the
    /// end of the statement.
    counts: [u64; 3],
    /// The statement inserted rows belong to, taken at the first one (see
    /// [`insert_stmt`]).
    insert_stmt: Option<memfdw_engine::Stmt>,
}

impl ModifyState {
    fn flush_counts(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let a = &self.table.access;
        let [ins, upd, del] = std::mem::take(&mut self.counts);
        a.n_tup_ins.fetch_add(ins, Relaxed);
        a.n_tup_upd.fetch_add(upd, Relaxed);
        a.n_tup_del.fetch_add(del, Relaxed);
        a.changed_since_analyze.fetch_add(ins + upd + del, Relaxed);
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn add_foreign_update_targets(
    root: *mut pg_sys::PlannerInfo,
    rtindex: pg_sys::Index,
    _target_rte: *mut pg_sys::RangeTblEntry,
    _target_relation: pg_sys::Relation,
) {
    // SAFETY: planner structures handed to us by PostgreSQL.
    unsafe {
        let var = pg_sys::makeVar(
            rtindex as _,
            pg_sys::SelfItemPointerAttributeNumber as pg_sys::AttrNumber,
            pg_sys::TIDOID,
            -1,
            pg_sys::InvalidOid,
            0,
        );
        pg_sys::add_row_identity_var(root, var, rtindex, c"ctid".as_ptr());
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn plan_foreign_modify(
    _root: *mut pg_sys::PlannerInfo,
    _plan: *mut pg_sys::ModifyTable,
    _result_relation: pg_sys::Index,
    _subplan_index: std::ffi::c_int,
) -> *mut pg_sys::List {
    std::ptr::null_mut()
}

/// # Safety
/// `rinfo` must be a valid result relation info; called from Begin callbacks.
unsafe fn init_state(
    rinfo: *mut pg_sys::ResultRelInfo,
    ctid_attno: pg_sys::AttrNumber,
    skip_conflicts: bool,
) {
    // SAFETY: forwarded contract.
    unsafe {
        let relid = (*(*rinfo).ri_RelationDesc).rd_id;
        let Some(table) = xact::table(relid) else {
            errors::missing_table(relid)
        };
        crate::error_fields::writing((*rinfo).ri_RelationDesc);
        let state = ModifyState {
            relid: relid.to_u32(),
            packer: Packer::new(&table.def),
            table,
            ctid_attno,
            old: Vec::new(),
            skip_conflicts,
            counts: [0; 3],
            insert_stmt: None,
        };
        (*rinfo).ri_FdwState = PgMemoryContexts::CurrentMemoryContext.leak_and_drop_on_delete(state)
            as *mut std::ffi::c_void;
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_modify(
    mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
    _fdw_private: *mut pg_sys::List,
    _subplan_index: std::ffi::c_int,
    eflags: std::ffi::c_int,
) {
    if eflags as u32 & pg_sys::EXEC_FLAG_EXPLAIN_ONLY != 0 {
        return;
    }
    // SAFETY: executor structures handed to us by PostgreSQL.
    unsafe {
        let op = (*mtstate).operation;
        let mut ctid_attno = 0;
        if op == pg_sys::CmdType::CMD_UPDATE || op == pg_sys::CmdType::CMD_DELETE {
            let subplan = (*(*mtstate).ps.lefttree).plan;
            ctid_attno =
                pg_sys::ExecFindJunkAttributeInTlist((*subplan).targetlist, c"ctid".as_ptr());
            if ctid_attno <= 0 {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "memfdw: could not find junk ctid column"
                );
            }
        }
        let plan = (*mtstate).ps.plan as *mut pg_sys::ModifyTable;
        let skip = op == pg_sys::CmdType::CMD_INSERT
            && (*plan).onConflictAction == pg_sys::OnConflictAction::ONCONFLICT_NOTHING;
        init_state(rinfo, ctid_attno, skip);
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn begin_foreign_insert(
    _mtstate: *mut pg_sys::ModifyTableState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    // SAFETY: as in begin_foreign_modify.
    unsafe { init_state(rinfo, 0, false) }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_modify(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    // The state is dropped with the executor's memory context.
    // SAFETY: our state, or null (EXPLAIN without ANALYZE).
    unsafe {
        if let Some(st) = ((*rinfo).ri_FdwState as *mut ModifyState).as_mut() {
            st.flush_counts();
        }
    }
    crate::error_fields::done();
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn end_foreign_insert(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
) {
    // SAFETY: our state, or null.
    unsafe {
        if let Some(st) = ((*rinfo).ri_FdwState as *mut ModifyState).as_mut() {
            st.flush_counts();
        }
    }
    crate::error_fields::done();
}

/// # Safety
/// `rinfo` must carry a `ModifyState` made by `init_state`.
unsafe fn state<'a>(rinfo: *mut pg_sys::ResultRelInfo) -> &'a mut ModifyState {
    // SAFETY: forwarded contract.
    unsafe { &mut *((*rinfo).ri_FdwState as *mut ModifyState) }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_insert(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    _plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: forwarded contract.
    let stmt = insert_stmt(unsafe { state(rinfo) });
    // SAFETY: forwarded contract.
    if unsafe { insert_one(estate, rinfo, slot, stmt) } {
        slot
    } else {
        std::ptr::null_mut()
    }
}

/// The statement an insert belongs to, with this transaction's holder lock taken:
/// others needing the same unique key wait for this transaction on it (see
/// `xact::ensure_holder_lock`). Taken at the statement's first row and kept in its
/// state: heap tables insert a whole statement's rows with one command id too
/// (`es_output_cid`; COPY takes one at its start), also when a trigger or a function
/// advances the command counter between rows, and the statement's rows are inserted
/// in its own subtransaction (a function's subtransactions end before it returns).
/// Asking PostgreSQL per row was four calls into it.
fn insert_stmt(st: &mut ModifyState) -> memfdw_engine::Stmt {
    *st.insert_stmt.get_or_insert_with(|| {
        let stmt = xact::current_stmt(true);
        xact::ensure_holder_lock();
        stmt
    })
}

/// Inserts the row in `slot` as part of `stmt` (from [`insert_stmt`]); false if ON
/// CONFLICT DO NOTHING skipped it.
///
/// # Safety
/// Executor structures of an INSERT or COPY into a memory table; `rinfo` carries our
/// state.
unsafe fn insert_one(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    stmt: memfdw_engine::Stmt,
) -> bool {
    // SAFETY: executor structures; our state.
    unsafe {
        check_constraints(estate, rinfo, slot);
        let st = state(rinfo);
        st.packer.pack(&st.table.layout, slot).or_raise();
        let r = waiting_for_keys(|| xact::with_txn(|t| t.insert(&st.table, &st.packer.out, stmt)));
        let rowid = match r {
            Err(memfdw_engine::Error::UniqueViolation { invisible, .. }) if st.skip_conflicts => {
                if invisible {
                    // PostgreSQL's ExecCheckTupleVisible: a conflicting row the
                    // snapshot cannot see is neither seen nor skipped.
                    errors::raise(memfdw_engine::Error::Conflict(
                        memfdw_engine::AbortReason::ConflictRowInvisible,
                    ));
                }
                return false;
            }
            r => r.or_raise(),
        };
        types::rowid_to_ctid(rowid, &mut (*slot).tts_tid);
        st.counts[0] += 1;
        true
    }
}

/// Rows PostgreSQL hands over at once to [`exec_foreign_batch_insert`] (INSERT ...
/// SELECT, multi-row VALUES): fewer calls through the executor and the FDW boundary.
const BATCH_ROWS: std::ffi::c_int = 100;

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn get_foreign_modify_batch_size(
    rinfo: *mut pg_sys::ResultRelInfo,
) -> std::ffi::c_int {
    // SAFETY: executor structures handed to us by PostgreSQL; our state or null.
    unsafe {
        // One row at a time where PostgreSQL needs each row back as it is inserted:
        // RETURNING, row triggers, WITH CHECK OPTIONs, or ON CONFLICT DO NOTHING (a
        // skipped row is reported per row).
        let trig = (*rinfo).ri_TrigDesc;
        let row_triggers =
            !trig.is_null() && ((*trig).trig_insert_before_row || (*trig).trig_insert_after_row);
        let skip = ((*rinfo).ri_FdwState as *mut ModifyState)
            .as_ref()
            .is_none_or(|st| st.skip_conflicts);
        if !(*rinfo).ri_projectReturning.is_null()
            || row_triggers
            || !(*rinfo).ri_WithCheckOptions.is_null()
            || skip
        {
            1
        } else {
            BATCH_ROWS
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_batch_insert(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slots: *mut *mut pg_sys::TupleTableSlot,
    _plan_slots: *mut *mut pg_sys::TupleTableSlot,
    num_slots: *mut std::ffi::c_int,
) -> *mut *mut pg_sys::TupleTableSlot {
    // SAFETY: PostgreSQL's array of `*num_slots` slots; our state.
    unsafe {
        let n = (*num_slots).max(0) as usize;
        let all = std::slice::from_raw_parts_mut(slots, n);
        // (Batching is off with ON CONFLICT DO NOTHING: every row is inserted or the
        // statement fails.)
        let mut kept = 0;
        let stmt = insert_stmt(state(rinfo));
        for i in 0..n {
            if insert_one(estate, rinfo, all[i], stmt) {
                all[kept] = all[i];
                kept += 1;
            }
        }
        *num_slots = kept as std::ffi::c_int;
        slots
    }
}

/// Checks the new row against the table's NOT NULL and CHECK constraints and, for a
/// partition, its partition constraint, as PostgreSQL's executor does for heap tables
/// (it leaves foreign tables to their wrapper): the same errors, 23502 and 23514 with
/// the constraint's name and the failing row. A row an UPDATE would move to another
/// partition is refused that way too (PostgreSQL moves rows out of heap partitions
/// only).
///
/// # Safety
/// Executor structures of the running INSERT, UPDATE or COPY.
pub(crate) unsafe fn check_constraints(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
) {
    // SAFETY: forwarded contract.
    unsafe {
        let rel = (*rinfo).ri_RelationDesc;
        if !(*(*rel).rd_att).constr.is_null() {
            pg_sys::ExecConstraints(rinfo, slot, estate);
        }
        if (*(*rel).rd_rel).relispartition {
            pg_sys::ExecPartitionCheck(rinfo, slot, estate, true);
        }
    }
}

/// Runs `write` again while it finds its unique key inserted by a transaction that has
/// not ended: waits for that transaction first (in PostgreSQL's lock manager, so
/// deadlocks, lock_timeout and cancel apply), as PostgreSQL waits for the inserting
/// transaction; then the key is taken (23505) or free.
pub(crate) fn waiting_for_keys<R>(
    mut write: impl FnMut() -> Result<R, memfdw_engine::Error>,
) -> Result<R, memfdw_engine::Error> {
    loop {
        match write() {
            Err(memfdw_engine::Error::KeyPending { holder }) => {
                xact::wait_for_holder(holder, false);
                // The key's fate (taken, or free again) may be a commit that is not
                // durable yet: this transaction's commit waits for it.
                xact::depend_on_waited();
                pgrx::check_for_interrupts!();
            }
            r => return r,
        }
    }
}

/// The row id in the plan slot's junk ctid, and the version the scan saw.
///
/// # Safety
/// `plan_slot` must be the ModifyTable's plan slot.
unsafe fn target(st: &ModifyState, plan_slot: *mut pg_sys::TupleTableSlot) -> (RowId, Tid) {
    // SAFETY: forwarded contract; ctid is a non-null tid datum.
    unsafe {
        let mut isnull = false;
        let d = pg_sys::ExecGetJunkAttribute(plan_slot, st.ctid_attno, &mut isnull);
        if isnull {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "memfdw: ctid is NULL"
            );
        }
        let rowid = types::ctid_to_rowid(&*(d.cast_mut_ptr::<pg_sys::ItemPointerData>()));
        let Some(tid) = xact::fetched_tid(st.relid, rowid) else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "memfdw: row to modify was not read by this statement"
            );
        };
        (rowid, tid)
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_update(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: executor structures; our state.
    unsafe {
        check_constraints(estate, rinfo, slot);
        let st = state(rinfo);
        let (rowid, tid) = target(st, plan_slot);
        st.packer.pack(&st.table.layout, slot).or_raise();
        let stmt = xact::current_stmt(true);
        xact::ensure_holder_lock();
        let r = waiting_for_keys(|| {
            xact::with_txn(|t| t.update(&st.table, rowid, tid, &st.packer.out, stmt))
        });
        match r.or_raise() {
            WriteOutcome::Done => {
                types::rowid_to_ctid(rowid, &mut (*slot).tts_tid);
                st.counts[1] += 1;
                slot
            }
            WriteOutcome::AlreadyModified | WriteOutcome::NotFound => std::ptr::null_mut(),
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_delete(
    _estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
) -> *mut pg_sys::TupleTableSlot {
    // SAFETY: executor structures; our state.
    unsafe {
        let st = state(rinfo);
        let (rowid, tid) = target(st, plan_slot);
        let stmt = xact::current_stmt(true);
        let wants_old = !(*rinfo).ri_projectReturning.is_null();
        let ModifyState {
            table,
            old,
            packer,
            counts,
            ..
        } = &mut *st;
        let had_old =
            wants_old && xact::with_txn(|t| t.get_newest(table, rowid, stmt.cid, old)).is_some();
        match xact::with_txn(|t| t.delete(table, rowid, tid, stmt)).or_raise() {
            WriteOutcome::Done => {
                counts[2] += 1;
                if had_old {
                    types::unpack(&packer.codecs, None, &table.layout, old, slot);
                    types::rowid_to_ctid(rowid, &mut (*slot).tts_tid);
                    pg_sys::ExecStoreVirtualTuple(slot);
                }
                slot
            }
            WriteOutcome::AlreadyModified | WriteOutcome::NotFound => std::ptr::null_mut(),
        }
    }
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn is_foreign_rel_updatable(
    _rel: pg_sys::Relation,
) -> std::ffi::c_int {
    (1 << pg_sys::CmdType::CMD_INSERT)
        | (1 << pg_sys::CmdType::CMD_UPDATE)
        | (1 << pg_sys::CmdType::CMD_DELETE)
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn exec_foreign_truncate(
    rels: *mut pg_sys::List,
    _behavior: pg_sys::DropBehavior::Type,
    _restart_seqs: bool,
) {
    // SAFETY: a list of open relations handed to us by PostgreSQL.
    unsafe {
        let stmt = xact::current_stmt(true);
        for rel in pgrx::PgList::<pg_sys::RelationData>::from_pg(rels).iter_ptr() {
            let relid = (*rel).rd_id;
            let Some(table) = xact::table(relid) else {
                errors::missing_table(relid)
            };
            // In constant engine memory: the transaction swaps in an empty table.
            xact::with_txn(|t| t.truncate(&table, stmt.sub)).or_raise();
        }
    }
}
