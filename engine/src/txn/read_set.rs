//! What a serializable transaction read, and its validation at
//! commit (Silo's read-set check, plus whole-table and index-range phantom checks).
//!
//! Rows read through an index are recorded with the version read, up to
//! [`MAX_READ_ROWS`]; beyond that, and for sequential scans, the table is recorded
//! instead: scanned whole (any write committed after the start conflicts) or read
//! through an index range (an insert or a key moved into the table conflicts).

use super::{RowKey, TableKey, Txn};
use crate::engine::TableHandle;
use crate::error::{AbortReason, Error, Result};
use crate::ids::{RowId, Tid};
use crate::record::{ABSENT_BIT, LOCK_BIT, TID_MASK};
use crossbeam_epoch::Guard;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Rows recorded per transaction for read validation; beyond it, tables are validated
/// as a whole.
pub(super) const MAX_READ_ROWS: usize = 100_000;

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

    /// Has this transaction recorded reads of `t` (serializable)?
    pub(super) fn has_read(&self, t: &TableHandle) -> bool {
        let Some(slot) = self.tables.iter().position(|x| Arc::ptr_eq(x, t.arc())) else {
            return false;
        };
        let table = TableKey::of(t.arc());
        self.reads.tables.iter().any(|&(s, _)| s == slot)
            || self.reads.rows.iter().any(|(k, _)| k.table == table)
    }

    /// Commit validation of what this transaction read (repeatable read,
    /// serializable); run before its own writers are marked in flight.
    pub(super) fn validate_reads(&self, g: &Guard) -> Result<()> {
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
        for &(slot, how) in &self.reads.tables {
            let t: &Arc<_> = &self.tables[slot];
            let last = match how {
                TableRead::Whole => t.last_write_tid.load(Ordering::Acquire),
                TableRead::Index => t.last_insert_tid.load(Ordering::Acquire),
            };
            if t.writers_in_flight.load(Ordering::Acquire) > 0 || last > self.start_tid.get() {
                return Err(Error::Conflict(AbortReason::TableChanged));
            }
        }
        Ok(())
    }
}
