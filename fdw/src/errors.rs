//! Engine errors raised as PostgreSQL errors with their SQLSTATE.

use memfdw_engine::Error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

fn code(e: &Error) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match e {
        Error::UnsupportedType { .. } => ERRCODE_FEATURE_NOT_SUPPORTED,
        Error::TooManyColumns { .. } | Error::RowTooLarge { .. } => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        Error::InvalidLength { .. } => ERRCODE_INVALID_COLUMN_DEFINITION,
        Error::NameTooLong { .. } => ERRCODE_NAME_TOO_LONG,
        Error::DuplicateColumn { .. } => ERRCODE_DUPLICATE_COLUMN,
        Error::NullViolation { .. } => ERRCODE_NOT_NULL_VIOLATION,
        Error::BadValue { .. } | Error::ColumnCount { .. } => ERRCODE_INTERNAL_ERROR,
        Error::TableExists { .. } => ERRCODE_DUPLICATE_TABLE,
        Error::NoSuchTable { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        Error::OutOfMemory { .. } => ERRCODE_OUT_OF_MEMORY,
        Error::Conflict(_) => ERRCODE_T_R_SERIALIZATION_FAILURE,
        Error::TxnNotActive => ERRCODE_IN_FAILED_SQL_TRANSACTION,
        Error::TooManySnapshots { .. } => ERRCODE_INSUFFICIENT_RESOURCES,
        Error::KeyPending { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
        Error::Corrupt(_) => ERRCODE_DATA_CORRUPTED,
        Error::LogIo(_) | Error::NotDurable(_) | Error::SpillIo(_) => ERRCODE_IO_ERROR,
        Error::NotLoaded { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        Error::ChangedInTransaction { .. } => ERRCODE_OBJECT_IN_USE,
        Error::TooManyKeyColumns { .. } => ERRCODE_TOO_MANY_COLUMNS,
        Error::NotIndexable { .. } | Error::NoSuchIndex { .. } => ERRCODE_UNDEFINED_OBJECT,
        Error::UniqueViolation { .. } => ERRCODE_UNIQUE_VIOLATION,
        Error::IndexExists { .. } => ERRCODE_DUPLICATE_TABLE,
    }
}

/// Raises `e` as an ERROR (never returns).
pub fn raise(e: Error) -> ! {
    if let Error::UniqueViolation {
        after_read: true, ..
    } = e
    {
        if crate::xact::isolation() == memfdw_engine::txn::Isolation::Serializable {
            // As PostgreSQL: a key taken by a row this snapshot cannot see, in a table
            // it read, is a serialization failure, not a duplicate, under SERIALIZABLE.
            raise(Error::Conflict(
                memfdw_engine::AbortReason::KeyTakenConcurrently,
            ));
        }
    }
    let mut report = ErrorReport::new(code(&e), format!("{e}"), "memfdw");
    match &e {
        Error::OutOfMemory { .. } => {
            report = report.set_hint(
                "Delete rows or drop memory tables, or raise memfdw.max_memory in postgresql.conf and restart.",
            );
        }
        Error::Conflict(reason) => {
            report = report
                .set_detail(format!("memfdw: {reason}."))
                .set_hint("The transaction might succeed if retried.");
        }
        Error::UniqueViolation {
            table,
            columns,
            row,
            ..
        } => {
            report = report.set_detail(key_detail(*table, columns, row));
        }
        Error::NotDurable(_) => {
            // Committed in memory but maybe not on disk: like PostgreSQL after a failed
            // fsync, restart and recover from what the log holds.
            report.report(PgLogLevel::PANIC);
            unreachable!()
        }
        _ => {}
    }
    report.report(PgLogLevel::ERROR);
    unreachable!()
}

/// "Key (a, b)=(1, x) already exists." for the key columns of `row`, a packed row of
/// memory table `table`.
fn key_detail(table: memfdw_engine::TableId, columns: &[u16], row: &[u8]) -> String {
    let relid = pg_sys::Oid::from(table.relation);
    let Some(t) = crate::shmem::engine().table(table) else {
        return String::new();
    };
    let mut names = Vec::new();
    let mut values = Vec::new();
    for &c in columns {
        let col = &t.def.columns[c as usize];
        names.push(crate::types::column_name(relid, c));
        let v = match t.layout.get(row, c as usize) {
            None => "null".to_string(),
            Some(b) => {
                // SAFETY: catalog lookups; the datum is built from the column's own
                // bytes and printed with the column type's output function.
                unsafe {
                    let typid = pg_sys::get_atttype(relid, (c + 1) as pg_sys::AttrNumber);
                    let mut out = pg_sys::InvalidOid;
                    let mut varlena = false;
                    pg_sys::getTypeOutputInfo(typid, &mut out, &mut varlena);
                    let d = crate::types::datum(crate::types::Codec::of(col.ty), b);
                    std::ffi::CStr::from_ptr(pg_sys::OidOutputFunctionCall(out, d))
                        .to_string_lossy()
                        .into_owned()
                }
            }
        };
        values.push(v);
    }
    format!(
        "Key ({})=({}) already exists.",
        names.join(", "),
        values.join(", ")
    )
}

/// Unwraps an engine result or raises its error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e),
        }
    }
}

/// Raises "the engine has no such table" for relation `relid`.
pub fn missing_table(relid: pg_sys::Oid) -> ! {
    let name = crate::types::relation_name(relid);
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("memory table \"{name}\" has no data in memfdw"),
        "memfdw",
    )
    .set_detail(
        "The redo log replayed at start-up holds no table for it (was memfdw.data_directory changed or emptied?).",
    )
    .set_hint(format!(
        "Drop the foreign table \"{name}\" and create it again."
    ))
    .report(PgLogLevel::ERROR);
    unreachable!()
}

/// Raises an internal error (XX000): memfdw found a state that its own rules exclude.
pub fn internal(msg: String) -> ! {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, msg, "memfdw")
        .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}
