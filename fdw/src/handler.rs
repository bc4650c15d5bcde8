//! The FDW handler and validator, and the SQL that creates the wrapper and the
//! ready-to-use server `memfdw`.

use crate::{direct_modify, modify, scan};
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_extern]
fn memfdw_handler() -> PgBox<pg_sys::FdwRoutine> {
    // SAFETY: a palloc0'd FdwRoutine node filled with our callbacks.
    unsafe {
        let mut r = PgBox::<pg_sys::FdwRoutine>::alloc_node(pg_sys::NodeTag::T_FdwRoutine);
        r.GetForeignRelSize = Some(scan::get_foreign_rel_size);
        r.GetForeignPaths = Some(scan::get_foreign_paths);
        r.GetForeignPlan = Some(scan::get_foreign_plan);
        r.BeginForeignScan = Some(scan::begin_foreign_scan);
        r.IterateForeignScan = Some(scan::iterate_foreign_scan);
        r.ReScanForeignScan = Some(scan::rescan_foreign_scan);
        r.EndForeignScan = Some(scan::end_foreign_scan);
        r.ExplainForeignScan = Some(scan::explain_foreign_scan);
        r.GetForeignUpperPaths = Some(crate::aggregates::get_foreign_upper_paths);
        r.IsForeignScanParallelSafe = Some(crate::parallel_scan::is_parallel_safe);
        r.EstimateDSMForeignScan = Some(crate::parallel_scan::estimate_dsm);
        r.InitializeDSMForeignScan = Some(crate::parallel_scan::initialize_dsm);
        r.ReInitializeDSMForeignScan = Some(crate::parallel_scan::reinitialize_dsm);
        r.InitializeWorkerForeignScan = Some(crate::parallel_scan::initialize_worker);
        r.AddForeignUpdateTargets = Some(modify::add_foreign_update_targets);
        r.PlanForeignModify = Some(modify::plan_foreign_modify);
        r.BeginForeignModify = Some(modify::begin_foreign_modify);
        r.ExecForeignInsert = Some(modify::exec_foreign_insert);
        r.GetForeignModifyBatchSize = Some(modify::get_foreign_modify_batch_size);
        r.ExecForeignBatchInsert = Some(modify::exec_foreign_batch_insert);
        r.ExecForeignUpdate = Some(modify::exec_foreign_update);
        r.ExecForeignDelete = Some(modify::exec_foreign_delete);
        r.EndForeignModify = Some(modify::end_foreign_modify);
        r.PlanDirectModify = Some(direct_modify::plan_direct_modify);
        r.BeginDirectModify = Some(direct_modify::begin_direct_modify);
        r.IterateDirectModify = Some(direct_modify::iterate_direct_modify);
        r.EndDirectModify = Some(direct_modify::end_direct_modify);
        r.ExplainDirectModify = Some(direct_modify::explain_direct_modify);
        r.BeginForeignInsert = Some(modify::begin_foreign_insert);
        r.EndForeignInsert = Some(modify::end_foreign_insert);
        r.IsForeignRelUpdatable = Some(modify::is_foreign_rel_updatable);
        r.ExecForeignTruncate = Some(modify::exec_foreign_truncate);
        r.AnalyzeForeignTable = Some(crate::analyze::analyze_foreign_table);
        r.into_pg_boxed()
    }
}

/// True if `routine` is memfdw's (used to recognise memory tables and servers): its
/// callbacks are this library's functions. They are plain non-generic `extern` items,
/// emitted once, so their addresses identify them.
pub fn is_ours(routine: *const pg_sys::FdwRoutine) -> bool {
    if routine.is_null() {
        return false;
    }
    // SAFETY: a routine returned by GetFdwRoutine*.
    match unsafe { (*routine).GetForeignRelSize } {
        Some(f) => std::ptr::fn_addr_eq(
            f,
            scan::get_foreign_rel_size as unsafe extern "C-unwind" fn(_, _, _),
        ),
        None => false,
    }
}

#[pg_extern]
fn memfdw_validator(options: Vec<String>, catalog: pg_sys::Oid) {
    if !crate::shmem::preloaded() {
        // Raises the error that says what to put in postgresql.conf.
        crate::shmem::engine();
    }
    for opt in &options {
        let (name, value) = opt.split_once('=').unwrap_or((opt, ""));
        if name == crate::index_options::OPTION && catalog == pg_sys::ForeignTableRelationId {
            // A table's keys and indexes (see `index_options`).
            crate::index_options::validate(value);
            continue;
        }
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
            format!("invalid option \"{name}\""),
            "memfdw_validator",
        )
        .set_hint("memfdw takes no options but a table's \"indexes\", which it maintains.")
        .report(PgLogLevel::ERROR);
    }
}

extension_sql!(
    r#"
CREATE FOREIGN DATA WRAPPER memfdw HANDLER memfdw_handler VALIDATOR memfdw_validator;
CREATE SERVER memfdw FOREIGN DATA WRAPPER memfdw;
COMMENT ON SERVER memfdw IS 'memory tables: CREATE FOREIGN TABLE ... SERVER memfdw';
"#,
    name = "create_wrapper_and_server",
    requires = [memfdw_handler, memfdw_validator],
);

/// The memory table `rv` names, if it names one (looked up without a lock).
///
/// # Safety
/// `rv` must be a valid range variable.
pub(crate) unsafe fn memory_table_of(rv: *mut pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    // SAFETY: forwarded contract; catalog lookup.
    let relid = unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    };
    (relid != pg_sys::InvalidOid && is_memory_table(relid)).then_some(relid)
}

thread_local! {
    /// Relations already looked up: relation -> is it a memory table? Entries go when
    /// PostgreSQL invalidates the relation's cache entry (see
    /// [`register_relcache_callback`]), as it does when the relation is dropped or
    /// changed.
    static FOREIGN_TABLES: std::cell::RefCell<std::collections::HashMap<u32, bool>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// True if relation `relid` is a foreign table of a memfdw server.
///
/// Called for every relation of every query (`snapshots`), heap tables' too: the
/// answer is remembered for every relation, as even the relation kind is a catalog
/// cache lookup, and finding a foreign table's wrapper takes three more and a call of
/// the handler (which builds a routine each time).
pub(crate) fn is_memory_table(relid: pg_sys::Oid) -> bool {
    if let Some(known) = FOREIGN_TABLES.with(|m| m.borrow().get(&relid.to_u32()).copied()) {
        return known;
    }
    // SAFETY: catalog lookup.
    let kind = unsafe { pg_sys::get_rel_relkind(relid) };
    let foreign = kind == pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char;
    // SAFETY: catalog lookups of an existing foreign table.
    let ours = foreign && unsafe { is_ours(pg_sys::GetFdwRoutineByRelId(relid)) };
    // (A relation that does not exist, kind 0, is not remembered: a relation created
    // later may get its OID.)
    if kind != 0 {
        FOREIGN_TABLES.with(|m| m.borrow_mut().insert(relid.to_u32(), ours));
    }
    ours
}

/// Relcache invalidation callback: forgets relation `relid` (every one for
/// `InvalidOid`).
///
/// # Safety
/// Called by PostgreSQL's invalidation machinery only.
#[pg_guard]
unsafe extern "C-unwind" fn forget_relation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    FOREIGN_TABLES.with(|m| {
        let mut m = m.borrow_mut();
        if relid == pg_sys::InvalidOid {
            m.clear();
        } else {
            m.remove(&relid.to_u32());
        }
    });
}

/// Syscache invalidation callback (foreign servers and wrappers): forgets everything.
///
/// # Safety
/// Called by PostgreSQL's invalidation machinery only.
#[pg_guard]
unsafe extern "C-unwind" fn forget_all(_arg: pg_sys::Datum, _cache: std::ffi::c_int, _hash: u32) {
    FOREIGN_TABLES.with(|m| m.borrow_mut().clear());
}

/// Keeps [`is_memory_table`]'s answers in step with the catalog: a relation's goes
/// with its relcache entry, and all go when a foreign server or wrapper changes
/// (`ALTER FOREIGN DATA WRAPPER ... HANDLER` touches no relation). Called once per
/// process from `_PG_init`.
pub(crate) fn register_relcache_callback() {
    // SAFETY: registers callbacks that live as long as the process.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(forget_relation), pg_sys::Datum::from(0));
        for cache in [
            pg_sys::SysCacheIdentifier::FOREIGNDATAWRAPPEROID,
            pg_sys::SysCacheIdentifier::FOREIGNSERVEROID,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as std::ffi::c_int,
                Some(forget_all),
                pg_sys::Datum::from(0),
            );
        }
    }
}

/// The current database (the engine names tables by database and relation).
pub(crate) fn current_database() -> u32 {
    // SAFETY: reading this backend's database id, set at connection start.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// The engine table of relation `relid` of the current database.
pub(crate) fn table_id(relid: pg_sys::Oid) -> memfdw_engine::TableId {
    memfdw_engine::TableId::new(current_database(), relid.to_u32())
}
