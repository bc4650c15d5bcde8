//! Reading rows: sequential scans in row-id order, point lookups, and the batch that
//! carries rows out of the engine into the caller's private memory.

use super::read_set::TableRead;
use super::write_set::Seen;
use super::Txn;
use crate::engine::TableHandle;
use crate::epoch;
use crate::error::Result;
use crate::ids::{RowId, Tid};
use crate::record::RecordPtr;
use crate::row_filter::RowFilter;
use crate::scope;
use crossbeam_epoch::Guard;
use std::sync::Arc;

/// Resume point of a scan, and the filter its rows must pass (see
/// [`crate::row_filter`]).
#[derive(Debug, Default, Clone)]
pub struct ScanCursor {
    after: Option<RowId>,
    done: bool,
    filter: Option<std::sync::Arc<RowFilter>>,
    /// Rows the filter rejected so far.
    removed: u64,
    scratch: Vec<u8>,
}

impl ScanCursor {
    pub fn new() -> Self {
        Self::default()
    }
    /// A scan that skips the rows `filter` rejects (a filter no row passes makes the
    /// scan empty at once).
    pub fn filtered(filter: std::sync::Arc<RowFilter>) -> Self {
        ScanCursor {
            done: filter.never(),
            filter: (!filter.is_empty()).then_some(filter),
            // Allocated here, outside the engine's scope: growing it inside keeps it
            // private (see `crate::alloc`).
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

/// Does `row` pass the cursor's filter? Counts it if not.
fn passes(
    filter: &Option<std::sync::Arc<RowFilter>>,
    t: &TableHandle,
    row: &[u8],
    scratch: &mut Vec<u8>,
    removed: &mut u64,
) -> bool {
    match filter {
        Some(f) if !f.matches(&t.layout, row, scratch) => {
            *removed += 1;
            false
        }
        _ => true,
    }
}

/// Rows copied out of the engine into memory private to the caller.
#[derive(Debug, Default)]
pub struct RowBatch {
    buf: Vec<u8>,
    /// (row id, TID, start, end in `buf`).
    rows: Vec<(RowId, Tid, usize, usize)>,
    next: usize,
}

/// One row of a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchRow<'a> {
    pub rowid: RowId,
    /// The version the row was read at (0 for rows this transaction inserted).
    pub tid: Tid,
    pub data: &'a [u8],
}

impl RowBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// The row id of the `i`th row.
    pub(super) fn rowid(&self, i: usize) -> RowId {
        self.rows[i].0
    }

    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.rows.clear();
        self.next = 0;
    }

    pub(super) fn push(&mut self, rowid: RowId, tid: Tid, data: &[u8]) {
        scope::outside(|| {
            let start = self.buf.len();
            self.buf.extend_from_slice(data);
            self.rows.push((rowid, tid, start, self.buf.len()));
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The next unread row.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<BatchRow<'_>> {
        let &(rowid, tid, s, e) = self.rows.get(self.next)?;
        self.next += 1;
        Some(BatchRow {
            rowid,
            tid,
            data: &self.buf[s..e],
        })
    }
}

impl Txn {
    /// The version of row `rowid` that a statement with command id `cid` sees, with
    /// the TID to report, if the row exists for it. `rec` is the row's record if the
    /// caller has it (found under `g`).
    pub(super) fn visible_version<'g>(
        &'g self,
        t: &TableHandle,
        rowid: RowId,
        rec: Option<RecordPtr>,
        cid: u32,
        g: &'g Guard,
    ) -> Option<(&'g [u8], Tid)> {
        match self.seen(t, rowid, cid) {
            Seen::Own(v) => v,
            Seen::Committed => {
                let rec = rec.or_else(|| t.rows.get(rowid, g))?;
                // SAFETY: reached through an index under guard `g`.
                unsafe { rec.get() }.read_at(g, self.read_view())
            }
        }
    }

    /// The version of row `rowid` a statement with command id `cid` sees, committed rows
    /// read at snapshot `at`, copied into `out` (cleared first). Returns the version's
    /// TID (0 for own inserts).
    pub(super) fn get_at(
        &self,
        t: &TableHandle,
        rowid: RowId,
        cid: u32,
        at: Tid,
        out: &mut Vec<u8>,
    ) -> Option<Tid> {
        let copy = |out: &mut Vec<u8>, (d, tid): (&[u8], Tid)| {
            scope::outside(|| {
                out.clear();
                out.extend_from_slice(d);
            });
            tid
        };
        match self.seen(t, rowid, cid) {
            Seen::Own(v) => v.map(|v| copy(out, v)),
            // Pinned only when the committed row is needed.
            Seen::Committed => epoch::with_guard(&self.engine.collector, |g| {
                let rec = t.rows.get(rowid, g)?;
                // SAFETY: reached through the index under guard `g`.
                unsafe { rec.get() }.read_at(g, at).map(|v| copy(out, v))
            }),
        }
    }

    /// Fills `batch` with up to `max_rows` rows after `cursor` that a statement with
    /// command id `cid` sees.
    pub(super) fn scan(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> Result<()> {
        batch.clear();
        if cursor.done {
            return Ok(());
        }
        if self.validates_reads() {
            self.note_table_read(t, TableRead::Whole);
        }
        let at = self.read_view();
        let mut last = cursor.after;
        let mut seen = 0usize;
        let own_rows = self.tables.iter().any(|x| Arc::ptr_eq(x, t.arc()));
        let this = &*self;
        let ScanCursor {
            after,
            filter,
            removed,
            scratch,
            ..
        } = cursor;
        epoch::with_guard(&self.engine.collector, |g| {
            t.rows.scan_after(*after, g, |rowid, rec| {
                last = Some(rowid);
                seen += 1;
                let view = if own_rows {
                    this.seen(t, rowid, cid)
                } else {
                    Seen::Committed
                };
                let row = match view {
                    Seen::Own(v) => v,
                    // SAFETY: reached through the index under guard `g`.
                    Seen::Committed => unsafe { rec.get() }.read_at(g, at),
                };
                if let Some((d, tid)) = row {
                    if passes(filter, t, d, scratch, removed) {
                        batch.push(rowid, tid, d);
                    }
                }
                batch.len() < max_rows && seen < max_rows * 8
            });
        });
        if last == cursor.after {
            cursor.done = true;
        }
        cursor.after = last;
        if !batch.is_empty() {
            self.note_read_committed();
        }
        Ok(())
    }

    /// Like [`Txn::scan`], but hands each visible row's bytes to `visit` where they
    /// lie instead of copying them out: for callers that only compute over rows
    /// (aggregates). Visits up to `max_rows` rows after `cursor`.
    ///
    /// `visit` runs under the engine's epoch guard and allocator scope: it must not
    /// allocate, block or call back into the engine or PostgreSQL.
    pub(super) fn scan_visit(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        max_rows: usize,
        mut visit: impl FnMut(&[u8]),
    ) -> Result<()> {
        if cursor.done {
            return Ok(());
        }
        if self.validates_reads() {
            self.note_table_read(t, TableRead::Whole);
        }
        let at = self.read_view();
        let mut last = cursor.after;
        let mut seen = 0usize;
        let mut visited = 0usize;
        let own_rows = self.tables.iter().any(|x| Arc::ptr_eq(x, t.arc()));
        let this = &*self;
        let ScanCursor {
            after,
            filter,
            removed,
            scratch,
            ..
        } = cursor;
        epoch::with_guard(&self.engine.collector, |g| {
            t.rows.scan_after(*after, g, |rowid, rec| {
                last = Some(rowid);
                seen += 1;
                let view = if own_rows {
                    this.seen(t, rowid, cid)
                } else {
                    Seen::Committed
                };
                let row = match view {
                    Seen::Own(v) => v.map(|(d, _)| d),
                    // SAFETY: reached through the index under guard `g`.
                    Seen::Committed => unsafe { rec.get() }.read_at(g, at).map(|(d, _)| d),
                };
                if let Some(d) = row.filter(|d| passes(filter, t, d, scratch, removed)) {
                    visit(d);
                    visited += 1;
                }
                seen < max_rows
            });
        });
        if last == cursor.after {
            cursor.done = true;
        }
        cursor.after = last;
        if visited > 0 {
            self.note_read_committed();
        }
        Ok(())
    }
}
