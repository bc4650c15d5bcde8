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
        Error::NoColumns => ERRCODE_INVALID_TABLE_DEFINITION,
        Error::NullViolation { .. } => ERRCODE_NOT_NULL_VIOLATION,
        Error::BadValue { .. } | Error::ColumnCount { .. } => ERRCODE_INTERNAL_ERROR,
        Error::TableExists { .. } => ERRCODE_DUPLICATE_TABLE,
        Error::NoSuchTable { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        Error::OutOfMemory { .. } => ERRCODE_OUT_OF_MEMORY,
        Error::Conflict(_) => ERRCODE_T_R_SERIALIZATION_FAILURE,
        Error::TxnNotActive => ERRCODE_IN_FAILED_SQL_TRANSACTION,
        Error::Corrupt(_) => ERRCODE_DATA_CORRUPTED,
        Error::LogIo(_) | Error::NotDurable(_) => ERRCODE_IO_ERROR,
    }
}

/// Raises `e` as an ERROR (never returns).
pub fn raise(e: Error) -> ! {
    let mut report = ErrorReport::new(code(&e), format!("{e}"), "memfdw");
    match &e {
        Error::OutOfMemory { .. } => {
            report = report.set_hint(
                "Delete rows or drop memory tables, or raise memfdw.max_memory in postgresql.conf and restart.",
            );
        }
        Error::Conflict(_) => {
            report = report.set_hint("The transaction might succeed if retried.");
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
