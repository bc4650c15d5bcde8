//! Unloading a memory table from memory and loading it back (the engine side is
//! `memfdw_engine::unload`):
//!
//! ```sql
//! SELECT memfdw.unload('archive');                    -- rows to a spill file
//! SELECT memfdw.unload('scratch', mode => 'discard'); -- rows dropped, definition kept
//! SELECT memfdw.load('archive');                      -- rows and indexes back
//! ```
//!
//! Both run in the caller's transaction and take effect at its commit; a crash leaves
//! the table in its old state or its new one. They refuse, without waiting, a table
//! another session uses (55006: an open transaction that read or wrote it holds a lock
//! on it), and take its ACCESS EXCLUSIVE lock until the transaction ends. Only the
//! table's owner (or a member of the owning role) may run them.
//!
//! While a table is unloaded, reading or writing it, and DDL other than DROP, raise
//! 55000 naming `memfdw.load`; ANALYZE skips it.

use crate::errors::raise;
use crate::xact;
use memfdw_engine::unload::{Residency, UnloadMode, SPILL_DIR};
use memfdw_engine::TableHandle;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::path::PathBuf;

extension_sql!(
    r#"
CREATE FUNCTION memfdw.unload(rel regclass, mode text DEFAULT 'spill') RETURNS bigint
    LANGUAGE sql VOLATILE STRICT
    AS $$ SELECT memfdw._unload(rel::oid, mode) $$;
COMMENT ON FUNCTION memfdw.unload(regclass, text) IS
    'Frees the memory of a memory table: mode ''spill'' writes its rows to a file (memfdw.load brings them back), ''discard'' drops them and keeps the definition. Returns the rows that left memory.';
CREATE FUNCTION memfdw.load(rel regclass) RETURNS bigint
    LANGUAGE sql VOLATILE STRICT
    AS $$ SELECT memfdw._load(rel::oid) $$;
COMMENT ON FUNCTION memfdw.load(regclass) IS
    'Loads an unloaded memory table back into memory (a discarded one comes back empty). Returns the rows loaded.';
"#,
    name = "unload_functions",
    requires = [unload_rel, load_rel],
);

fn error(code: PgSqlErrorCode, msg: String) -> ErrorReport {
    ErrorReport::new(code, msg, "memfdw")
}

/// The directory of spill files.
fn spill_dir() -> PathBuf {
    PathBuf::from(crate::shmem::log().directory()).join(SPILL_DIR)
}

/// Checks that `relid` is a memory table the current user owns, that no other
/// session uses it and this one has it open nowhere, and locks it ACCESS EXCLUSIVE.
/// Returns its engine table as this transaction sees it.
fn take_table(relid: pg_sys::Oid, what: &str) -> TableHandle {
    let name = crate::types::relation_name(relid);
    if !crate::handler::is_memory_table(relid) {
        error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not a memory table"),
        )
        .set_hint("memfdw.unload and memfdw.load take foreign tables of a memfdw server.")
        .report(PgLogLevel::ERROR);
    }
    // SAFETY: catalog and lock manager calls of a backend in a transaction; the
    // relation is opened without a further lock and closed before returning.
    unsafe {
        if !pg_sys::pg_class_ownercheck(relid, pg_sys::GetUserId()) {
            error(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be owner of table {name}"),
            )
            .report(PgLogLevel::ERROR);
        }
        if !pg_sys::ConditionalLockRelationOid(relid, pg_sys::AccessExclusiveLock as _) {
            error(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                format!("memory table \"{name}\" is in use by another session"),
            )
            .set_detail(format!(
                "{what} needs the table to itself: another transaction has read, written or locked it and has not ended."
            ))
            .set_hint("Try again once that transaction has ended.")
            .report(PgLogLevel::ERROR);
        }
        // As TRUNCATE: not while this session has it open (a cursor, a running scan).
        let rel = pg_sys::relation_open(relid, pg_sys::NoLock as _);
        let stmt = std::ffi::CString::new(what).expect("no NUL");
        pg_sys::CheckTableNotInUse(rel, stmt.as_ptr());
        pg_sys::relation_close(rel, pg_sys::NoLock as _);
    }
    let relnum = relid.to_u32();
    if xact::index_ddl_pending(relnum) {
        error(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!(
                "memory table \"{name}\" was created, or had an index created or dropped, in this transaction"
            ),
        )
        .set_hint(format!("Run {what} in a transaction of its own."))
        .report(PgLogLevel::ERROR);
    }
    let id = crate::handler::table_id(relid);
    match xact::with_txn(|t| t.table(id)) {
        Some(t) => t,
        None => crate::errors::missing_table(relid),
    }
}

/// `memfdw.unload(rel, mode)`: see the module documentation.
#[pg_extern(name = "_unload", volatile, strict)]
fn unload_rel(rel: pg_sys::Oid, mode: &str) -> i64 {
    let mode = match mode {
        "spill" => UnloadMode::Spill,
        "discard" => UnloadMode::Discard,
        other => {
            error(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid unload mode \"{other}\""),
            )
            .set_hint("The mode is 'spill' (rows kept in a file) or 'discard' (rows dropped).")
            .report(PgLogLevel::ERROR);
            unreachable!()
        }
    };
    let t = take_table(rel, "memfdw.unload");
    let before = t.stats().rows;
    let sub = xact::current_stmt(true).sub;
    let dir = spill_dir();
    let r = xact::with_txn(|x| x.unload(&t, mode, &dir, sub));
    let name = crate::types::relation_name(rel);
    match r {
        Ok(Some(Residency::Spilled(f))) => f.rows as i64,
        Ok(Some(_)) => before.max(0),
        Ok(None) => {
            pgrx::notice!(
                "memory table \"{name}\" is already {}, nothing done",
                t.residency().state()
            );
            0
        }
        Err(e) => raise(e),
    }
}

/// `memfdw.load(rel)`: see the module documentation.
#[pg_extern(name = "_load", volatile, strict)]
fn load_rel(rel: pg_sys::Oid) -> i64 {
    let t = take_table(rel, "memfdw.load");
    let sub = xact::current_stmt(true).sub;
    let dir = spill_dir();
    let r = xact::with_txn(|x| x.load(&t, &dir, sub));
    match r {
        Ok(Some(rows)) => {
            // Loaded rows count as changed: automatic ANALYZE reads the table again.
            t.access
                .changed_since_analyze
                .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
            rows as i64
        }
        Ok(None) => {
            pgrx::notice!(
                "memory table \"{}\" is already loaded, nothing done",
                crate::types::relation_name(rel)
            );
            0
        }
        Err(e) => raise(e),
    }
}

/// Raises 55000 if memory table `t` (relation `relid`) is not in memory: every read,
/// write and DDL of its rows goes through here.
pub fn check_loaded(t: &TableHandle, relid: pg_sys::Oid) {
    let state = match t.residency() {
        Residency::Loaded => return,
        r => r.state(),
    };
    let name = crate::types::relation_name(relid);
    let hint = match t.residency() {
        Residency::Discarded => format!(
            "Its rows were discarded; SELECT memfdw.load('{name}') makes it usable again, empty."
        ),
        _ => format!("Load it back with SELECT memfdw.load('{name}')."),
    };
    error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("memory table \"{name}\" is unloaded ({state})"),
    )
    .set_detail("memfdw.unload took its rows out of memory.")
    .set_hint(hint)
    .report(PgLogLevel::ERROR);
}
