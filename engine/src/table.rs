//! A memory table: its definition, row layout, indexes and statistics.

use crate::catalog::TableDef;
use crate::index::RowIdIndex;
use crate::row::RowLayout;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct Table {
    /// PostgreSQL's relation OID.
    pub oid: u32,
    pub def: TableDef,
    pub layout: RowLayout,
    /// The pseudo-primary key.
    pub(crate) rows: RowIdIndex,
    next_rowid: AtomicU64,
    /// Committed live rows.
    live_rows: AtomicI64,
    /// Bytes of committed row data (payloads and buffer headers).
    data_bytes: AtomicI64,
}

/// Figures about one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub rows: i64,
    pub data_bytes: i64,
    pub index_entries: usize,
}

impl Table {
    pub(crate) fn new(oid: u32, def: TableDef, collector: &crossbeam_epoch::Collector) -> Self {
        let layout = RowLayout::new(&def);
        Table {
            oid,
            def,
            layout,
            rows: RowIdIndex::new(collector),
            next_rowid: AtomicU64::new(1),
            live_rows: AtomicI64::new(0),
            data_bytes: AtomicI64::new(0),
        }
    }

    pub(crate) fn next_rowid(&self) -> u64 {
        self.next_rowid.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes sure new row ids are above `rowid` (recovery).
    pub(crate) fn observe_rowid(&self, rowid: u64) {
        self.next_rowid.fetch_max(rowid + 1, Ordering::Relaxed);
    }

    pub(crate) fn account(&self, rows: i64, bytes: i64) {
        if rows != 0 {
            self.live_rows.fetch_add(rows, Ordering::Relaxed);
        }
        if bytes != 0 {
            self.data_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            rows: self.live_rows.load(Ordering::Relaxed),
            data_bytes: self.data_bytes.load(Ordering::Relaxed),
            index_entries: self.rows.len(),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the last reference is gone (we are in Drop of the last Arc), so no
        // transaction or scan can reach the records.
        unsafe { self.rows.free_all_records() };
    }
}
