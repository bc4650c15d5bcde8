//! The write set's index: row -> position of its entry, iterated in key order (commit's
//! lock order; see [`RowKey`]).
//!
//! Rows a transaction inserts get increasing row ids, so most keys arrive in ascending
//! order: those are appended to a sorted vector (`run`); a key below the largest one so
//! far goes to a B-tree map (`rest`). Lookups try both; iteration merges them. A
//! million-row insert appends a million keys to a vector instead of descending a
//! B-tree for each, and commit's walks of the write set read a vector.
//!
//! Invariants: `run` is strictly ascending; every key of `rest` is below the last key
//! of `run` (`rest` only takes keys below it, and it only grows), so no key is in both.

use super::RowKey;
use std::collections::btree_map::Range;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::RangeInclusive;

#[derive(Default)]
pub(super) struct PendingMap {
    run: Vec<(RowKey, usize)>,
    rest: BTreeMap<RowKey, usize>,
}

impl PendingMap {
    pub(super) fn new() -> PendingMap {
        PendingMap::default()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.run.is_empty() && self.rest.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.run = Vec::new();
        self.rest.clear();
    }

    fn run_position(&self, key: &RowKey) -> Result<usize, usize> {
        match self.run.last() {
            // (The common probe: a key past the run.)
            Some((last, _)) if last < key => Err(self.run.len()),
            _ => self.run.binary_search_by(|(k, _)| k.cmp(key)),
        }
    }

    pub(super) fn get(&self, key: &RowKey) -> Option<&usize> {
        match self.run_position(key) {
            Ok(at) => Some(&self.run[at].1),
            // Past the run: past `rest` too.
            Err(at) if at == self.run.len() && at > 0 => None,
            Err(_) => self.rest.get(key),
        }
    }

    /// Number of keys (the run and the map hold different keys).
    pub(super) fn len(&self) -> usize {
        self.run.len() + self.rest.len()
    }

    pub(super) fn contains_key(&self, key: &RowKey) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`'s value (replacing an earlier one).
    pub(super) fn insert(&mut self, key: RowKey, value: usize) {
        match self.run_position(&key) {
            Ok(at) => self.run[at].1 = value,
            // Past every key (those of `rest` are below the run's last).
            Err(at) if at == self.run.len() => {
                if self.run.len() == self.run.capacity() {
                    // Doubling (as push would), with the new room mapped in one call
                    // rather than faulted a page at a time (a million-row insert: most
                    // of its page faults were here).
                    self.run.reserve(self.run.len().max(4));
                    crate::pages::populate_spare(&self.run);
                }
                self.run.push((key, value))
            }
            Err(_) => {
                self.rest.insert(key, value);
            }
        }
    }

    /// The values in key order.
    pub(super) fn values(&self) -> impl Iterator<Item = &usize> {
        Entries::new(&self.run, self.rest.range(..)).map(|(_, v)| v)
    }

    /// The entries with keys in `range`, in key order.
    pub(super) fn range(
        &self,
        range: RangeInclusive<RowKey>,
    ) -> impl Iterator<Item = (&RowKey, &usize)> {
        let from = self.run.partition_point(|(k, _)| k < range.start());
        let to = self.run.partition_point(|(k, _)| k <= range.end());
        Entries::new(&self.run[from..to.max(from)], self.rest.range(range))
    }
}

/// A part of the run and of the rest, merged by key.
struct Entries<'a> {
    run: Peekable<std::slice::Iter<'a, (RowKey, usize)>>,
    rest: Peekable<Range<'a, RowKey, usize>>,
}

impl<'a> Entries<'a> {
    fn new(run: &'a [(RowKey, usize)], rest: Range<'a, RowKey, usize>) -> Self {
        Entries {
            run: run.iter().peekable(),
            rest: rest.peekable(),
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a RowKey, &'a usize);

    fn next(&mut self) -> Option<Self::Item> {
        let from_run = match (self.run.peek(), self.rest.peek()) {
            (Some((a, _)), Some((b, _))) => a < *b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if from_run {
            self.run.next().map(|(k, v)| (k, v))
        } else {
            self.rest.next()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RowId;
    use crate::txn::TableKey;
    use proptest::prelude::*;

    fn key(t: usize, r: u64) -> RowKey {
        RowKey {
            table: TableKey(t),
            rowid: RowId(r),
        }
    }

    proptest! {
        /// Same answers and the same order as a B-tree map, for keys in runs (as
        /// inserts make them), out of order and repeated.
        #[test]
        fn behaves_like_a_btree_map(
            ops in proptest::collection::vec((0usize..3, 0u64..40, any::<bool>(), 1usize..6), 0..60)
        ) {
            let mut m = PendingMap::new();
            let mut model = BTreeMap::new();
            let mut n = 0;
            for (t, r, run, len) in ops {
                // A run of ascending row ids from (t, r), or a single key.
                for j in 0..if run { len as u64 } else { 1 } {
                    let k = key(t, r + j);
                    m.insert(k, n);
                    model.insert(k, n);
                    n += 1;
                }
                prop_assert_eq!(m.is_empty(), model.is_empty());
                prop_assert_eq!(m.len(), model.len());
                for t in 0..3 {
                    for r in 0..48 {
                        prop_assert_eq!(m.get(&key(t, r)), model.get(&key(t, r)));
                    }
                }
                let got: Vec<usize> = m.values().copied().collect();
                let want: Vec<usize> = model.values().copied().collect();
                prop_assert_eq!(got, want);
                for t in 0..3 {
                    let all = key(t, 0)..=key(t, u64::MAX);
                    let got: Vec<(RowKey, usize)> = m.range(all.clone()).map(|(k, v)| (*k, *v)).collect();
                    let want: Vec<(RowKey, usize)> = model.range(all).map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(got, want);
                    let some = key(t, 5)..=key(t, 20);
                    let got: Vec<(RowKey, usize)> = m.range(some.clone()).map(|(k, v)| (*k, *v)).collect();
                    let want: Vec<(RowKey, usize)> = model.range(some).map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(got, want);
                }
            }
            m.clear();
            prop_assert!(m.is_empty());
            prop_assert_eq!(m.values().count(), 0);
        }
    }
}
