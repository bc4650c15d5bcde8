//! Ordered indexes over `crossbeam_skiplist::base::SkipList`, built on the engine's own
//! epoch collector (never the per-process default one).
//!
//! Today a table has one index: the pseudo-primary key, an internal 8-byte row id.
//! Key indexes over memcomparable-encoded columns plug in beside it.

use crate::record::RecordPtr;
use crossbeam_epoch::{Collector, Guard};
use crossbeam_skiplist::base::SkipList;
use std::ops::Bound;

/// The row-id index: row id -> record.
pub struct RowIdIndex {
    list: SkipList<u64, RecordPtr>,
}

impl RowIdIndex {
    pub fn new(collector: &Collector) -> Self {
        RowIdIndex {
            list: SkipList::new(collector.clone()),
        }
    }

    pub fn insert(&self, rowid: u64, rec: RecordPtr, guard: &Guard) {
        self.list.insert(rowid, rec, guard).release(guard);
    }

    pub fn get(&self, rowid: u64, guard: &Guard) -> Option<RecordPtr> {
        self.list.get(&rowid, guard).map(|e| *e.value())
    }

    /// Unlinks `rowid`; the caller retires the record through the collector.
    pub fn remove(&self, rowid: u64, guard: &Guard) -> Option<RecordPtr> {
        self.list.remove(&rowid, guard).map(|e| {
            let r = *e.value();
            e.release(guard);
            r
        })
    }

    /// Visits entries with row id greater than `after` in order until `f` returns false.
    pub fn scan_after(
        &self,
        after: Option<u64>,
        guard: &Guard,
        mut f: impl FnMut(u64, RecordPtr) -> bool,
    ) {
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        for e in self.list.range::<u64, _>((lower, Bound::Unbounded), guard) {
            if !f(*e.key(), *e.value()) {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Frees every record still linked. For the owner's `Drop` only.
    ///
    /// # Safety
    /// No other thread or process may reach this index or its records any more.
    pub unsafe fn free_all_records(&mut self) {
        // SAFETY: exclusive access (caller's contract), so no guard is needed.
        let guard = unsafe { crossbeam_epoch::unprotected() };
        for e in self.list.iter(guard) {
            // SAFETY: the record is reachable only through this index (contract).
            unsafe { crate::record::record_free(e.value().0) };
        }
    }
}
