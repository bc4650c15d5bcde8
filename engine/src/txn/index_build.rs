//! CREATE INDEX inside a transaction: build the index over the table's rows, check
//! uniqueness, publish it.
//!
//! 1. One scan computes every row's key (of the version the index gets) into one
//!    private buffer.
//! 2. The entries are sorted by key, by several threads (each sorts a run, then the
//!    runs are merged); a unique index's duplicates are then neighbours.
//! 3. The sorted entries are linked into the skip list by several threads, each over
//!    one range of keys: in key order, every search ends next to the previous one, so
//!    the nodes it passes are in the cache.

use super::write_set::Origin;
use super::{pending_bytes, unique, RowKey, TableKey, Txn};
use crate::engine::{Need, TableHandle};
use crate::epoch;
use crate::error::Result;
use crate::ids::RowId;
use crate::index::{IndexDef, KeyIndex};
use crate::record::RecordPtr;
use crate::scope;
use std::collections::HashMap;
use std::sync::Arc;

/// Entries below this are sorted and linked by one thread.
const PARALLEL_MIN_ENTRIES: usize = 64 * 1024;

/// One index entry to link: its key (a range of the key buffer) and row.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    len: u32,
    /// A NULL key column (never a duplicate in a unique index).
    null: bool,
    rowid: RowId,
    rec: RecordPtr,
}

/// The keys of the entries to link, in one private buffer.
struct Keys {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Keys {
    fn key(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.start..e.start + e.len as usize]
    }

    fn cmp(&self, a: &Entry, b: &Entry) -> std::cmp::Ordering {
        self.key(a).cmp(self.key(b)).then(a.rowid.cmp(&b.rowid))
    }

    /// Sorts the entries by (key, row id): `threads` runs sorted in place, each by a
    /// thread, then merged into a new vector (twice the entries' memory at most).
    fn sort(&mut self, threads: usize) -> Result<()> {
        let n = self.entries.len();
        let mut entries = std::mem::take(&mut self.entries);
        if threads < 2 || n < PARALLEL_MIN_ENTRIES {
            entries.sort_unstable_by(|a, b| self.cmp(a, b));
            self.entries = entries;
            return Ok(());
        }
        let per = n.div_ceil(threads);
        let this = &*self;
        let runs: Vec<std::sync::Mutex<&mut [Entry]>> =
            entries.chunks_mut(per).map(std::sync::Mutex::new).collect();
        crate::threads::parallel(runs, |run| {
            run.lock()
                .expect("one thread per run")
                .sort_unstable_by(|a, b| this.cmp(a, b));
            Ok(())
        })?;
        // A k-way merge of the sorted runs.
        let runs: Vec<&[Entry]> = entries.chunks(per).collect();
        let mut pos = vec![0usize; runs.len()];
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut best: Option<usize> = None;
            for (r, run) in runs.iter().enumerate() {
                let Some(e) = run.get(pos[r]) else { continue };
                if best.is_none_or(|b| self.cmp(e, &runs[b][pos[b]]).is_lt()) {
                    best = Some(r);
                }
            }
            let b = best.expect("entries left");
            out.push(runs[b][pos[b]]);
            pos[b] += 1;
        }
        drop(entries);
        self.entries = out;
        Ok(())
    }
}

impl Txn {
    /// Builds index `def` over the rows of `t` and publishes it. Its entries are the
    /// committed rows' keys and this transaction's inserted rows' first keys (what
    /// commit and abort expect); uniqueness is checked on the rows as this transaction
    /// sees them. The caller makes sure no other transaction writes to `t` meanwhile
    /// (PostgreSQL's ShareLock on the table).
    pub(super) fn build_index(&mut self, t: &TableHandle, def: IndexDef) -> Result<()> {
        def.validate(&t.def)?;
        let engine = self.engine;
        let shared = def.clone();
        scope::outside(|| drop(def));
        let unique = shared.unique;
        let index = Arc::new(KeyIndex::new(shared, &t.def, &engine.collector));
        // Hidden from other transactions' planners until this one commits.
        index.mark_uncommitted();
        let threads = crate::threads::helper_threads();
        let mut keys = scope::outside(|| Keys {
            bytes: Vec::new(),
            entries: Vec::new(),
        });
        // Rows whose newest version (this transaction's write) has another key than
        // the one the index gets: that key, or None (deleted or NULL), for the
        // uniqueness check.
        let mut newest_keys: HashMap<RowId, Option<Vec<u8>>> = scope::outside(HashMap::new);
        let this = &*self;
        // 1. The keys, in private memory.
        let scanned = epoch::with_guard(&engine.collector, |g| {
            let mut key = Vec::new();
            let mut newest = Vec::new();
            let mut res = Ok(());
            t.rows.scan_after(None, g, |rowid, rec| {
                // SAFETY: reached through the row index under guard `g`.
                let committed = || unsafe { rec.get() }.read(g).live().map(|(d, _)| d);
                // The version whose keys the index gets, and the newest one (whose
                // keys must be unique).
                let (indexed, latest, own) = match this.pending_entry(t, rowid) {
                    // SAFETY: pending buffers live until the transaction ends.
                    Some(e) if e.origin == Origin::Inserted => (
                        unsafe { pending_bytes(e.base_version()) },
                        e.newest_bytes(),
                        true,
                    ),
                    Some(e) => (committed(), e.newest_bytes(), true),
                    None => (committed(), None, false),
                };
                let step = (|| {
                    let mut null = false;
                    if let Some(d) = indexed {
                        null = index.key_of(&t.layout, d, &mut key)?;
                        scope::outside(|| {
                            keys.entries.push(Entry {
                                start: keys.bytes.len(),
                                len: key.len() as u32,
                                null,
                                rowid,
                                rec,
                            });
                            keys.bytes.extend_from_slice(&key);
                        });
                    }
                    if unique && own {
                        let latest_key = match latest {
                            Some(d) if !index.key_of(&t.layout, d, &mut newest)? => {
                                Some(newest.as_slice())
                            }
                            _ => None,
                        };
                        let indexed_key = (indexed.is_some() && !null).then_some(key.as_slice());
                        if latest_key != indexed_key {
                            let k = scope::outside(|| latest_key.map(<[u8]>::to_vec));
                            scope::outside(|| newest_keys.insert(rowid, k));
                        }
                    }
                    Ok(())
                })();
                res = step;
                res.is_ok()
            });
            res
        });
        let result = scanned.and_then(|()| {
            // 2. Sorted, then checked for duplicates.
            scope::outside(|| keys.sort(threads))?;
            if unique {
                if let Some(rowid) = scope::outside(|| duplicate(&keys, &newest_keys)) {
                    let mut row = Vec::new();
                    self.get_at(t, rowid, u32::MAX, crate::ids::Tid::NEWEST, &mut row);
                    return Err(unique::violation(&index, t, &row, (false, false)));
                }
            }
            // 3. Linked (a skip list by several threads over ranges of keys).
            let bytes: usize = keys
                .entries
                .iter()
                .map(|e| index.entry_bytes(keys.key(e).len()))
                .sum();
            engine.check_memory(Need::of(bytes))?;
            // The records stay allocated although the scan's guard is gone: every
            // entry is a row live in its newest committed version or one of this
            // transaction's, and the caller's lock keeps other writers (whose deletes
            // alone could free a record) away until the index is published.
            engine.account(bytes as isize);
            if let Err(e) = link(&index, &keys, threads, engine) {
                engine.account(-(bytes as isize));
                return Err(e);
            }
            let log = !self.is_twin(t.arc());
            let published = engine.publish_index(t, index.clone(), log);
            if published.is_err() {
                engine.account(-(bytes as isize));
            }
            published
        });
        scope::outside(|| {
            drop(keys);
            drop(newest_keys);
        });
        // An unpublished index is dropped here: nobody else saw it.
        drop(index);
        if result.is_ok() {
            // This transaction's pending updates of the table may give their rows
            // another key in the new index than the committed one: commit must look.
            let tk = TableKey::of(t.arc());
            let own: Vec<RowKey> = self
                .pending
                .range(RowKey::all_of(tk))
                .filter(|(_, &i)| self.entries.get(i).origin != Origin::Inserted)
                .map(|(&k, _)| k)
                .collect();
            if !own.is_empty() {
                self.rekeyed.note_untracked(tk, own);
            }
        }
        result
    }
}

/// A row whose key another row has too, among the keys the rows have as this
/// transaction sees them: the sorted indexed keys, except for the rows in `newest`,
/// whose keys are those given there (None: no key, or one with a NULL).
fn duplicate(keys: &Keys, newest: &HashMap<RowId, Option<Vec<u8>>>) -> Option<RowId> {
    let mut prev: Option<&Entry> = None;
    for e in &keys.entries {
        if e.null || newest.contains_key(&e.rowid) {
            continue;
        }
        if prev.is_some_and(|p| keys.key(p) == keys.key(e)) {
            return Some(e.rowid);
        }
        prev = Some(e);
    }
    // The rows whose key changed: against each other, and against the rest.
    let mut changed: Vec<(&[u8], RowId)> = newest
        .iter()
        .filter_map(|(&r, k)| k.as_deref().map(|k| (k, r)))
        .collect();
    changed.sort_unstable();
    if let Some(w) = changed.windows(2).find(|w| w[0].0 == w[1].0) {
        return Some(w[1].1);
    }
    for (k, rowid) in changed {
        let at = keys.entries.partition_point(|e| keys.key(e) < k);
        let clash = keys.entries[at..]
            .iter()
            .take_while(|e| keys.key(e) == k)
            .any(|e| !e.null && !newest.contains_key(&e.rowid));
        if clash {
            return Some(rowid);
        }
    }
    None
}

/// Links the sorted entries of `keys` into `index`, by `threads` threads over ranges.
fn link(
    index: &KeyIndex,
    keys: &Keys,
    threads: usize,
    engine: &crate::engine::Engine,
) -> Result<()> {
    let n = keys.entries.len();
    // A B+tree takes one writer at a time: one thread appends the sorted keys (and
    // fills every leaf).
    let threads = if index.is_btree() { 1 } else { threads };
    let per = if threads < 2 || n < PARALLEL_MIN_ENTRIES {
        n.max(1)
    } else {
        n.div_ceil(threads)
    };
    let ranges: Vec<&[Entry]> = keys.entries.chunks(per).collect();
    crate::threads::parallel(ranges, |range| {
        epoch::with_guard(&engine.collector, |g| {
            for e in range.iter() {
                index.insert(keys.key(e), e.rowid, e.rec, g);
            }
        });
        Ok(())
    })
}
