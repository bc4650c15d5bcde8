//! The groups of a GROUP BY computed in memory: a hash table of the backend, keyed by
//! the grouping columns' bytes, each group with its aggregates' running state.

use super::accumulators::Acc;
use memfdw_engine::fnv::FnvBuild;
use memfdw_engine::RowLayout;

/// The running aggregates: one set, or one per group of a GROUP BY.
///
/// A group's key is its columns' bytes as the rows store them, each as a NULL mark (0)
/// or a value mark (1), its length (u32) and its bytes: `groupable` admits only types
/// whose equal values have equal bytes, once a `character(n)` value's trailing blanks
/// are trimmed (rows written before memory tables trimmed them hold them). Rows are
/// added inside the engine's scan (see `Txn::scan_visit`), which must not allocate
/// shared memory: the key buffer was allocated here, so growing it keeps it private,
/// and a new group is entered outside the engine's scope.
pub(super) struct Groups {
    /// The grouping columns, each with whether it is a `character(n)` column.
    pub(super) cols: Vec<(usize, bool)>,
    pub(super) template: Vec<Acc>,
    /// Bytes the groups take (about), and the most they may: past it the pass fails
    /// with an error rather than take the backend's memory (PostgreSQL's hash
    /// aggregate would spill to disk).
    pub(super) bytes: usize,
    pub(super) limit: usize,
    pub(super) overflow: bool,
    map: std::collections::HashMap<Vec<u8>, usize, FnvBuild>,
    /// Each group's key and aggregates, in the order the groups were met.
    pub(super) states: Vec<(Vec<u8>, Vec<Acc>)>,
    key: Vec<u8>,
}

impl Groups {
    /// Bytes of a group besides its key (twice) and aggregates: the hash table's entry
    /// and the allocations' overheads.
    pub(super) const ENTRY_BYTES: usize = 96;

    pub(super) fn new(cols: Vec<(usize, bool)>, template: Vec<Acc>) -> Groups {
        let states = if cols.is_empty() {
            // Without GROUP BY there is one row, even for no input.
            vec![(Vec::new(), template.clone())]
        } else {
            Vec::new()
        };
        Groups {
            cols,
            template,
            bytes: 0,
            limit: usize::MAX,
            overflow: false,
            map: Default::default(),
            states,
            key: Vec::with_capacity(256),
        }
    }

    #[inline]
    pub(super) fn add(&mut self, layout: &RowLayout, row: &[u8]) {
        if self.overflow {
            // The pass fails at its end.
            return;
        }
        let i = if self.cols.is_empty() {
            0
        } else {
            self.key.clear();
            for &(c, blank) in &self.cols {
                match layout.get(row, c) {
                    None => self.key.push(0),
                    Some(b) => {
                        let b = if blank {
                            memfdw_engine::keys::trim_blanks(b)
                        } else {
                            b
                        };
                        self.key.push(1);
                        self.key.extend_from_slice(&(b.len() as u32).to_le_bytes());
                        self.key.extend_from_slice(b);
                    }
                }
            }
            match self.map.get(self.key.as_slice()) {
                Some(&i) => i,
                None => {
                    self.bytes += Self::ENTRY_BYTES
                        + 2 * self.key.len()
                        + std::mem::size_of::<Acc>() * self.template.len();
                    if self.bytes > self.limit {
                        self.overflow = true;
                        return;
                    }
                    memfdw_engine::scope::outside(|| {
                        let i = self.states.len();
                        self.states.push((self.key.clone(), self.template.clone()));
                        self.map.insert(self.key.clone(), i);
                        i
                    })
                }
            }
        };
        for a in self.states[i].1.iter_mut() {
            a.add(layout, row);
        }
    }
}

impl Groups {
    /// Adds `other`'s groups (the same aggregates over other rows).
    pub(super) fn merge(&mut self, other: Groups) {
        self.overflow |= other.overflow;
        if self.cols.is_empty() {
            for (a, b) in self.states[0].1.iter_mut().zip(&other.states[0].1) {
                a.merge(b);
            }
            return;
        }
        for (key, accs) in other.states {
            match self.map.get(key.as_slice()) {
                Some(&i) => {
                    for (a, b) in self.states[i].1.iter_mut().zip(&accs) {
                        a.merge(b);
                    }
                }
                None => {
                    self.bytes +=
                        Self::ENTRY_BYTES + 2 * key.len() + std::mem::size_of::<Acc>() * accs.len();
                    self.overflow |= self.bytes > self.limit;
                    self.map.insert(key.clone(), self.states.len());
                    self.states.push((key, accs));
                }
            }
        }
    }
}

/// The values of a group key's columns (see [`Groups`]): None for NULL.
pub(super) fn key_values(mut key: &[u8]) -> Vec<Option<&[u8]>> {
    let mut out = Vec::new();
    while let Some((&mark, rest)) = key.split_first() {
        if mark == 0 {
            out.push(None);
            key = rest;
            continue;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("a length")) as usize;
        out.push(Some(&rest[4..4 + len]));
        key = &rest[4 + len..];
    }
    out
}
