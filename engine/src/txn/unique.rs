//! Unique keys: the probe "does another row hold this key", asked by every statement
//! that gives a row a unique key (against rows as this transaction sees them) and
//! again by commit (against committed rows, under the key's stripe lock), so two
//! transactions inserting the same key cannot both commit.

use super::{pending_bytes, write_set::Origin, RowKey, TableKey, Txn};
use crate::engine::TableHandle;
use crate::error::{AbortReason, Error, Result};
use crate::ids::{RowId, Tid};
use crate::index::KeyIndex;
use crate::keys;
use crate::record::{self, RecordPtr};
use crate::row::RowLayout;
use crate::scope;
use crate::table::Table;
use crossbeam_epoch::Guard;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

/// How long a committer checking a unique key waits for another committer's row lock
/// before it gives up with a serialization failure (it may hold locks that one needs).
const UNIQUE_CHECK_WAIT: Duration = Duration::from_millis(20);

/// Puts the keys of `row` in each index into `keys` (one per index, reusing its
/// buffers), with whether each has a NULL column.
pub(super) fn index_keys_into(
    t: &Table,
    idx: &[Arc<KeyIndex>],
    row: &[u8],
    keys: &mut Vec<(Vec<u8>, bool)>,
) -> Result<()> {
    keys.truncate(idx.len());
    while keys.len() < idx.len() {
        keys.push((Vec::new(), false));
    }
    for (i, (k, null)) in idx.iter().zip(keys.iter_mut()) {
        *null = i.key_of(&t.layout, row, k)?;
    }
    Ok(())
}

/// The unique-violation error for `row` (copied into private memory); `seen`: how
/// the transaction relates to the row holding the key, `(invisible, after_read)` (see
/// [`Error::UniqueViolation`]).
pub(super) fn violation(index: &KeyIndex, t: &Table, row: &[u8], seen: (bool, bool)) -> Error {
    scope::outside(|| Error::UniqueViolation {
        index: index.def.name.clone(),
        table: t.id,
        columns: index.def.columns.clone(),
        row: row.to_vec(),
        invisible: seen.0,
        after_read: seen.1,
    })
}

/// Rows that may bring keys from which a commit takes every key stripe (see
/// [`Txn::key_stripes`]): with four keys per stripe, some 98% of the stripes hold one.
const ALL_STRIPES_AT: usize = 4 * crate::engine::KEY_LOCK_STRIPES;

/// The key-lock stripe of `key` in index `index_id`.
fn stripe_of(index_id: u32, key: &[u8]) -> usize {
    let mut h = crc32fast::Hasher::new();
    h.update(&index_id.to_le_bytes());
    h.update(key);
    h.finalize() as usize % crate::engine::KEY_LOCK_STRIPES
}

/// Walks the entries of `index` whose key is exactly `key` and asks `row_of` for each
/// entry's row (`Ok(None)`: skip it); returns true at the first row that really holds
/// `key` (an entry may be stale: its row's current version has another key).
fn key_held<'r>(
    index: &KeyIndex,
    rows: &crate::index::RowIdIndex,
    layout: &RowLayout,
    key: &[u8],
    g: &Guard,
    mut row_of: impl FnMut(RowId, RecordPtr) -> Result<Option<&'r [u8]>>,
) -> Result<bool> {
    // Ascending keys (serial ids, timestamps) are above every entry.
    if !index.may_hold_at_or_after(key) {
        return Ok(false);
    }
    let upper = keys::prefix_successor(key);
    let hi = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut found = Ok(false);
    let mut buf = Vec::new();
    index.scan_rows(rows, Bound::Included(key), hi, false, g, |k, rid, rec| {
        if k != key {
            return true;
        }
        let held = row_of(rid, rec).and_then(|row| match row {
            Some(d) => index.key_is(layout, d, key, &mut buf),
            None => Ok(false),
        });
        match held {
            Ok(false) => true,
            other => {
                found = other;
                false
            }
        }
    });
    found
}

impl Txn {
    /// Does a row other than `rowid` hold `key` in unique index `index`, as this
    /// transaction sees rows for uniqueness: its own newest versions (also those of
    /// the current statement, as PostgreSQL checks each row at once), otherwise the
    /// committed ones? Rows other transactions have not committed do not count here;
    /// commit checks again ([`Txn::check_unique_at_commit`]).
    ///
    /// Returns the holder's version: its commit TID, [`Tid::NONE`] for a row of this
    /// transaction (see [`Txn::invisible`]).
    pub(super) fn unique_conflict(
        &self,
        t: &TableHandle,
        index: &KeyIndex,
        key: &[u8],
        rowid: Option<RowId>,
        g: &Guard,
    ) -> Result<Option<Tid>> {
        let tk = TableKey::of(t.arc());
        self.note_key_watermark(tk, t);
        let mut holder_tid = Tid::NONE;
        let found = key_held(index, &t.rows, &t.layout, key, g, |rid, rec| {
            if Some(rid) == rowid {
                return Ok(None);
            }
            Ok(
                match self.pending.get(&RowKey {
                    table: tk,
                    rowid: rid,
                }) {
                    // SAFETY: pending buffers live until the transaction ends.
                    Some(&i) => unsafe { pending_bytes(self.entries.get(i).newest.data) },
                    None => {
                        // SAFETY: reached through the index under guard `g`.
                        let r = unsafe { rec.get() };
                        let s = r.read(g);
                        if s.absent() && s.tid() == Tid::NONE {
                            // Another transaction's insert, not committed: wait for it.
                            if let Some(holder) = r.sole_lock_holder() {
                                if !crate::rowlock::same_txn(holder, self.lock_tag) {
                                    return Err(Error::KeyPending { holder });
                                }
                            }
                        }
                        holder_tid = s.tid();
                        s.live().map(|(d, _)| d)
                    }
                },
            )
        })?;
        if found {
            return Ok(Some(holder_tid));
        }
        if !self.rekeyed.may_hold_key(tk, index.def.id, key) {
            return Ok(None);
        }
        // Rows whose new key in this index is not in it yet.
        let mut buf = Vec::new();
        for rid in self.rekeyed.rows_of(tk) {
            if Some(rid) == rowid {
                continue;
            }
            let Some(&i) = self.pending.get(&RowKey {
                table: tk,
                rowid: rid,
            }) else {
                continue;
            };
            if let Some(d) = self.entries.get(i).newest_bytes() {
                index.key_of(&t.layout, d, &mut buf)?;
                if buf == key {
                    return Ok(Some(Tid::NONE));
                }
            }
        }
        Ok(None)
    }

    /// How this transaction relates to the committed version (TID `tid`) of a row
    /// holding a key it writes in table `t`: is the version outside its snapshot
    /// (repeatable read and serializable only), and had it read the table
    /// (serializable)?
    pub(super) fn key_holder_seen(&self, t: &TableHandle, tid: Tid) -> (bool, bool) {
        let invisible =
            self.iso != super::Isolation::ReadCommitted && tid != Tid::NONE && tid > self.start_tid;
        (invisible, invisible && self.has_read(t))
    }

    /// Before this transaction's first unique-key check on table `t` (`tk`): how many
    /// commits have given its rows new keys so far. (The caller holds `t`, and its
    /// PostgreSQL lock keeps the table from being dropped until this transaction
    /// ends, so `tk` names it for as long as the watermark is used.)
    pub(super) fn note_key_watermark(&self, tk: TableKey, t: &Table) {
        let mut w = self.key_watermarks.borrow_mut();
        if !w.iter().any(|&(k, _)| k == tk) {
            let n = t.key_commits.load(std::sync::atomic::Ordering::Acquire);
            scope::outside(|| w.push((tk, n)));
        }
    }

    /// Per table slot: did no commit give rows of the table new keys since this
    /// transaction's first unique check on it? Read with the key stripes held: a
    /// commit that took one of this transaction's keys held the key's stripe while it
    /// counted, so its count is seen here. Then every key the statements checked is
    /// still free, and the commit need not look again.
    fn keys_untouched(&self) -> Vec<bool> {
        let w = self.key_watermarks.borrow();
        self.tables
            .iter()
            .map(|t| {
                let tk = TableKey::of(t);
                w.iter().any(|&(k, n)| {
                    k == tk && t.key_commits.load(std::sync::atomic::Ordering::Acquire) == n
                })
            })
            .collect()
    }

    /// Per table slot: is the table private to this transaction (a replacement made by
    /// its TRUNCATE, ALTER or load, or a table it created)? No other transaction can
    /// write such a table, so the keys its statements checked need no check at commit
    /// (nor its stripes).
    fn private_slots(&self) -> Vec<bool> {
        self.tables
            .iter()
            .map(|t| self.is_twin(t) || self.private.contains(&t.id))
            .collect()
    }

    /// Can write-set entry `i` change index keys at commit? Not a pre-existing row
    /// whose every update kept its keys (such rows are never rekeyed).
    pub(super) fn may_rekey(&self, i: usize) -> bool {
        let e = self.entries.get(i);
        e.origin == Origin::Inserted
            || self.rekeyed.contains(RowKey {
                table: TableKey::of(&self.tables[e.table]),
                rowid: e.rowid,
            })
    }

    /// Unique-key stripes of every unique key of every row version this commit
    /// writes, sorted and without repeats; or all of them, when the write set has at
    /// least [`ALL_STRIPES_AT`] rows that may bring keys into a shared table with a
    /// unique index (`keyed_rows`, rows inserted or updated in any table, bounds their
    /// number from above). Holding more stripes than
    /// needed is always safe (they only serialize commits), and that many keys fall
    /// into nearly every stripe anyway: the keys are then not encoded again and sorted
    /// (3% of a million-row insert).
    pub(super) fn key_stripes(
        &self,
        idx: &[Arc<[Arc<KeyIndex>]>],
        keyed_rows: usize,
    ) -> Result<Vec<usize>> {
        let private = self.private_slots();
        let eligible: Vec<bool> = (0..self.tables.len())
            .map(|slot| !private[slot] && idx[slot].iter().any(|x| x.def.unique))
            .collect();
        if !eligible.contains(&true) {
            return Ok(Vec::new());
        }
        // `keyed_rows` counts rows of every table: count those that bring keys into
        // the tables concerned before taking every stripe (a big load of a table
        // without a unique key must not hold up every other committer's keys).
        if keyed_rows >= ALL_STRIPES_AT
            && self
                .pending
                .values()
                .filter(|&&i| {
                    let e = self.entries.get(i);
                    eligible[e.table] && e.newest_bytes().is_some() && self.may_rekey(i)
                })
                .take(ALL_STRIPES_AT)
                .count()
                >= ALL_STRIPES_AT
        {
            return Ok((0..crate::engine::KEY_LOCK_STRIPES).collect());
        }
        let mut stripes = Vec::new();
        let mut key = Vec::new();
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            let Some(row) = e.newest_bytes() else {
                continue;
            };
            if !eligible[e.table] || !self.may_rekey(i) {
                continue;
            }
            let table = &self.tables[e.table];
            for index in idx[e.table].iter().filter(|x| x.def.unique) {
                if !index.key_of(&table.layout, row, &mut key)? {
                    stripes.push(stripe_of(index.def.id, &key));
                }
            }
        }
        stripes.sort_unstable();
        stripes.dedup();
        Ok(stripes)
    }

    /// Checks, under the commit locks, that no other committed row holds a unique key
    /// this commit introduces (a key its rows did not have before). Rows of this
    /// transaction were checked by their statements.
    pub(super) fn check_unique_at_commit(
        &self,
        idx: &[Arc<[Arc<KeyIndex>]>],
        g: &Guard,
    ) -> Result<()> {
        let (mut kf, mut kb) = (Vec::new(), Vec::new());
        let private = self.private_slots();
        let untouched = self.keys_untouched();
        let checked = |slot: usize| {
            idx[slot].iter().any(|x| x.def.unique) && !private[slot] && !untouched[slot]
        };
        if !(0..self.tables.len()).any(checked) {
            return Ok(());
        }
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            let Some(fin) = e.newest_bytes() else {
                continue;
            };
            if !checked(e.table) || !self.may_rekey(i) {
                continue;
            }
            let table = &self.tables[e.table];
            let tk = TableKey::of(table);
            let base = match e.origin {
                Origin::Inserted => None,
                Origin::Existing { .. } => {
                    // SAFETY: found under `g` and locked by us: the committed buffer
                    // cannot change or be freed.
                    let p = unsafe { e.rec.expect("found").get() }.data_ptr();
                    // SAFETY: as above.
                    (!p.is_null()).then(|| unsafe { record::rowbuf_slice(p) })
                }
            };
            for index in idx[e.table].iter().filter(|x| x.def.unique) {
                if index.key_of(&table.layout, fin, &mut kf)? {
                    continue;
                }
                if let Some(b) = base {
                    index.key_of(&table.layout, b, &mut kb)?;
                    if kb == kf {
                        continue;
                    }
                }
                let taken = key_held(index, &table.rows, &table.layout, &kf, g, |rid, rec| {
                    if self.pending.contains_key(&RowKey {
                        table: tk,
                        rowid: rid,
                    }) {
                        return Ok(None);
                    }
                    // SAFETY: reached through the index under guard `g`.
                    match unsafe { rec.get() }.try_read(g, UNIQUE_CHECK_WAIT) {
                        Some(s) => Ok(s.live().map(|(d, _)| d)),
                        None => Err(Error::Conflict(AbortReason::UniqueKeyBusy)),
                    }
                })?;
                if taken {
                    return Err(violation(index, table, fin, (false, false)));
                }
            }
        }
        Ok(())
    }
}
