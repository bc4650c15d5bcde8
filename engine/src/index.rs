//! Ordered indexes: a B+tree ([`crate::btree`]) for keys of fixed-width columns, a
//! `crossbeam_skiplist::base::SkipList` for others, both on the engine's own epoch
//! collector (never the per-process default one).
//!
//! Every table has the row-id index (see [`crate::rowid_index`]); key indexes over
//! memcomparable-encoded columns sit beside it.

use crate::btree::{BTree, Probe};
use crate::ids::RowId;
use crate::record::RecordPtr;
use crossbeam_epoch::{Collector, Guard};
use crossbeam_skiplist::base::SkipList;
use std::ops::Bound;

pub use crate::rowid_index::RowIdIndex;

/// Bytes one skip-list key-index entry takes for a key of `key_len` bytes (its entry is the key
/// and the row id, [`ROWID_SUFFIX`] more bytes): the expected
/// block of its skip-list node (value, key, reference count and a tower whose height
/// is 1 with probability 1/2, 2 with 1/4, ...; each size rounded up to its arena size
/// class) and the block of the bytes past [`HEAD`], if any. Used to account for index
/// memory and to report it (the towers' heights are the skip list's own).
fn key_entry_bytes(key_len: usize) -> usize {
    // Node<IndexKey, RecordPtr> without its tower: value, key, reference count.
    const NODE: usize = std::mem::size_of::<RecordPtr>()
        + std::mem::size_of::<IndexKey>()
        + std::mem::size_of::<usize>();
    static EXPECTED_NODE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let node = *EXPECTED_NODE.get_or_init(|| {
        let bytes: f64 = (1..=32)
            .map(|h| crate::arena::block_size(NODE + 8 * h) as f64 / (1u64 << h) as f64)
            .sum();
        bytes.ceil() as usize
    });
    let entry = key_len + ROWID_SUFFIX;
    let tail = if entry > HEAD {
        crate::arena::block_size(entry - HEAD)
    } else {
        0
    };
    node + tail
}

/// Length of the row-id suffix of every key-index entry.
pub const ROWID_SUFFIX: usize = 8;

/// An ordered index over memcomparable keys (see [`crate::keys`]).
///
/// Every entry is `key ++ rowid (big-endian)`, so entries are unique even when keys
/// are not, and all entries of one key are adjacent. Uniqueness of unique indexes is
/// enforced by the transactions, not by the skip list (see `txn.rs`).
///
/// A skip-list entry's value is the row's record; a B+tree entry has none, and the
/// record is the one the table's row-id index links to the entry's row id (see
/// [`KeyIndex::scan_rows`]). Rows are linked in the row-id index before their entries
/// are linked, and unlinked from it after their entries are unlinked, so an entry
/// whose row id has no record is one being removed (its row gone for every snapshot).
///
/// Invariants (maintained by commit, abort and replay):
/// * every committed, present row has the entry of its committed key, leading to its
///   record;
/// * an entry is removed only by the holder of its record's lock when the record's
///   committed key differs from it, by the commit that deletes the record (before the
///   record is retired), or by the abort of the transaction that inserted the record;
/// * other entries may be stale (a key the record had or was about to have): readers
///   recheck the key of the version they read against the entry.
pub struct KeyIndex {
    pub def: IndexDef,
    pub(crate) types: Vec<crate::catalog::ColumnType>,
    entries: Entries,
    /// Full key -> row id, for point lookups in a unique index (see
    /// [`crate::point_cache`]); unused by other indexes.
    pub(crate) point: crate::point_cache::PointCache,
    /// What the last ANALYZE found (see [`crate::stats`]).
    pub(crate) stats: crate::stats::IndexStats,
    /// Built by a CREATE INDEX whose transaction has not committed yet (see
    /// [`KeyIndex::is_committed`]). Writers maintain the index all the same; only
    /// planners of other transactions leave it alone, as PostgreSQL's catalog
    /// snapshot hides an index whose creator has not committed.
    uncommitted: std::sync::atomic::AtomicBool,
}

impl KeyIndex {
    pub(crate) fn new(
        def: IndexDef,
        table: &crate::catalog::TableDef,
        collector: &Collector,
    ) -> Self {
        let types: Vec<crate::catalog::ColumnType> = def
            .columns
            .iter()
            .map(|&c| table.columns[c as usize].ty)
            .collect();
        // Entries of bounded length (every key column of a fixed-width type) go to a
        // B+tree, others to a skip list.
        let max_entry = types
            .iter()
            .map(|&t| crate::keys::max_encoded_len(t))
            .sum::<Option<usize>>()
            .map(|n| n + ROWID_SUFFIX)
            .filter(|&n| BTree::fits(n));
        let entries = match max_entry {
            Some(n) => Entries::Tree(BTree::new(n)),
            None => Entries::List(SkipList::new(collector.clone())),
        };
        KeyIndex {
            def,
            types,
            entries,
            point: crate::point_cache::PointCache::new(),
            stats: crate::stats::IndexStats::default(),
            uncommitted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Has the transaction that created the index committed (or was it made by
    /// recovery, a TRUNCATE or an ALTER, whose replacement tables other transactions
    /// see only once committed)?
    pub fn is_committed(&self) -> bool {
        !self.uncommitted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the index as created by a transaction still running (before it is
    /// published).
    pub(crate) fn mark_uncommitted(&self) {
        self.uncommitted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Its creating transaction commits.
    pub fn mark_committed(&self) {
        self.uncommitted
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Encodes the key of `row` into `out` (cleared first); returns true if a key
    /// column is NULL (such keys never conflict in a unique index).
    pub fn key_of(
        &self,
        layout: &crate::row::RowLayout,
        row: &[u8],
        out: &mut Vec<u8>,
    ) -> crate::error::Result<bool> {
        out.clear();
        let mut null = false;
        for (&c, &ty) in self.def.columns.iter().zip(&self.types) {
            let v = layout.get(row, c as usize);
            null |= v.is_none();
            crate::keys::encode_value(ty, v, out)?;
        }
        Ok(null)
    }

    /// Does `row` have key `key` in this index? (`buf` is scratch space.)
    pub fn key_is(
        &self,
        layout: &crate::row::RowLayout,
        row: &[u8],
        key: &[u8],
        buf: &mut Vec<u8>,
    ) -> crate::error::Result<bool> {
        self.key_of(layout, row, buf)?;
        Ok(buf[..] == *key)
    }

    fn entry(key: &[u8], rowid: RowId) -> IndexKey {
        let mut stack = [0u8; 64];
        let n = key.len() + ROWID_SUFFIX;
        if n <= stack.len() {
            stack[..key.len()].copy_from_slice(key);
            stack[key.len()..n].copy_from_slice(&rowid.get().to_be_bytes());
            IndexKey::new(&stack[..n])
        } else {
            let mut v = Vec::with_capacity(n);
            v.extend_from_slice(key);
            v.extend_from_slice(&rowid.get().to_be_bytes());
            IndexKey::new(&v)
        }
    }

    /// Links entry (`key`, `rowid`) -> `rec` (a B+tree keeps no record: `rec` must be
    /// linked to `rowid` in the row-id index already) unless it exists (and, in a
    /// unique index whose point cache is in use, remembers it there).
    pub fn insert(&self, key: &[u8], rowid: RowId, rec: RecordPtr, guard: &Guard) {
        match &self.entries {
            Entries::List(list) => list
                .get_or_insert(Self::entry(key, rowid), rec, guard)
                .release(guard),
            Entries::Tree(tree) => {
                tree.insert(&Probe::with_suffix(key, rowid.get()), guard);
            }
        }
        if self.def.unique {
            let h = crate::point_cache::hash_key(key);
            self.point.put_if_ready(h, rowid, self.len(), guard);
        }
    }

    /// Unlinks entry (`key`, `rowid`); returns whether it was there.
    pub fn remove(&self, key: &[u8], rowid: RowId, guard: &Guard) -> bool {
        match &self.entries {
            Entries::List(list) => {
                if let Some(r) = list.remove(&Self::entry(key, rowid), guard) {
                    r.release(guard);
                    true
                } else {
                    false
                }
            }
            Entries::Tree(tree) => tree.remove(&Probe::with_suffix(key, rowid.get()), guard),
        }
    }

    /// Is entry (`key`, `rowid`) there?
    pub fn contains(&self, key: &[u8], rowid: RowId, guard: &Guard) -> bool {
        match &self.entries {
            Entries::List(list) => list.get(&Self::entry(key, rowid), guard).is_some(),
            Entries::Tree(tree) => tree.contains(&Probe::with_suffix(key, rowid.get()), guard),
        }
    }

    /// May the index hold an entry at or after `key` (false: every entry is below
    /// it)? Cheap: a B+tree keeps an upper bound of its entries' first words; a skip
    /// list always answers true.
    pub fn may_hold_at_or_after(&self, key: &[u8]) -> bool {
        match &self.entries {
            Entries::Tree(tree) => tree.may_hold_at_or_after(&Probe::new(key)),
            Entries::List(_) => true,
        }
    }

    /// Visits entries in `[lower, upper)` (by whole entry bytes) in order, or in
    /// reverse order, until `f` returns false. `f` gets the key (without the row-id
    /// suffix) and the row id.
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        guard: &Guard,
        mut f: impl FnMut(&[u8], RowId) -> bool,
    ) {
        self.scan_entries(lower, upper, reverse, guard, |k, rid, _| f(k, rid));
    }

    /// As [`KeyIndex::scan`], with each entry's record: from the skip list's entry,
    /// or from `rows` (the table's row-id index) for a B+tree entry; an entry whose
    /// row id has no record there is being removed and is skipped.
    pub fn scan_rows(
        &self,
        rows: &RowIdIndex,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        guard: &Guard,
        mut f: impl FnMut(&[u8], RowId, RecordPtr) -> bool,
    ) {
        self.scan_entries(lower, upper, reverse, guard, |k, rid, rec| {
            match rec.or_else(|| rows.get(rid, guard)) {
                Some(rec) => f(k, rid, rec),
                None => true,
            }
        });
    }

    /// The walk of [`KeyIndex::scan`]: `f` gets the record of a skip-list entry, None
    /// for a B+tree entry.
    fn scan_entries(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        guard: &Guard,
        mut f: impl FnMut(&[u8], RowId, Option<RecordPtr>) -> bool,
    ) {
        fn split(k: &[u8]) -> (&[u8], RowId) {
            let (key, rid) = k.split_at(k.len() - ROWID_SUFFIX);
            (
                key,
                RowId(u64::from_be_bytes(rid.try_into().expect("suffix"))),
            )
        }
        let list = match &self.entries {
            Entries::List(list) => list,
            Entries::Tree(tree) => {
                let mut buf = [0u8; crate::btree::MAX_WORDS * 8];
                tree.scan(
                    lower.map(Probe::new),
                    upper.map(Probe::new),
                    reverse,
                    guard,
                    |e| {
                        let (key, rowid) = split(e.bytes(&mut buf));
                        f(key, rowid, None)
                    },
                );
                return;
            }
        };
        let (mut stack, mut heap) = ([0u8; 64], Vec::new());
        let mut visit = |k: &IndexKey, v: RecordPtr| {
            let (key, rowid) = split(k.bytes(&mut stack, &mut heap));
            f(key, rowid, Some(v))
        };
        let bound = |b: Bound<&[u8]>| match b {
            Bound::Included(x) => Bound::Included(IndexKey::new(x)),
            Bound::Excluded(x) => Bound::Excluded(IndexKey::new(x)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let range = list.range::<IndexKey, _>((bound(lower), bound(upper)), guard);
        if reverse {
            for e in range.rev() {
                if !visit(e.key(), *e.value()) {
                    break;
                }
            }
        } else {
            for e in range {
                if !visit(e.key(), *e.value()) {
                    break;
                }
            }
        }
    }

    /// Bytes accounted for one entry with a key of `key_len` bytes (the same figure
    /// when it is linked and when it is unlinked): see [`key_entry_bytes`] and
    /// [`BTree::entry_bytes`].
    pub fn entry_bytes(&self, key_len: usize) -> usize {
        match &self.entries {
            Entries::List(_) => key_entry_bytes(key_len),
            Entries::Tree(tree) => tree.entry_bytes(),
        }
    }

    /// Bytes the entries take now, if known exactly (a B+tree's nodes); None for a
    /// skip list (estimate them with [`KeyIndex::entry_bytes`]).
    pub fn entries_bytes(&self) -> Option<usize> {
        match &self.entries {
            Entries::List(_) => None,
            Entries::Tree(tree) => Some(tree.bytes()),
        }
    }

    /// Does this index keep its entries in a B+tree (rather than a skip list)?
    pub fn is_btree(&self) -> bool {
        matches!(self.entries, Entries::Tree(_))
    }

    /// Shared memory one removal of an entry may take until the epoch moves on (a
    /// deferred destruction): every skip-list node; a B+tree node only once it is
    /// empty, which happens at most once per node: the tree's nodes per entry (at
    /// least an eighth; a tree thinned by deletes has up to one node per entry).
    pub(crate) fn removal_reserve(&self) -> usize {
        use crate::garbage::BYTES_PER_DEFERRED as D;
        match &self.entries {
            Entries::List(_) => D,
            Entries::Tree(tree) => (D * tree.nodes())
                .div_ceil(tree.len().max(1))
                .clamp(D.div_ceil(8), D),
        }
    }

    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::List(list) => list.len(),
            Entries::Tree(tree) => tree.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a key index keeps its entries.
// (The skip list's head tower is inline: both kinds live once per index.)
#[allow(clippy::large_enum_variant)]
enum Entries {
    /// Entries of any length.
    List(SkipList<IndexKey, RecordPtr>),
    /// Entries of a bounded length (see [`crate::btree`]).
    Tree(BTree),
}

/// Bytes of an index entry kept inline in the skip-list node (an int8 key and its row
/// id fit).
const HEAD: usize = 24;

/// An index entry's bytes, the first [`HEAD`] inline (as big-endian words, so that
/// comparing words compares bytes) and the rest boxed. A point lookup compares keys
/// without leaving the nodes it walks (no pointer to follow for short keys), and
/// short entries need no allocation of their own.
///
/// Order = byte-string order: heads compare as zero-padded bytes; with equal heads the
/// tails (bytes past the head) compare, then the lengths (equal heads and empty tails
/// mean one string is the other plus zero padding).
///
/// The tail is a thin pointer (its length is `len - HEAD`): 40 bytes per key instead
/// of 48 with a boxed slice, and a skip-list node of height 1 fits 64 bytes.
pub(crate) struct IndexKey {
    head: [u64; HEAD / 8],
    len: u32,
    /// The bytes past [`HEAD`] (`len - HEAD` of them, allocated as a boxed slice), or
    /// null when there are none. Owned by the key; never changed after `new`.
    tail: *mut u8,
}

// SAFETY: the tail is owned by the key and immutable; the key is as shareable as the
// bytes it holds.
unsafe impl Send for IndexKey {}
// SAFETY: as above.
unsafe impl Sync for IndexKey {}

impl Drop for IndexKey {
    fn drop(&mut self) {
        let n = self.tail_len();
        if n > 0 {
            // SAFETY: `tail` came from `Box::<[u8]>::into_raw` of `n` bytes in `new`,
            // and only this key owns it.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.tail, n)) });
        }
    }
}

impl Clone for IndexKey {
    fn clone(&self) -> Self {
        IndexKey {
            head: self.head,
            len: self.len,
            tail: Self::own_tail(self.tail()),
        }
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, o: &Self) -> bool {
        self.head == o.head && self.len == o.len && self.tail() == o.tail()
    }
}

impl Eq for IndexKey {}

impl IndexKey {
    pub(crate) fn new(bytes: &[u8]) -> IndexKey {
        let mut padded = [0u8; HEAD];
        let n = bytes.len().min(HEAD);
        padded[..n].copy_from_slice(&bytes[..n]);
        let mut head = [0u64; HEAD / 8];
        for (i, w) in head.iter_mut().enumerate() {
            *w = u64::from_be_bytes(padded[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        IndexKey {
            head,
            len: bytes.len() as u32,
            tail: Self::own_tail(bytes.get(HEAD..).unwrap_or(&[])),
        }
    }

    /// A copy of `tail` in its own allocation (null if empty).
    fn own_tail(tail: &[u8]) -> *mut u8 {
        if tail.is_empty() {
            return std::ptr::null_mut();
        }
        Box::<[u8]>::into_raw(tail.into()) as *mut u8
    }

    fn tail_len(&self) -> usize {
        (self.len as usize).saturating_sub(HEAD)
    }

    fn tail(&self) -> &[u8] {
        let n = self.tail_len();
        if n == 0 {
            return &[];
        }
        // SAFETY: `tail` holds `n` bytes owned by this key (see the field).
        unsafe { std::slice::from_raw_parts(self.tail, n) }
    }

    /// The bytes, in `stack` when they fit, else in `heap`.
    fn bytes<'a>(&self, stack: &'a mut [u8; 64], heap: &'a mut Vec<u8>) -> &'a [u8] {
        let len = self.len as usize;
        let mut padded = [0u8; HEAD];
        for (i, w) in self.head.iter().enumerate() {
            padded[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
        }
        if len <= stack.len() {
            let n = len.min(HEAD);
            stack[..n].copy_from_slice(&padded[..n]);
            stack[n..len].copy_from_slice(self.tail());
            &stack[..len]
        } else {
            heap.clear();
            heap.extend_from_slice(&padded);
            heap.extend_from_slice(self.tail());
            heap
        }
    }
}

impl Ord for IndexKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.head
            .cmp(&o.head)
            .then_with(|| self.tail().cmp(o.tail()))
            .then_with(|| self.len.cmp(&o.len))
    }
}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The definition of a key index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Engine-wide index id (not a PostgreSQL OID: PostgreSQL has no catalog entry).
    pub id: u32,
    pub name: String,
    /// Positions of the key columns in the table, in key order.
    pub columns: Vec<u16>,
    pub unique: bool,
    pub primary: bool,
}

/// Most key columns an index may have (PostgreSQL's INDEX_MAX_KEYS).
pub const MAX_INDEX_COLUMNS: usize = 32;

impl IndexDef {
    pub fn validate(&self, table: &crate::catalog::TableDef) -> crate::error::Result<()> {
        use crate::error::Error;
        if self.name.len() > crate::catalog::MAX_NAME_LEN {
            return Err(Error::NameTooLong {
                name: self.name.clone(),
                len: self.name.len(),
                max: crate::catalog::MAX_NAME_LEN,
            });
        }
        if self.columns.is_empty() || self.columns.len() > MAX_INDEX_COLUMNS {
            return Err(Error::TooManyKeyColumns {
                count: self.columns.len(),
                max: MAX_INDEX_COLUMNS,
            });
        }
        for &c in &self.columns {
            let Some(col) = table.columns.get(c as usize) else {
                return Err(Error::Corrupt(format!("index column {c} out of range")));
            };
            if !crate::keys::indexable(col.ty) {
                return Err(Error::NotIndexable {
                    column: col.name.clone(),
                    type_name: col.ty.name(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IndexKey;
    use proptest::prelude::*;

    fn bytes(k: &IndexKey) -> Vec<u8> {
        let (mut stack, mut heap) = ([0u8; 64], Vec::new());
        k.bytes(&mut stack, &mut heap).to_vec()
    }

    #[test]
    fn entries_take_less_than_the_boxed_tail_layout() {
        // 24 head bytes, the length and a thin tail pointer.
        assert_eq!(std::mem::size_of::<IndexKey>(), 40);
        // A node of height 1 (value, key, count, one tower pointer) fits 64 bytes; the
        // expected node over all heights stays under 80.
        assert!(
            super::key_entry_bytes(5) < 80,
            "{}",
            super::key_entry_bytes(5)
        );
        // An int8 key and its row id fit the head; a 32-byte key's last 16 do not.
        assert_eq!(super::key_entry_bytes(9), super::key_entry_bytes(0));
        assert_eq!(
            super::key_entry_bytes(32) - super::key_entry_bytes(5),
            crate::arena::block_size(16)
        );
    }

    /// A B+tree entry leads to the record the row-id index links to its row id; an
    /// entry whose row id has none (its row being removed) is skipped.
    #[test]
    fn btree_entries_find_their_records_through_the_row_id_index() {
        use super::{IndexDef, KeyIndex, RowIdIndex};
        use crate::catalog::{ColumnDef, ColumnType, TableDef};
        use crate::ids::RowId;
        use crate::record::{Record, RecordPtr};
        use std::ops::Bound;
        let c = crossbeam_epoch::Collector::new();
        let h = c.register();
        let g = h.pin();
        let table = TableDef {
            name: "t".into(),
            columns: vec![ColumnDef::new("id", ColumnType::Int4, false)],
            database: 0,
        };
        let def = IndexDef {
            id: 1,
            name: "t_pkey".into(),
            columns: vec![0],
            unique: true,
            primary: true,
        };
        let index = KeyIndex::new(def, &table, &c);
        assert!(index.is_btree());
        let rows = RowIdIndex::new();
        let recs: Vec<RecordPtr> = (0..3)
            .map(|_| RecordPtr(Box::into_raw(Record::new_absent())))
            .collect();
        for (i, &rec) in recs.iter().enumerate() {
            let rowid = RowId(10 + i as u64);
            rows.insert(rowid, rec, &g);
            index.insert(&[1, 0, 0, 0, i as u8], rowid, rec, &g);
        }
        // Row 11 is being removed: unlinked from the row-id index, its entry not yet.
        assert_eq!(rows.remove(RowId(11), &g), Some(recs[1]));
        let mut seen = Vec::new();
        index.scan_rows(
            &rows,
            Bound::Unbounded,
            Bound::Unbounded,
            false,
            &g,
            |k, rid, rec| {
                seen.push((k.to_vec(), rid, rec));
                true
            },
        );
        assert_eq!(
            seen,
            vec![
                (vec![1, 0, 0, 0, 0], RowId(10), recs[0]),
                (vec![1, 0, 0, 0, 2], RowId(12), recs[2]),
            ]
        );
        // The entry-only scan still has all three.
        let mut n = 0;
        index.scan(Bound::Unbounded, Bound::Unbounded, true, &g, |_, _| {
            n += 1;
            true
        });
        assert_eq!(n, 3);
        for rec in recs {
            // SAFETY: the test's own records, reachable by nothing else any more.
            drop(unsafe { Box::from_raw(rec.0 as *mut Record) });
        }
    }

    proptest! {
        #[test]
        fn index_keys_order_like_their_bytes(
            a in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..80),
            b in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..80),
        ) {
            let (ka, kb) = (IndexKey::new(&a), IndexKey::new(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(&bytes(&ka), &a);
            // A clone owns its own copy of the tail: it outlives the original.
            let kc = ka.clone();
            drop(ka);
            prop_assert_eq!(kc.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(bytes(&kc), a);
        }

        #[test]
        fn shared_prefixes_and_zero_padding(p in proptest::collection::vec(any::<u8>(), 0..40), n in 0usize..30, m in 0usize..30) {
            // Strings that differ only by trailing zeros are the hard case.
            let mut a = p.clone();
            a.extend(std::iter::repeat_n(0u8, n));
            let mut b = p;
            b.extend(std::iter::repeat_n(0u8, m));
            prop_assert_eq!(IndexKey::new(&a).cmp(&IndexKey::new(&b)), a.cmp(&b));
        }
    }
}
