//! Sequential scans shared by several processes (PostgreSQL's parallel query).
//!
//! The leader describes the scan in a [`SharedScan`] placed in memory every participant
//! maps (PostgreSQL's dynamic shared memory): the table, the snapshot to read at, and
//! a counter of row-id blocks. Each participant (the leader too) claims the next block
//! of [`SharedScan::BLOCK`] row ids and reads the committed rows in it at the leader's
//! snapshot, so together they read every row exactly once, as the leader's own scan
//! would have.
//!
//! Only committed rows can be shared: a participant has no transaction of its own. A
//! leader whose transaction sees its own version of the table (it wrote rows of it, or
//! truncated or altered it) marks the scan *leader-only*: the others must not read it
//! (the caller decides what they do; PostgreSQL does not promise that the leader runs
//! its part of a parallel plan).
//!
//! Invariants:
//! * Every row a read at the snapshot can return has a row id below `end`, or is in
//!   the last block, which is claimed open-ended: row ids are allocated at insert,
//!   before the inserter commits and takes its TID, and `end` is read after the
//!   snapshot was taken.
//! * The leader keeps its snapshot registered (and so the versions read at it) until
//!   its query ends, after the other participants have finished.
//! * What the participants read is noted in the leader's transaction: the table as a
//!   whole for serializable validation when the scan is set up, and the log's end for
//!   durable reads then and again when they have finished (the caller's
//!   [`TxnHandle::note_shared_reads`](super::TxnHandle::note_shared_reads)): a row a
//!   participant returns was installed after its log record was written.

use super::read_set::TableRead;
use super::scan::RowBatch;
use super::Txn;
use crate::engine::{Engine, TableHandle};
use crate::epoch;
use crate::ids::{RowId, Tid};
use crate::scope;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A scan shared by several processes; see the module documentation. It holds only
/// integers and atomics, so it may live in any memory the participants map.
#[repr(C)]
#[derive(Debug)]
pub struct SharedScan {
    /// First row id of the next block to claim.
    next: AtomicU64,
    /// Row ids from here on were not allocated when the scan was set up.
    end: u64,
    /// The snapshot every participant reads committed rows at.
    at: u64,
    /// Address of the scanned table (its identity): a participant checks it reads the
    /// same table as the leader.
    table: u64,
    leader_only: u64,
}

impl SharedScan {
    /// Row ids per claimed block.
    pub const BLOCK: u64 = 1024;

    /// Does only the leader see the table as the scan must read it?
    pub fn leader_only(&self) -> bool {
        self.leader_only != 0
    }

    /// For a rescan: every block is unclaimed again (call while no participant runs).
    pub fn restart(&self) {
        self.next.store(1, Ordering::SeqCst);
    }

    /// The next block, as (first row id, end): the last one is open-ended.
    fn claim(&self) -> Option<(u64, u64)> {
        let lo = self.next.fetch_add(Self::BLOCK, Ordering::Relaxed);
        if lo >= self.end && lo != 1 {
            return None;
        }
        let hi = lo + Self::BLOCK;
        Some((lo, if hi >= self.end { u64::MAX } else { hi }))
    }
}

/// One participant's position in a [`SharedScan`].
#[derive(Debug, Default, Clone)]
pub struct SharedCursor {
    /// The claimed block: last row id read in it, and its end (exclusive).
    block: Option<(Option<RowId>, u64)>,
    done: bool,
    /// The filter this participant's rows must pass, and what it rejected (see
    /// [`super::scan::ScanCursor::filtered`]).
    filter: Option<std::sync::Arc<crate::row_filter::RowFilter>>,
    removed: u64,
    scratch: Vec<u8>,
}

impl SharedCursor {
    pub fn new() -> Self {
        Self::default()
    }
    /// A participant that skips the rows `filter` rejects.
    pub fn filtered(filter: std::sync::Arc<crate::row_filter::RowFilter>) -> Self {
        SharedCursor {
            done: filter.never(),
            filter: (!filter.is_empty()).then_some(filter),
            scratch: Vec::with_capacity(64),
            ..Self::default()
        }
    }
    pub fn done(&self) -> bool {
        self.done
    }
    /// Rows the filter rejected so far.
    pub fn removed(&self) -> u64 {
        self.removed
    }
}

impl Txn {
    /// Sets up a scan of `t` shared with other processes, reading what this
    /// transaction's current statement reads (see the module documentation).
    pub(super) fn start_shared_scan(&mut self, t: &TableHandle) -> SharedScan {
        let own_view = self.own_view_of(t.id)
            || self
                .engine
                .table(t.id)
                .is_none_or(|c| !Arc::ptr_eq(c.arc(), t.arc()));
        let at = self.read_view();
        if self.validates_reads() {
            self.note_table_read(t, TableRead::Whole);
        }
        // Participants may return any row committed so far; the caller notes the log's
        // end again once they have finished (rows whose commits were installed later).
        self.note_read_committed();
        SharedScan {
            next: AtomicU64::new(1),
            end: t.peek_next_rowid().0,
            at: at.0,
            table: Arc::as_ptr(t.arc()) as u64,
            leader_only: own_view as u64,
        }
    }

    /// Does this transaction see table `id` otherwise than as committed: has it
    /// written rows of it (pending writes), or truncated or altered it?
    pub(super) fn own_view_of(&self, id: crate::ids::TableId) -> bool {
        if self.truncations_of(id) {
            return true;
        }
        self.tables.iter().any(|x| {
            x.id == id
                && self
                    .pending
                    .range(super::RowKey::all_of(super::TableKey::of(x)))
                    .next()
                    .is_some()
        })
    }
}

impl Engine {
    /// Fills `batch` with up to `max_rows` committed rows of `t` at the snapshot of
    /// `shared`, from the blocks `cursor` claims. Returns false if `t` is not the table
    /// the leader set the scan up for (the caller must not go on). A leader-only scan
    /// returns no rows here. Returns with fewer rows (maybe none) when many rows were
    /// examined, so the caller can check for interrupts.
    pub fn shared_scan(
        &self,
        t: &TableHandle,
        shared: &SharedScan,
        cursor: &mut SharedCursor,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> bool {
        let _s = scope::enter();
        batch.clear();
        if shared.leader_only() {
            // The leader may read a table the others cannot see (its TRUNCATE's).
            cursor.done = true;
            return true;
        }
        if Arc::as_ptr(t.arc()) as u64 != shared.table {
            return false;
        }
        let at = Tid(shared.at);
        let max_rows = max_rows.max(1);
        while !cursor.done && batch.len() < max_rows {
            let (after, hi) = match cursor.block {
                Some(b) => b,
                None => match shared.claim() {
                    Some((lo, hi)) => ((lo > 1).then(|| RowId(lo - 1)), hi),
                    None => {
                        cursor.done = true;
                        break;
                    }
                },
            };
            let mut last = after;
            let mut finished = true;
            let mut seen = 0usize;
            epoch::with_guard(&self.collector, |g| {
                t.rows.scan_after(after, g, |rowid, rec| {
                    if rowid.0 >= hi {
                        return false;
                    }
                    last = Some(rowid);
                    seen += 1;
                    // SAFETY: reached through the index under guard `g`.
                    if let Some((d, tid)) = unsafe { rec.get() }.read_at(g, at) {
                        let rejected = cursor
                            .filter
                            .as_ref()
                            .is_some_and(|f| !f.matches(&t.layout, d, &mut cursor.scratch));
                        if rejected {
                            cursor.removed += 1;
                        } else {
                            batch.push(rowid, tid, d);
                        }
                    }
                    if batch.len() < max_rows && seen < max_rows * 8 {
                        true
                    } else {
                        finished = false;
                        false
                    }
                });
            });
            cursor.block = if finished { None } else { Some((last, hi)) };
            if !finished {
                // Full, or many rows examined: back to the caller (interrupts).
                break;
            }
        }
        true
    }
}
