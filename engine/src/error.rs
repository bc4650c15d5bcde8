//! The engine's errors. The FDW maps each kind to a SQLSTATE (see `Error::sqlstate`).

use crate::ids::TableId;

/// Why an optimistic transaction could not commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// A row this transaction updated or deleted was changed by another transaction
    /// after it was read.
    WriteConflict,
    /// A row this transaction updated or deleted was deleted by another transaction.
    RowDeleted,
    /// Another committer held a row with the same unique key for too long to wait.
    UniqueKeyBusy,
    /// (Repeatable read, serializable) a row this transaction read was changed or
    /// deleted by a transaction that committed after it started.
    ReadChanged,
    /// (Repeatable read, serializable) a table this transaction scanned was written
    /// (rows inserted, or moved into a range it read) after it started.
    TableChanged,
    /// (Serializable) a unique key it writes is held by a row committed after its
    /// snapshot: no serial order has it both miss that row and collide with it.
    KeyTakenConcurrently,
    /// (Serializable) a row arrived in an index range it read (inserted, or its key
    /// moved there) from a transaction that committed after it started.
    RangeChanged,
    /// (Repeatable read, serializable) ON CONFLICT found its conflicting row committed
    /// after its snapshot, so it can neither see nor skip it.
    ConflictRowInvisible,
}

impl AbortReason {
    /// PostgreSQL's primary message for the same failure (applications and tests match
    /// on it); the reason itself goes into the error's detail.
    pub fn pg_message(&self) -> &'static str {
        match self {
            AbortReason::WriteConflict
            | AbortReason::UniqueKeyBusy
            | AbortReason::ConflictRowInvisible => {
                "could not serialize access due to concurrent update"
            }
            AbortReason::RowDeleted => "could not serialize access due to concurrent delete",
            AbortReason::ReadChanged
            | AbortReason::TableChanged
            | AbortReason::KeyTakenConcurrently
            | AbortReason::RangeChanged => {
                "could not serialize access due to read/write dependencies among transactions"
            }
        }
    }
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AbortReason::WriteConflict => "a row it changed was updated concurrently",
            AbortReason::RowDeleted => "a row it changed was deleted concurrently",
            AbortReason::ReadChanged => "a row it read was changed by a concurrent transaction",
            AbortReason::TableChanged => "a table it read was written by a concurrent transaction",
            AbortReason::RangeChanged => {
                "a row was inserted into a key range it read by a concurrent transaction"
            }
            AbortReason::KeyTakenConcurrently => {
                "a unique key it inserts was taken by a transaction that committed after its snapshot"
            }
            AbortReason::ConflictRowInvisible => {
                "the row ON CONFLICT found was committed after its snapshot"
            }
            AbortReason::UniqueKeyBusy => {
                "another transaction was committing a row with the same unique key"
            }
        })
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("column \"{column}\" has type {type_name}, which memory tables do not support")]
    UnsupportedType { column: String, type_name: String },
    #[error("memory tables can have at most {max} columns, not {count}")]
    TooManyColumns { count: usize, max: usize },
    #[error("column \"{column}\" has invalid length {len}")]
    InvalidLength { column: String, len: i64 },
    #[error("name \"{name}\" is too long ({len} bytes, at most {max})")]
    NameTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("column \"{column}\" is defined more than once")]
    DuplicateColumn { column: String },
    #[error("row of {size} bytes is too large for a memory table (at most {max})")]
    RowTooLarge { size: usize, max: usize },
    #[error("null value in column \"{column}\" violates not-null constraint")]
    NullViolation { column: String },
    #[error("value for column \"{column}\" has {got} bytes, expected {expected}")]
    BadValue {
        column: String,
        got: usize,
        expected: usize,
    },
    #[error("row has {got} values, table has {expected} columns")]
    ColumnCount { got: usize, expected: usize },
    #[error("memory table {table} already exists")]
    TableExists { table: TableId },
    #[error("memory table {table} does not exist in the engine")]
    NoSuchTable { table: TableId },
    #[error("out of memory for memory tables: {in_use} bytes in use, limit {limit} bytes (memfdw.max_memory)")]
    OutOfMemory { in_use: usize, limit: usize },
    #[error("indexes can have at most {max} key columns, not {count}")]
    TooManyKeyColumns { count: usize, max: usize },
    #[error("column \"{column}\" has type {type_name}, which cannot be part of an index key")]
    NotIndexable { column: String, type_name: String },
    /// A unique index already holds the key of `row` (a packed row of `table`, in
    /// private memory) for another row.
    #[error("duplicate key value violates unique constraint \"{index}\"")]
    UniqueViolation {
        index: String,
        table: TableId,
        columns: Vec<u16>,
        row: Vec<u8>,
        /// The row holding the key committed after this transaction's snapshot
        /// (repeatable read, serializable): PostgreSQL then reports a serialization
        /// failure where the statement could not have seen the row.
        invisible: bool,
        /// Serializable: this transaction read the table before (it saw the key
        /// free), so the collision is a read/write dependency, not a duplicate.
        after_read: bool,
    },
    #[error("relation \"{name}\" already exists")]
    IndexExists { name: String },
    #[error("index {id} of memory table {table} does not exist")]
    NoSuchIndex { table: TableId, id: u32 },
    #[error("{}", .0.pg_message())]
    Conflict(AbortReason),
    #[error("the transaction is no longer active")]
    TxnNotActive,
    /// A transaction that has not committed yet inserted the unique key this
    /// statement needs: the caller waits for `holder` (its row-lock tag) to end, then
    /// tries again (PostgreSQL's wait for the inserting transaction).
    #[error("a concurrent transaction is inserting the same unique key")]
    KeyPending { holder: u64 },
    #[error("too many transactions hold memory-table snapshots at once (at most {max})")]
    TooManySnapshots { max: usize },
    #[error("corrupt redo data: {0}")]
    Corrupt(String),
    #[error("could not write the redo log: {0}")]
    LogIo(String),
    /// The commit is installed but could not be made durable: the server must restart
    /// and recover (PostgreSQL answers fsync failures the same way).
    #[error("could not make the redo log durable: {0}")]
    NotDurable(String),
    #[error("could not write or read a spill file: {0}")]
    SpillIo(String),
    #[error("memory table {table} is {state}: its rows are not in memory")]
    NotLoaded { table: TableId, state: &'static str },
    #[error("memory table {table} was already written, truncated, altered, loaded or unloaded in this transaction")]
    ChangedInTransaction { table: TableId },
}

impl Error {
    /// The PostgreSQL SQLSTATE of this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Error::UnsupportedType { .. } => "0A000",
            Error::TooManyColumns { .. } | Error::RowTooLarge { .. } => "54000",
            Error::InvalidLength { .. } => "42611",
            Error::NameTooLong { .. } => "42622",
            Error::DuplicateColumn { .. } => "42701",
            Error::NullViolation { .. } => "23502",
            Error::BadValue { .. } | Error::ColumnCount { .. } => "XX000",
            Error::TableExists { .. } | Error::IndexExists { .. } => "42P07",
            Error::TooManyKeyColumns { .. } => "54011",
            Error::NotIndexable { .. } => "42704",
            Error::UniqueViolation { .. } => "23505",
            Error::NoSuchIndex { .. } => "42704",
            Error::NoSuchTable { .. } => "55000",
            Error::OutOfMemory { .. } => "53200",
            Error::Conflict(_) => "40001",
            Error::TxnNotActive => "25P02",
            Error::TooManySnapshots { .. } => "53000",
            Error::KeyPending { .. } => "40001",
            Error::Corrupt(_) => "XX001",
            Error::LogIo(_) | Error::NotDurable(_) | Error::SpillIo(_) => "58030",
            Error::NotLoaded { .. } => "55000",
            Error::ChangedInTransaction { .. } => "55006",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
