//! The redo log: record contents ([`payload`]), segments with framing and recovery
//! ([`segment`]), the files behind them ([`storage`]), and the seam where a commit
//! hands its after-images to the log ([`CommitSink`]).
//!
//! Phase 4 of the commit protocol (see `txn.rs`) calls [`CommitSink::append`] with the
//! commit TID and the after-images of every row the transaction wrote, while the
//! write set is still locked: records reach the sink in an order compatible with
//! their TIDs per row. The redo log proper (framing, group commit, segments) builds on
//! this seam.

pub mod payload;
pub mod segment;
pub mod storage;

/// One row written by a committing transaction.
#[derive(Debug, Clone, Copy)]
pub struct LoggedWrite<'a> {
    pub table_oid: u32,
    pub rowid: u64,
    /// The row's new packed bytes, or None for a delete.
    pub after: Option<&'a [u8]>,
}

pub trait CommitSink: Send + Sync {
    /// Called once per committing read-write transaction, inside the engine scope.
    /// Must not block for long and must not call back into the engine.
    fn append(&self, tid: u64, writes: &[LoggedWrite<'_>]);
}
