//! The redo log: record contents ([`payload`]), segments with framing and recovery
//! ([`segment`]), the files behind them ([`storage`]), and the seam where a commit
//! hands its after-images to the log ([`RedoSink`]).
//!
//! Phase 11 of the commit protocol (see `txn/commit.rs`) appends a commit record (TID and
//! the after-images of every row written) while the write set is still locked, so
//! records of one row reach the log in TID order; phase 6, after the locks are
//! released, waits until the record is durable. [`shared::SharedLog`] is the
//! implementation used by PostgreSQL backends.

use crate::ids::Lsn;

pub mod checkpoint;
pub mod control;
pub mod files;
pub mod payload;
pub mod segment;
pub mod shared;
pub mod storage;
pub mod table_file;

/// Where an appended record ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// LSN just past the record.
    pub end: Lsn,
    /// Checkpoint phase (see `shared::SharedLog::begin_checkpoint`).
    pub phase: usize,
}

/// Where redo records go. Lives in the arena (allocate it inside an engine scope)
/// and is called by every process.
pub trait RedoSink: Send + Sync {
    /// Appends one encoded record (see [`payload`]); returns where it ends and the
    /// checkpoint phase it belongs to. Called while the committing transaction holds
    /// its row locks: must not wait for durability. An error makes the commit fail
    /// (nothing installed). Every successful append is followed by
    /// [`RedoSink::installed`] once its effect is in memory.
    fn append(&self, payload: &[u8]) -> std::io::Result<Appended>;
    /// Appends several records in consecutive frames, as one append (one
    /// [`RedoSink::installed`] follows): the parts of a big commit. Sinks that cannot
    /// keep them together take only one.
    fn append_parts(&self, parts: &[&[u8]]) -> std::io::Result<Appended> {
        match parts {
            [one] => self.append(one),
            _ => Err(std::io::Error::other(
                "this redo sink cannot log a commit split into parts",
            )),
        }
    }
    /// Like [`RedoSink::append_stream`], for a commit that calls
    /// [`RedoSink::make_durable`] past its record right after (a synchronous commit):
    /// the sink may hold the record back until that sync (the shared log writes the
    /// records of a group commit with one write). Nobody may be told the commit
    /// happened before that `make_durable` returns.
    fn append_stream_to_sync(
        &self,
        next: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> std::io::Result<Appended> {
        self.append_stream(next)
    }
    /// Appends the payloads `next` produces, in consecutive frames, as one append (as
    /// [`RedoSink::append_parts`]). Each call of `next` replaces the buffer's contents
    /// by the next payload (the buffer then holds the previous one, already appended:
    /// `next` may keep it for reuse) and returns true, or returns false when there is
    /// no payload more. Sinks that write as they go (the shared log) let a big commit
    /// encode each part while the previous one is written, in one reused buffer.
    ///
    /// The shared log calls `next` holding its lock (a spin lock: other appends, the
    /// group-commit sync and checkpoints wait meanwhile): `next` must only encode, and
    /// never call into the sink.
    fn append_stream(
        &self,
        next: &mut dyn FnMut(&mut Vec<u8>) -> bool,
    ) -> std::io::Result<Appended> {
        let mut parts = Vec::new();
        loop {
            let mut p = Vec::new();
            if !next(&mut p) {
                break;
            }
            parts.push(p);
        }
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        self.append_parts(&refs)
    }
    /// The largest payload one record may have; bigger commits are split into parts.
    fn max_record(&self) -> usize {
        segment::MAX_PAYLOAD
    }
    /// The appended record's effect is installed in memory (a checkpoint waits for
    /// every record appended before it started to reach this point).
    fn installed(&self, _phase: usize) {}
    /// Returns once everything up to `upto` is durable.
    fn make_durable(&self, upto: Lsn) -> std::io::Result<()>;
    /// An LSN at or past the end of every record appended so far (readers use it to
    /// wait, at their commit, for what they read to be durable). Sinks that do not
    /// track it say 0: nothing to wait for.
    fn written(&self) -> Lsn {
        Lsn(0)
    }
}
