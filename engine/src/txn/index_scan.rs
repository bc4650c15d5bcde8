//! Index range scans: entries in key order (or reverse) between two bounds, merged
//! with this transaction's rekeyed rows, whose new keys are not in the index yet.

use super::{RowBatch, TableKey, Txn};
use crate::engine::TableHandle;
use crate::epoch;
use crate::error::{Error, Result};
use crate::ids::{RowId, Tid};
use crate::keys;
use crate::scope;
use std::ops::Bound;

/// An index range scan: its bounds and its position. Lives in the caller's private
/// memory; build it with [`IndexScan::new`] from encoded key parts (see
/// [`crate::keys::encode_value`]).
#[derive(Debug, Clone)]
pub struct IndexScan {
    pub index_id: u32,
    pub reverse: bool,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// The last entry visited (key and row-id suffix).
    cursor: Option<Vec<u8>>,
    done: bool,
    /// This transaction's rekeyed rows in range, sorted in scan order, and how many
    /// were returned.
    extras: Option<Vec<(Vec<u8>, RowId)>>,
    extra_pos: usize,
    /// The row ids of `extras`, sorted: their index entries are skipped (they are
    /// returned from `extras`). Only they: a row the transaction rekeys after the
    /// scan began (a cursor between fetches) is returned from its entry, with the
    /// version the scan's command sees.
    extra_rids: Vec<RowId>,
    /// Index entries visited so far.
    pub examined: u64,
    /// Set by the caller when the bounds fix every column of a unique index (at most
    /// one row): a row found needs no phantom protection under serializable.
    pub unique_point: bool,
    returned: u64,
    /// The scan's range is in the read set (serializable).
    range_noted: bool,
}

/// One bound of the column after an equality prefix: its encoded value (with its
/// NULL/value mark) and whether the bound includes it.
pub type KeyBound = Option<(Vec<u8>, bool)>;

impl IndexScan {
    /// Scans the entries whose leading columns equal `prefix` (concatenated encoded
    /// values; empty = all) and, if `range` is set, whose next column lies between the
    /// bounds (NULLs excluded), in key order or in reverse.
    pub fn new(
        index_id: u32,
        prefix: &[u8],
        range: Option<(KeyBound, KeyBound)>,
        reverse: bool,
    ) -> IndexScan {
        let cat = |a: &[u8], b: &[u8]| {
            let mut v = a.to_vec();
            v.extend_from_slice(b);
            v
        };
        let succ_or_unbounded =
            |v: Vec<u8>| keys::prefix_successor(&v).map_or(Bound::Unbounded, Bound::Excluded);
        let (lower, upper) = match range {
            None => (
                Bound::Included(prefix.to_vec()),
                succ_or_unbounded(prefix.to_vec()),
            ),
            Some((lo, hi)) => {
                let lower = match lo {
                    Some((v, true)) => Bound::Included(cat(prefix, &v)),
                    Some((v, false)) => keys::prefix_successor(&cat(prefix, &v))
                        .map_or(Bound::Excluded(vec![0xFF; 1]), Bound::Included),
                    None => Bound::Included(cat(prefix, &[keys::VALUE_MARK])),
                };
                let upper = match hi {
                    Some((v, true)) => succ_or_unbounded(cat(prefix, &v)),
                    Some((v, false)) => Bound::Excluded(cat(prefix, &v)),
                    None => Bound::Excluded(cat(prefix, &[keys::NULL_MARK])),
                };
                (lower, upper)
            }
        };
        IndexScan {
            index_id,
            reverse,
            lower,
            upper,
            cursor: None,
            done: false,
            extras: None,
            extra_pos: 0,
            extra_rids: Vec::new(),
            examined: 0,
            unique_point: false,
            returned: 0,
            range_noted: false,
        }
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// Starts over (rescan with the same bounds).
    pub fn restart(&mut self) {
        self.cursor = None;
        self.done = false;
        self.extras = None;
        self.extra_pos = 0;
        self.extra_rids = Vec::new();
        self.returned = 0;
    }

    fn contains(&self, entry: &[u8]) -> bool {
        let above = match &self.lower {
            Bound::Included(l) => entry >= &l[..],
            Bound::Excluded(l) => entry > &l[..],
            Bound::Unbounded => true,
        };
        let below = match &self.upper {
            Bound::Included(u) => entry <= &u[..],
            Bound::Excluded(u) => entry < &u[..],
            Bound::Unbounded => true,
        };
        above && below
    }

    /// Is `a` before `b` in scan order?
    fn before(&self, a: &[u8], b: &[u8]) -> bool {
        if self.reverse {
            a > b
        } else {
            a < b
        }
    }
}

impl Txn {
    /// Fills `batch` with up to `max_rows` rows of `scan` that a statement with command
    /// id `cid` sees, in the scan's order, and advances the scan.
    pub(super) fn index_scan(
        &mut self,
        t: &TableHandle,
        scan: &mut IndexScan,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> Result<()> {
        batch.clear();
        if scan.done {
            return Ok(());
        }
        let idx = t.indexes();
        let Some(index) = idx.iter().find(|i| i.def.id == scan.index_id) else {
            return Err(Error::NoSuchIndex {
                table: t.id,
                id: scan.index_id,
            });
        };
        let tk = TableKey::of(t.arc());
        let index_id = index.def.id;
        let engine = self.engine;
        let validates = self.validates_reads();
        if validates && !scan.unique_point && !scan.range_noted {
            self.note_range_read(t, index_id, &scan.lower, &scan.upper);
            scan.range_noted = true;
        }
        let mut reads: Vec<(RowId, Tid)> = Vec::new();
        let this = &*self;
        // Own rows whose key in this index may differ from their committed entry.
        let has_rekeyed = this.rekeyed.rows_in(tk, index_id).next().is_some();
        let res = epoch::with_guard(&engine.collector, |g| {
            let mut key = Vec::new();
            if scan.extras.is_none() {
                let mut extras = scope::outside(Vec::new);
                for rid in this.rekeyed.rows_in(tk, index_id) {
                    if let Some((d, _)) = this.visible_version(t, rid, None, cid, g) {
                        index.key_of(&t.layout, d, &mut key)?;
                        let entry = scope::outside(|| {
                            let mut v = key.clone();
                            v.extend_from_slice(&rid.get().to_be_bytes());
                            v
                        });
                        if scan.contains(&entry) {
                            scope::outside(|| extras.push((entry, rid)));
                        }
                    }
                }
                scope::outside(|| {
                    extras.sort();
                    if scan.reverse {
                        extras.reverse();
                    }
                    let mut rids: Vec<RowId> = extras.iter().map(|e| e.1).collect();
                    rids.sort_unstable();
                    scan.extra_rids = rids;
                });
                scan.extras = Some(extras);
            }
            // A point lookup in a unique index: first the cache (a row found there is
            // the one row with the key at this snapshot if its visible version has
            // the key; anything else goes to the index).
            let point = (scan.unique_point && index.def.unique && scan.cursor.is_none())
                .then(|| match &scan.lower {
                    Bound::Included(k) if !has_rekeyed => Some(crate::point_cache::hash_key(k)),
                    _ => None,
                })
                .flatten();
            if let (Some(h), Bound::Included(k)) = (point, &scan.lower) {
                let hit = index.point.get(h, g).and_then(|rid| {
                    let rec = t.rows.get(rid, g)?;
                    let (d, tid) = this.visible_version(t, rid, Some(rec), cid, g)?;
                    let same = index.key_of(&t.layout, d, &mut key).is_ok() && key == *k;
                    same.then_some((rid, tid, d))
                });
                if let Some((rid, tid, d)) = hit {
                    if validates && this.pending_entry(t, rid).is_none() {
                        reads.push((rid, tid));
                    }
                    batch.push(rid, tid, d);
                    scan.done = true;
                    scan.examined += 1;
                    return Ok(());
                }
            }
            let mut last = scope::outside(|| Vec::with_capacity(64));
            let mut entry = scope::outside(|| Vec::with_capacity(64));
            let mut seen = 0u64;
            let mut stopped = false;
            let mut err = None;
            let (lo, hi) = match (&scan.cursor, scan.reverse) {
                (Some(c), false) => (Bound::Excluded(&c[..]), as_ref(&scan.upper)),
                (Some(c), true) => (as_ref(&scan.lower), Bound::Excluded(&c[..])),
                (None, _) => (as_ref(&scan.lower), as_ref(&scan.upper)),
            };
            let extras = scan.extras.as_ref().expect("built");
            let mut pos = scan.extra_pos;
            let push_extra = |batch: &mut RowBatch, rid: RowId| {
                if let Some((d, tid)) = this.visible_version(t, rid, None, cid, g) {
                    batch.push(rid, tid, d);
                }
            };
            index.scan_rows(&t.rows, lo, hi, scan.reverse, g, |k, rid, rec| {
                entry.clear();
                entry.extend_from_slice(k);
                entry.extend_from_slice(&rid.get().to_be_bytes());
                last.clear();
                last.extend_from_slice(&entry);
                seen += 1;
                while pos < extras.len() && scan.before(&extras[pos].0, &entry) {
                    push_extra(batch, extras[pos].1);
                    pos += 1;
                }
                // (A rekeyed row not in `extras` is seen here: its version for `cid`
                // is compared with the entry's key like any other.)
                if scan.extra_rids.binary_search(&rid).is_err() {
                    if let Some((d, tid)) = this.visible_version(t, rid, Some(rec), cid, g) {
                        match index.key_of(&t.layout, d, &mut key) {
                            Ok(_) if key == k => {
                                if validates && this.pending_entry(t, rid).is_none() {
                                    reads.push((rid, tid));
                                }
                                batch.push(rid, tid, d)
                            }
                            Ok(_) => {}
                            Err(e) => {
                                err = Some(e);
                                stopped = true;
                                return false;
                            }
                        }
                    }
                }
                let more = batch.len() < max_rows && seen < max_rows as u64 * 8;
                stopped = !more;
                more
            });
            if let Some(e) = err {
                return Err(e);
            }
            if !stopped {
                while pos < extras.len() {
                    push_extra(batch, extras[pos].1);
                    pos += 1;
                }
                scan.done = true;
                if let (Some(h), 1) = (point, batch.len()) {
                    let engine = self.engine;
                    index
                        .point
                        .put(h, batch.rowid(0), index.len(), g, |b| engine.has_room(b));
                }
            }
            scan.extra_pos = pos;
            scan.examined += seen;
            if seen > 0 {
                scope::outside(|| scan.cursor = Some(last));
            } else {
                scope::outside(|| drop(last));
            }
            scope::outside(|| drop(entry));
            Ok(())
        });
        res?;
        if !batch.is_empty() {
            self.note_read_committed();
        }
        scan.returned += batch.len() as u64;
        if validates {
            self.note_rows_read(t, &reads);
            if scan.unique_point && scan.done && scan.returned == 0 && !scan.range_noted {
                // A key looked for and not found: its later insert is a phantom.
                self.note_range_read(t, index_id, &scan.lower, &scan.upper);
                scan.range_noted = true;
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
