//! `LOCK TABLE` on memory tables. PostgreSQL refuses foreign tables there ("cannot lock
//! relation"); memfdw takes the table lock itself, in PostgreSQL's lock manager, with
//! PostgreSQL's rules: only in a transaction block, the privilege each mode needs,
//! `NOWAIT` (55P03), and `lock_timeout`, `statement_timeout`, cancel and the deadlock
//! detector while it waits. Other relations of the same statement are left to
//! PostgreSQL, in their order.

use crate::handler::is_memory_table;
use pgrx::pg_sys;

/// Locks the memory tables of `stmt`. Returns None if it named memory tables only (the
/// statement is done), else the statement for PostgreSQL (a copy without the memory
/// tables if it had any).
///
/// # Safety
/// `stmt` is the utility statement being run, `context` its ProcessUtility context.
pub unsafe fn lock_tables(
    stmt: *mut pg_sys::LockStmt,
    context: pg_sys::ProcessUtilityContext::Type,
) -> Option<*mut pg_sys::LockStmt> {
    // SAFETY: forwarded contract; catalog lookups and lock-manager calls, which raise
    // PostgreSQL's own errors.
    unsafe {
        let rels = (*stmt).relations;
        let mut others: *mut pg_sys::List = std::ptr::null_mut();
        let mut any = false;
        for i in 0..crate::pglist::len(rels) {
            let rv = crate::pglist::nth(rels, i) as *mut pg_sys::RangeVar;
            let relid = pg_sys::RangeVarGetRelidExtended(
                rv,
                pg_sys::NoLock as _,
                0,
                None,
                std::ptr::null_mut(),
            );
            if !is_memory_table(relid) {
                others = pg_sys::lappend(others, rv as *mut std::ffi::c_void);
                continue;
            }
            if !any {
                let top = context == pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL;
                pg_sys::RequireTransactionBlock(top, c"LOCK TABLE".as_ptr());
                any = true;
            }
            let mode = (*stmt).mode;
            check_privilege(relid, mode);
            let flags = if (*stmt).nowait {
                pg_sys::RVROption::RVR_NOWAIT
            } else {
                0
            };
            pg_sys::RangeVarGetRelidExtended(rv, mode, flags, None, std::ptr::null_mut());
        }
        if !any {
            return Some(stmt);
        }
        if others.is_null() {
            return None;
        }
        let copy = pg_sys::copyObjectImpl(stmt as *const std::ffi::c_void) as *mut pg_sys::LockStmt;
        (*copy).relations = others;
        Some(copy)
    }
}

/// PostgreSQL's rule (LockTableAclCheck): UPDATE, DELETE or TRUNCATE allow every mode;
/// SELECT also ACCESS SHARE; INSERT also up to ROW EXCLUSIVE.
///
/// # Safety
/// A catalog lookup; raises 42501 if the privilege is missing.
unsafe fn check_privilege(relid: pg_sys::Oid, mode: std::ffi::c_int) {
    // SAFETY: forwarded contract.
    unsafe {
        let mut mask = pg_sys::ACL_UPDATE | pg_sys::ACL_DELETE | pg_sys::ACL_TRUNCATE;
        if mode <= pg_sys::AccessShareLock as std::ffi::c_int {
            mask |= pg_sys::ACL_SELECT;
        }
        if mode <= pg_sys::RowExclusiveLock as std::ffi::c_int {
            mask |= pg_sys::ACL_INSERT;
        }
        let held = pg_sys::pg_class_aclmask(
            relid,
            pg_sys::GetUserId(),
            mask as pg_sys::AclMode,
            pg_sys::AclMaskHow::ACLMASK_ANY,
        );
        if held == 0 {
            pg_sys::aclcheck_error(
                pg_sys::AclResult::ACLCHECK_NO_PRIV,
                pg_sys::ObjectType::OBJECT_FOREIGN_TABLE,
                pg_sys::get_rel_name(relid),
            );
        }
    }
}
