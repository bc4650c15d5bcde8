//! The schema, table, column and constraint fields of integrity errors (class 23) that
//! memory-table writes raise, as heap tables' errors carry them: drivers and ORMs read
//! the constraint name of a 23505 to tell which key was violated.
//!
//! pgrx passes errors raised inside memfdw's callbacks on without these fields (it
//! keeps code, message, detail and hint). So each INSERT/UPDATE/COPY into a memory
//! table names its table here when it starts (`writing`), and an `emit_log_hook`
//! fills in what an integrity error without a table field lacks just before
//! PostgreSQL sends it: the table and its schema from here, the constraint and column
//! from PostgreSQL's own message formats ('... constraint "name"', 'null value in
//! column "name" ...'). The table is forgotten when the write ends, when its
//! (sub)transaction ends, and once used.
//!
//! Limits: an error caught by a PL/pgSQL exception block is never emitted, so `GET
//! STACKED DIAGNOSTICS` still sees no such fields.

use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::rc::Rc;

struct Written {
    schema: CString,
    table: CString,
}

/// A table's names, by the relcache fields that name it: OID, schema OID, name.
type Named = (pg_sys::Oid, pg_sys::Oid, pg_sys::NameData, Rc<Written>);

thread_local! {
    static WRITING: RefCell<Option<Rc<Written>>> = const { RefCell::new(None) };
    /// The names of the last table written, by its OID, schema OID and name (a
    /// rename changes the name; a schema's rename clears it: `forget_schemas`), so
    /// that a statement does not look the schema name up again.
    static LAST_NAMED: RefCell<Option<Named>> =
        const { RefCell::new(None) };
}

static mut PREV_EMIT: pg_sys::emit_log_hook_type = None;

/// Installs the hook (at library load).
///
/// # Safety
/// Once per process, from `_PG_init`.
pub unsafe fn install_hook() {
    // SAFETY: forwarded contract; hooks are process-global and set at load; the
    // callback lives as long as the process.
    unsafe {
        PREV_EMIT = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as std::ffi::c_int,
            Some(forget_schemas),
            pg_sys::Datum::from(0),
        );
    }
}

/// Syscache invalidation callback (schemas): forgets the cached names.
///
/// # Safety
/// Called by PostgreSQL's invalidation machinery only.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn forget_schemas(
    _arg: pg_sys::Datum,
    _cache: std::ffi::c_int,
    _hash: u32,
) {
    LAST_NAMED.with(|n| {
        if let Ok(mut n) = n.try_borrow_mut() {
            *n = None;
        }
    });
}

/// A write into memory table `rel` starts.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn writing(rel: pg_sys::Relation) {
    // SAFETY: forwarded contract: the relcache entry's fields.
    let (relid, nspid, relname) = unsafe {
        let form = (*rel).rd_rel;
        ((*rel).rd_id, (*form).relnamespace, (*form).relname)
    };
    let same = |n: &pg_sys::NameData| n.data == relname.data;
    let cached = LAST_NAMED.with(|n| {
        n.borrow()
            .as_ref()
            .filter(|(r, s, name, _)| *r == relid && *s == nspid && same(name))
            .map(|(.., w)| w.clone())
    });
    let written = match cached {
        Some(w) => w,
        None => {
            // SAFETY: one catalog lookup; the name from the relcache entry.
            let (schema, table) = unsafe {
                let nsp = pg_sys::get_namespace_name(nspid);
                if nsp.is_null() {
                    return;
                }
                (
                    CStr::from_ptr(nsp).to_owned(),
                    CStr::from_ptr(relname.data.as_ptr()).to_owned(),
                )
            };
            let w = Rc::new(Written { schema, table });
            LAST_NAMED.with(|n| *n.borrow_mut() = Some((relid, nspid, relname, w.clone())));
            w
        }
    };
    WRITING.with(|w| *w.borrow_mut() = Some(written));
}

/// The write ended (or its transaction did).
pub fn done() {
    WRITING.with(|w| {
        if let Ok(mut w) = w.try_borrow_mut() {
            *w = None;
        }
    });
}

/// The quoted name after `marker` in `message`, up to the closing quote that `end`
/// follows ("" for the last one).
fn quoted_after(message: &str, marker: &str, end: &str) -> Option<String> {
    let start = message.find(marker)? + marker.len();
    let rest = &message[start..];
    let stop = if end.is_empty() {
        rest.rfind('"')?
    } else {
        rest.find(&format!("\"{end}"))?
    };
    Some(rest[..stop].to_string())
}

/// # Safety
/// Called by PostgreSQL only, with a valid error report, in ErrorContext.
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: forwarded contract; strings are copied into the current (error) memory
    // context, as PostgreSQL's own fields are. Nothing here raises an error.
    unsafe {
        let e = &mut *edata;
        // The SQLSTATE class "23" (PostgreSQL packs each character in 6 bits, the first
        // two lowest).
        let is_integrity = e.sqlerrcode & 0xFFF == 2 | (3 << 6);
        if e.elevel >= pgrx::PgLogLevel::ERROR as i32 && is_integrity && e.table_name.is_null() {
            let taken = WRITING.with(|w| w.try_borrow_mut().ok().and_then(|mut w| w.take()));
            if let Some(w) = taken {
                e.schema_name = pg_sys::pstrdup(w.schema.as_ptr());
                e.table_name = pg_sys::pstrdup(w.table.as_ptr());
                let message = if e.message.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(e.message).to_string_lossy().into_owned()
                };
                let dup = |s: String| {
                    CString::new(s)
                        .map(|c| pg_sys::pstrdup(c.as_ptr()))
                        .unwrap_or(std::ptr::null_mut())
                };
                if e.constraint_name.is_null() {
                    if let Some(c) = quoted_after(&message, "constraint \"", "") {
                        e.constraint_name = dup(c);
                    }
                }
                if e.column_name.is_null() {
                    if let Some(c) =
                        quoted_after(&message, "null value in column \"", " of relation")
                    {
                        e.column_name = dup(c);
                    }
                }
            }
        }
        if let Some(prev) = PREV_EMIT {
            prev(edata);
        }
    }
}
