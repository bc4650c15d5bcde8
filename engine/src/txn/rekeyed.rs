//! Rows whose index keys this transaction changed.
//!
//! An update that gives a committed row another key in some index does not touch the
//! index until commit (phase "link new keys" adds the entry, "install" removes the
//! old one), so until then the transaction's own index scans and unique checks must
//! look at such rows separately. [`Rekeyed`] remembers them, with enough detail that
//! neither a unique check nor an index scan walks every rekeyed row of the table (a
//! big key-changing UPDATE would be quadratic):
//! * per index, the rows whose key in that index changed (index scans);
//! * hashes of the new unique keys given (a unique check looks at the rekeyed rows
//!   only if the key's hash is there);
//! * tables whose rekeyed rows were never tracked per index (an index created after
//!   the updates): always look at all of their rekeyed rows.
//!
//! Nothing here shrinks before the transaction ends, so after a savepoint rollback it
//! stays a superset of the truth (callers check each row's pending version).

use super::{RowKey, TableKey};
use crate::ids::RowId;
use std::collections::{BTreeSet, HashSet};

#[derive(Default)]
pub(super) struct Rekeyed {
    /// Every rekeyed row.
    rows: BTreeSet<RowKey>,
    /// (table, index id, row id) whose key in that index changed.
    in_index: BTreeSet<(TableKey, u32, RowId)>,
    /// (table, index id, hash of a new unique key).
    unique_keys: HashSet<(TableKey, u32, u64)>,
    untracked: BTreeSet<TableKey>,
}

/// Rekeyed rows of one table as seen by one index (see [`Rekeyed::rows_in`]).
pub(super) enum RowsIn<A, B> {
    All(A),
    Index(B),
}

impl<A: Iterator<Item = RowId>, B: Iterator<Item = RowId>> Iterator for RowsIn<A, B> {
    type Item = RowId;
    fn next(&mut self) -> Option<RowId> {
        match self {
            RowsIn::All(a) => a.next(),
            RowsIn::Index(b) => b.next(),
        }
    }
}

fn key_hash(key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl Rekeyed {
    /// Row `rowid` of `table` has a pending version with another key in `index_id`.
    pub fn note_key_change(&mut self, table: TableKey, index_id: u32, rowid: RowId) {
        self.in_index.insert((table, index_id, rowid));
    }

    /// A rekeyed row of `table` was given unique key `key` in `index_id`.
    pub fn note_unique_key(&mut self, table: TableKey, index_id: u32, key: &[u8]) {
        self.unique_keys.insert((table, index_id, key_hash(key)));
    }

    /// Row `rowid` of `table` is rekeyed (in some index).
    pub fn note_row(&mut self, table: TableKey, rowid: RowId) {
        self.rows.insert(RowKey { table, rowid });
    }

    /// Rows of `table` may have keys in a new index that differ from their committed
    /// ones, untracked per index.
    pub fn note_untracked(&mut self, table: TableKey, rows: impl IntoIterator<Item = RowKey>) {
        self.untracked.insert(table);
        self.rows.extend(rows);
    }

    pub fn contains(&self, row: RowKey) -> bool {
        self.rows.contains(&row)
    }

    /// May a rekeyed row of `table` hold `key` in unique index `index_id`?
    pub fn may_hold_key(&self, table: TableKey, index_id: u32, key: &[u8]) -> bool {
        // (Most transactions rekey nothing: no hash of the key then.)
        (!self.untracked.is_empty() && self.untracked.contains(&table))
            || (!self.unique_keys.is_empty()
                && self.unique_keys.contains(&(table, index_id, key_hash(key))))
    }

    /// Every rekeyed row of `table`.
    pub fn rows_of(&self, table: TableKey) -> impl Iterator<Item = RowId> + '_ {
        self.rows.range(RowKey::all_of(table)).map(|r| r.rowid)
    }

    /// The rekeyed rows of `table` whose key in `index_id` may differ from their
    /// committed entry.
    pub fn rows_in(
        &self,
        table: TableKey,
        index_id: u32,
    ) -> RowsIn<impl Iterator<Item = RowId> + '_, impl Iterator<Item = RowId> + '_> {
        if self.untracked.contains(&table) {
            RowsIn::All(self.rows_of(table))
        } else {
            RowsIn::Index(
                self.in_index
                    .range((table, index_id, RowId(0))..=(table, index_id, RowId(u64::MAX)))
                    .map(|&(_, _, r)| r),
            )
        }
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.in_index.clear();
        self.unique_keys.clear();
        self.untracked.clear();
    }
}
