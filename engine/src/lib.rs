//! memfdw's engine: an in-memory OLTP table engine with no dependency on PostgreSQL.
//!
//! It is an ordinary thread-safe library that is also process-safe when its objects
//! live in a region shared by forked processes (PostgreSQL's main shared memory):
//! see [`arena`], [`alloc`] and [`scope`] for how shared objects are allocated, and
//! [`epoch`] for how each process joins the epoch collector.

pub mod alloc;
pub mod arena;
mod btree;
pub mod catalog;
mod chunked;
mod copy;
pub mod engine;
pub mod epoch;
pub mod error;
pub mod fnv;
mod garbage;
pub mod ids;
pub mod index;
pub mod keys;
mod pages;
pub mod point_cache;
mod prefetch;
pub mod record;
pub mod recovery;
pub mod redo;
pub mod row;
pub mod row_filter;
pub mod rowid_index;
pub mod rowlock;
pub mod scope;
pub mod snapshots;
pub mod stats;
pub mod sync;
pub mod table;
mod threads;

/// How many threads the engine's parallel steps use here (the caller's included).
pub fn helper_threads() -> usize {
    threads::helper_threads()
}
mod truncate;
pub mod txn;
pub mod unload;
pub mod versions;

pub use catalog::{ColumnDef, ColumnType, TableDef};
pub use engine::{Engine, EngineConfig, MemoryStats, TableHandle, VersionStats};
pub use error::{AbortReason, Error, Result};
pub use ids::{Lsn, RowId, TableId, Tid};
pub use index::IndexDef;
pub use recovery::Replayer;
pub use row::RowLayout;
pub use row_filter::{ColumnCond, IntForm, RowFilter};
pub use rowlock::LockMode;
pub use snapshots::OldestSnapshot;
pub use txn::{
    BatchRow, IndexScan, Isolation, KeyBound, RowBatch, RowLock, ScanCursor, SharedCursor,
    SharedScan, Stmt, TxnHandle, WriteOutcome,
};
