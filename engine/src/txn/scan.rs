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
        let start = self.buf.len();
        if self.buf.capacity() - start >= data.len() && self.rows.len() < self.rows.capacity() {
            // Neither vector grows, so nothing is allocated: no switch to private
            // allocations (two thread-local accesses, per row of every scan).
            self.buf.extend_from_slice(data);
            self.rows.push((rowid, tid, start, self.buf.len()));
            return;
        }
        scope::outside(|| {
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

/// One thread's share of [`Txn::scan_visit_parallel`]: its state, and the rows its
/// filter removed and the rows it visited.
struct Share<'a, S> {
    state: &'a mut S,
    lo: u64,
    hi: u64,
    removed: u64,
    visited: u64,
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

    /// Walks the rows after `cursor`, calling `step` for each with the rows walked so
    /// far and, if a statement with command id `cid` sees the row and the cursor's
    /// filter passes it, its (row id, version TID, bytes) where they lie; stops when
    /// `step` returns false, and moves the cursor past the rows walked.
    ///
    /// `step` runs under the engine's epoch guard and allocator scope (see
    /// [`Txn::scan_visit`]).
    fn walk(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        mut step: impl FnMut(Option<(RowId, Tid, &[u8])>, usize) -> bool,
    ) {
        if self.validates_reads() {
            self.note_table_read(t, TableRead::Whole);
        }
        let at = self.read_view();
        let mut last = cursor.after;
        let mut seen = 0usize;
        let mut taken = false;
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
                let row = row.filter(|(d, _)| passes(filter, t, d, scratch, removed));
                taken |= row.is_some();
                step(row.map(|(d, tid)| (rowid, tid, d)), seen)
            });
        });
        if last == cursor.after {
            cursor.done = true;
        }
        cursor.after = last;
        if taken {
            self.note_read_committed();
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
        self.walk(t, cursor, cid, |row, seen| {
            if let Some((rowid, tid, d)) = row {
                batch.push(rowid, tid, d);
            }
            batch.len() < max_rows && seen < max_rows * 8
        });
        Ok(())
    }

    /// Like [`Txn::scan`], but hands each visible row's bytes to `visit` where they
    /// lie instead of copying them out: for callers that only compute over rows
    /// (aggregates). Visits up to `max_rows` rows after `cursor`.
    ///
    /// `visit` runs under the engine's epoch guard and allocator scope: it must not
    /// allocate there (the caller's memory only, through `scope::outside` or a buffer
    /// it allocated before), block, or call back into the engine or PostgreSQL.
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
        self.walk(t, cursor, cid, |row, seen| {
            if let Some((_, _, d)) = row {
                visit(d);
            }
            seen < max_rows
        });
        Ok(())
    }

    /// Visits the committed rows with row ids in `from..to` that a statement reads and
    /// `filter` passes, on `states.len()` threads: the range is cut in as many equal
    /// parts, and part `i` is visited with `states[i]` (see [`crate::threads`]: no
    /// PostgreSQL code may run in `visit`, nor may it allocate shared memory, as for
    /// [`Txn::scan_visit`]). Returns (rows removed by the filter, rows visited), or
    /// None, having visited nothing, if this transaction sees the table otherwise than
    /// as committed (its own writes, truncation or replacement): the caller then
    /// visits it with `scan_visit`.
    pub(super) fn scan_visit_parallel<S: Send>(
        &mut self,
        t: &TableHandle,
        filter: Option<&Arc<RowFilter>>,
        from: u64,
        to: u64,
        states: &mut [S],
        visit: impl Fn(&mut S, &[u8]) + Sync,
    ) -> Result<Option<(u64, u64)>> {
        let committed_view = !self.own_view_of(t.id)
            && self
                .engine
                .table(t.id)
                .is_some_and(|c| Arc::ptr_eq(c.arc(), t.arc()));
        if !committed_view {
            return Ok(None);
        }
        if self.validates_reads() {
            self.note_table_read(t, TableRead::Whole);
        }
        let at = self.read_view();
        let n = states.len().max(1) as u64;
        let step = (to.saturating_sub(from)).div_ceil(n).max(1);
        let collector = &self.engine.collector;
        // The shares and the threads' buffers are the caller's private memory, not
        // the engine's shared memory.
        let totals = crate::scope::outside(|| -> Result<(u64, u64)> {
            let shares: Vec<std::sync::Mutex<Share<'_, S>>> = states
                .iter_mut()
                .enumerate()
                .map(|(i, state)| {
                    let lo = from + step * i as u64;
                    std::sync::Mutex::new(Share {
                        state,
                        lo,
                        hi: (lo + step).min(to),
                        removed: 0,
                        visited: 0,
                    })
                })
                .collect();
            crate::threads::parallel(shares.iter().collect(), |share| {
                let mut share = share.lock().unwrap_or_else(|e| e.into_inner());
                let Share {
                    state,
                    lo,
                    hi,
                    removed,
                    visited,
                } = &mut *share;
                let (lo, hi) = (*lo, *hi);
                if lo >= hi {
                    return Ok(());
                }
                let mut scratch = Vec::with_capacity(64);
                let filter = filter.cloned();
                epoch::with_guard(collector, |g| {
                    let start = lo.checked_sub(1).map(RowId);
                    t.rows.scan_after(start, g, |rowid, rec| {
                        if rowid.0 >= hi {
                            return false;
                        }
                        // SAFETY: reached through the index under guard `g`.
                        if let Some((d, _)) = unsafe { rec.get() }.read_at(g, at) {
                            if passes(&filter, t, d, &mut scratch, removed) {
                                visit(state, d);
                                *visited += 1;
                            }
                        }
                        true
                    });
                });
                Ok(())
            })?;
            Ok(shares.into_iter().fold((0, 0), |(r, v), s| {
                let s = s.into_inner().unwrap_or_else(|e| e.into_inner());
                (r + s.removed, v + s.visited)
            }))
        })?;
        // Every row visited was installed after its log record was written.
        self.note_read_committed();
        Ok(Some(totals))
    }
}
