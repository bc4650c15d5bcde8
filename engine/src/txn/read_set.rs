//! What a serializable transaction read, and its validation at
//! commit (Silo's read-set check, plus whole-table and index-range phantom checks).
//!
//! Rows read through an index are recorded with the version read, up to
//! [`MAX_READ_ROWS`], and so is each index range scanned (up to [`MAX_READ_RANGES`]):
//! at commit the range is scanned again, and a row in it that the transaction did not
//! read and that a transaction committed after its start put there (an insert, or a
//! key moved into the range) is a phantom. Beyond those limits, and for sequential
//! scans, the table is recorded instead: scanned whole (any write committed after the
//! start conflicts) or read through an index (an insert or a key moved into the table
//! conflicts). A table with a commit in flight conflicts in both cases (that commit's
//! rows may not be linked or marked yet).

use super::{RowKey, TableKey, Txn};
use crate::engine::TableHandle;
use crate::error::{AbortReason, Error, Result};
use crate::ids::{RowId, Tid};
use crate::record::{ABSENT_BIT, LOCK_BIT, TID_MASK};
use crate::scope;
use crossbeam_epoch::Guard;
use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Rows recorded per transaction for read validation; beyond it, tables are validated
/// as a whole.
pub(super) const MAX_READ_ROWS: usize = 100_000;

/// Index ranges recorded per transaction; beyond it, tables are validated as a whole.
pub(super) const MAX_READ_RANGES: usize = 1024;

/// An index range a serializable transaction scanned.
pub(super) struct ReadRange {
    slot: usize,
    index_id: u32,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
}

/// How a table was read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TableRead {
    /// Through an index: rows arriving since the start conflict.
    Index,
    /// Scanned whole: any write since the start conflicts.
    Whole,
}

#[derive(Default)]
pub(super) struct ReadSet {
    /// Rows read, with the version read.
    rows: Vec<(RowKey, Tid)>,
    /// Tables read (slot in [`Txn::tables`]).
    tables: Vec<(usize, TableRead)>,
    /// Index ranges scanned.
    ranges: Vec<ReadRange>,
}

impl ReadSet {
    fn note_table(&mut self, slot: usize, how: TableRead) {
        match self.tables.iter_mut().find(|(s, _)| *s == slot) {
            Some(e) if how == TableRead::Whole => e.1 = TableRead::Whole,
            Some(_) => {}
            None => self.tables.push((slot, how)),
        }
    }
}

impl Txn {
    /// Notes that `t` was read (whole, or through an index) for commit validation.
    pub(super) fn note_table_read(&mut self, t: &TableHandle, how: TableRead) {
        let slot = self.table_slot(t);
        self.reads.note_table(slot, how);
    }

    /// Notes that the range `lower..upper` of index `index_id` of `t` was scanned; past
    /// [`MAX_READ_RANGES`] the table is noted as read through an index instead.
    pub(super) fn note_range_read(
        &mut self,
        t: &TableHandle,
        index_id: u32,
        lower: &Bound<Vec<u8>>,
        upper: &Bound<Vec<u8>>,
    ) {
        if self.reads.ranges.len() >= MAX_READ_RANGES {
            return self.note_table_read(t, TableRead::Index);
        }
        let slot = self.table_slot(t);
        // Private memory, like the rest of the read set.
        let range = scope::outside(|| ReadRange {
            slot,
            index_id,
            lower: lower.clone(),
            upper: upper.clone(),
        });
        scope::outside(|| self.reads.ranges.push(range));
    }

    /// Notes rows of `t` read through an index at the given versions; past
    /// [`MAX_READ_ROWS`] the table is noted as read whole instead.
    pub(super) fn note_rows_read(&mut self, t: &TableHandle, rows: &[(RowId, Tid)]) {
        // Validation finds the table of recorded rows among the transaction's.
        self.table_slot(t);
        if self.reads.rows.len() + rows.len() > MAX_READ_ROWS {
            self.note_table_read(t, TableRead::Whole);
        } else {
            let table = TableKey::of(t.arc());
            self.reads.rows.extend(
                rows.iter()
                    .map(|&(rowid, tid)| (RowKey { table, rowid }, tid)),
            );
        }
    }

    /// Scans each recorded index range again for phantoms (see the module's doc).
    fn validate_ranges(&self, g: &Guard, marked: &[usize]) -> Result<()> {
        if self.reads.ranges.is_empty() {
            return Ok(());
        }
        let read: HashSet<RowKey> =
            scope::outside(|| self.reads.rows.iter().map(|&(k, _)| k).collect());
        let start = self.start_tid.get();
        let mut result = Ok(());
        for r in &self.reads.ranges {
            let t: &Arc<_> = &self.tables[r.slot];
            let own = marked.contains(&r.slot) as u32;
            if t.writers_in_flight.load(Ordering::Acquire) > own {
                result = Err(Error::Conflict(AbortReason::RangeChanged));
                break;
            }
            let idx = t.indexes();
            let Some(index) = idx.iter().find(|i| i.def.id == r.index_id) else {
                // Dropped since: the table's inserts stand for the range's.
                if t.last_insert_tid.load(Ordering::Acquire) > start {
                    result = Err(Error::Conflict(AbortReason::TableChanged));
                    break;
                }
                continue;
            };
            let table = TableKey::of(t);
            let mut phantom = false;
            index.scan_rows(
                &t.rows,
                as_ref(&r.lower),
                as_ref(&r.upper),
                false,
                g,
                |_, rowid, rec| {
                    let key = RowKey { table, rowid };
                    if read.contains(&key) || self.pending.contains_key(&key) {
                        return true;
                    }
                    // SAFETY: reached through the index under guard `g`.
                    let v = unsafe { rec.get() }.version();
                    // Being committed, or committed since the start and present: a row
                    // that arrived in the range (one present at the start was read).
                    phantom = v & LOCK_BIT != 0 || (v & ABSENT_BIT == 0 && v & TID_MASK > start);
                    !phantom
                },
            );
            if phantom {
                result = Err(Error::Conflict(AbortReason::RangeChanged));
                break;
            }
        }
        scope::outside(|| drop(read));
        result
    }

    /// Has this transaction recorded reads of `t` (serializable)?
    pub(super) fn has_read(&self, t: &TableHandle) -> bool {
        let Some(slot) = self.tables.iter().position(|x| Arc::ptr_eq(x, t.arc())) else {
            return false;
        };
        let table = TableKey::of(t.arc());
        self.reads.tables.iter().any(|&(s, _)| s == slot)
            || self.reads.rows.iter().any(|(k, _)| k.table == table)
            || self.reads.ranges.iter().any(|r| r.slot == slot)
    }

    /// Commit validation of what this transaction read (repeatable read,
    /// serializable); run before its own writers are marked in flight.
    ///
    /// `marked`: the table slots this commit counts itself in flight on (its own
    /// marks do not conflict).
    pub(super) fn validate_reads(&self, g: &Guard, marked: &[usize]) -> Result<()> {
        if !self.validates_reads() {
            return Ok(());
        }
        for &(key, tid) in &self.reads.rows {
            if self.pending.contains_key(&key) {
                continue;
            }
            let Some(t) = self.tables.iter().find(|t| TableKey::of(t) == key.table) else {
                continue;
            };
            let changed = match t.rows.get(key.rowid, g) {
                None => true,
                Some(r) => {
                    // SAFETY: reached through the row index under guard `g`.
                    let v = unsafe { r.get() }.version();
                    v & (LOCK_BIT | ABSENT_BIT) != 0 || v & TID_MASK != tid.get()
                }
            };
            if changed {
                return Err(Error::Conflict(AbortReason::ReadChanged));
            }
        }
        self.validate_ranges(g, marked)?;
        for &(slot, how) in &self.reads.tables {
            let t: &Arc<_> = &self.tables[slot];
            let last = match how {
                TableRead::Whole => t.last_write_tid.load(Ordering::Acquire),
                TableRead::Index => t.last_insert_tid.load(Ordering::Acquire),
            };
            let own = marked.contains(&slot) as u32;
            if t.writers_in_flight.load(Ordering::Acquire) > own || last > self.start_tid.get() {
                return Err(Error::Conflict(AbortReason::TableChanged));
            }
        }
        Ok(())
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(&v[..]),
        Bound::Excluded(v) => Bound::Excluded(&v[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}
