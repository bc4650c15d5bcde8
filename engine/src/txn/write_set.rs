//! The write set: pending versions of the rows a transaction inserted, updated or
//! deleted, and the one rule for which of them a statement sees.
//!
//! Invariants:
//! * an entry's buffers (`newest`, `older`) are private to this transaction until
//!   commit installs `newest` (the rest are freed then) or rollback frees them;
//! * an `Inserted` row's record is linked in the row-id index (absent) and its
//!   *first* version's keys are in every index, from the insert until commit or
//!   rollback; later versions' keys reach the indexes only at commit (see
//!   [`super::rekeyed`]);
//! * an `Existing` row's record pointer is set only while commit holds its guard.

use super::{free_private, pending_bytes, unique, RowKey, Stmt, Txn, WriteOutcome};
use crate::engine::{Need, TableHandle};
use crate::epoch;
use crate::error::{AbortReason, Error, Result};
use crate::garbage::{BYTES_PER_DEFERRED, BYTES_PER_RETIRED, RECORD_BYTES};
use crate::ids::{RowId, Tid};
use crate::record::{self, Record, RecordPtr};
use crate::rowlock::{self, LockMode};
use crate::scope;

/// One pending version of a row.
#[derive(Clone, Copy)]
pub(super) struct Version {
    pub cid: u32,
    pub sub: u32,
    /// Row buffer, or null for a delete.
    pub data: *mut u8,
}

/// Where a written row came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Inserted by this transaction.
    Inserted,
    /// Committed before, read at version `read_tid`.
    Existing { read_tid: Tid },
}

pub(super) struct WriteEntry {
    /// Slot in [`Txn::tables`].
    pub table: usize,
    pub rowid: RowId,
    /// The record. For an `Inserted` entry it is ours alone until commit, so it stays
    /// alive. For an `Existing` one it is only set while commit holds its guard:
    /// another transaction may delete and free the record meanwhile, so commit looks
    /// the row id up again.
    pub rec: Option<RecordPtr>,
    pub origin: Origin,
    pub newest: Version,
    /// Earlier pending versions, oldest first.
    pub older: Vec<Version>,
}

/// What a statement sees of a row, given this transaction's own writes.
pub(super) enum Seen<'a> {
    /// Nothing of ours hides the committed version: read that.
    Committed,
    /// One of our pending versions (bytes and the TID to report), or None if the row
    /// does not exist for the statement (deleted by us, or inserted by a later command).
    Own(Option<(&'a [u8], Tid)>),
}

impl WriteEntry {
    /// The newest pending version a statement with command id `cid` sees.
    fn visible(&self, cid: u32) -> Option<&Version> {
        std::iter::once(&self.newest)
            .chain(self.older.iter().rev())
            .find(|v| v.cid < cid)
    }

    /// What a statement with command id `cid` sees of this row: the version made by
    /// the newest earlier command; if none, the committed row, or nothing for a row
    /// inserted by this same command or a later one.
    pub fn seen_by(&self, cid: u32) -> Seen<'_> {
        match (self.visible(cid), self.origin) {
            // SAFETY: pending buffers live until the transaction ends, beyond the
            // borrow of `self`.
            (Some(v), _) => {
                Seen::Own(unsafe { pending_bytes(v.data) }.map(|d| (d, self.reported_tid())))
            }
            (None, Origin::Inserted) => Seen::Own(None),
            (None, Origin::Existing { .. }) => Seen::Committed,
        }
    }

    /// The version whose keys are in the indexes for an inserted row: its first one.
    pub fn base_version(&self) -> *mut u8 {
        self.older.first().map_or(self.newest.data, |o| o.data)
    }

    /// The newest version's bytes (None: deleted).
    pub fn newest_bytes(&self) -> Option<&[u8]> {
        // SAFETY: pending buffers live until the transaction ends.
        unsafe { pending_bytes(self.newest.data) }
    }

    /// The TID a reader of a pending version is given: the version it replaces.
    pub fn reported_tid(&self) -> Tid {
        match self.origin {
            Origin::Inserted => Tid::NONE,
            Origin::Existing { read_tid } => read_tid,
        }
    }

    /// Is this entry written to the redo log at commit? Not a row inserted and deleted
    /// again by this transaction.
    pub fn logged(&self) -> bool {
        !(self.origin == Origin::Inserted && self.newest.data.is_null())
    }
}

/// What a write-set entry does (for the shared memory its commit or abort needs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Insert,
    Update,
    Delete,
}

impl Txn {
    pub(super) fn pending_entry(&self, t: &TableHandle, rowid: RowId) -> Option<&WriteEntry> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending
            .get(&Self::row_key(t, rowid))
            .map(|&i| self.entries.get(i))
    }

    /// What a statement with command id `cid` sees of row `rowid` of `t`, given this
    /// transaction's writes (see [`Seen`]).
    pub(super) fn seen(&self, t: &TableHandle, rowid: RowId, cid: u32) -> Seen<'_> {
        match self.pending_entry(t, rowid) {
            Some(e) => e.seen_by(cid),
            None => Seen::Committed,
        }
    }

    /// Checks the memory limit for one more write-set entry on a table with indexes
    /// `idx`: what its commit, or its abort, will take in shared memory until the
    /// epoch moves on (retirement batches for records and buffers; deferred
    /// destruction of the index nodes removed), on top of what the entries before it
    /// will take. The entry itself and its pending-map slot are in this process's
    /// private memory, so a big DELETE on a full engine needs only that.
    fn reserve_entry(
        &mut self,
        kind: EntryKind,
        idx: &[std::sync::Arc<crate::index::KeyIndex>],
    ) -> Result<()> {
        let cost = self.entry_reserve(kind, idx)?;
        self.commit_reserve += cost;
        Ok(())
    }

    /// What [`Txn::reserve_entry`] would add to the reserve, checked against the
    /// memory limit but not added.
    fn entry_reserve(
        &self,
        kind: EntryKind,
        idx: &[std::sync::Arc<crate::index::KeyIndex>],
    ) -> Result<usize> {
        // Each index says what a removal may defer (see `removal_reserve`). The row-id
        // index (a radix tree) defers only the destruction of a leaf it empties, an
        // eighth of a deferral per row id here: a table thinned to one row per leaf
        // takes more, but its leaves (8 KiB each) bound that to half a percent of the
        // memory, which the arena's floor covers.
        let keys: usize = idx.iter().map(|i| i.removal_reserve()).sum();
        let rowid = BYTES_PER_DEFERRED.div_ceil(8);
        let (retired, deferred) = match kind {
            // Abort: the absent record, its row-id slot and its keys.
            EntryKind::Insert => (1, rowid + keys),
            // Commit: the replaced buffer, and keys the row may lose.
            EntryKind::Update => (2, keys),
            // Commit: buffer and record, the row-id slot and the keys.
            EntryKind::Delete => (2, rowid + keys),
        };
        let cost = retired * BYTES_PER_RETIRED + deferred;
        let delete = kind == EntryKind::Delete;
        let need = Need::of(self.commit_reserve + cost);
        if delete {
            self.engine.check_memory_for_delete(need)?;
        } else {
            self.engine.check_memory(need)?;
        }
        Ok(cost)
    }

    pub(super) fn push_entry(&mut self, e: WriteEntry) {
        let key = RowKey {
            table: super::TableKey::of(&self.tables[e.table]),
            rowid: e.rowid,
        };
        // Private memory: only this process reads its write set (see `Txn`).
        scope::outside(|| {
            self.pending.insert(key, self.entries.len());
            self.entries.push(e);
        });
    }

    pub(super) fn insert(&mut self, t: &TableHandle, row: &[u8], stmt: Stmt) -> Result<RowId> {
        let slot = self.table_slot(t);
        self.with_indexes(slot, |txn, idx| {
            let mut keys = std::mem::take(&mut txn.insert_keys);
            // Encoded into private memory (the buffers are kept for the next insert).
            let r = scope::outside(|| unique::index_keys_into(t, idx, row, &mut keys))
                .and_then(|()| txn.insert_with_keys(t, slot, row, stmt, idx, &keys));
            txn.insert_keys = keys;
            r
        })
    }

    /// [`Txn::insert`] of `row`, whose keys in the indexes `idx` are `keys`.
    fn insert_with_keys(
        &mut self,
        t: &TableHandle,
        slot: usize,
        row: &[u8],
        stmt: Stmt,
        idx: &[std::sync::Arc<crate::index::KeyIndex>],
        keys: &[(Vec<u8>, bool)],
    ) -> Result<RowId> {
        let key_bytes: usize = keys
            .iter()
            .zip(idx.iter())
            .map(|((k, _), i)| i.entry_bytes(k.len()))
            .sum();
        self.engine.check_memory(
            Need::of(record::rowbuf_size(row.len())) + Need::of(RECORD_BYTES) + Need::of(key_bytes),
        )?;
        // Memory checks (which may wait for the epoch to move on) come before the pin
        // below. A row refused for memory whose key is taken reports the taken key,
        // as when the unique check came first.
        let reserve = match self.entry_reserve(EntryKind::Insert, idx) {
            Ok(r) => r,
            Err(e) => {
                epoch::with_guard(&self.engine.collector, |g| {
                    self.check_new_keys(t, row, idx, keys, g)
                })?;
                return Err(e);
            }
        };
        let data = record::rowbuf_new(row);
        if data.is_null() {
            return Err(self.oom());
        }
        self.engine.account(record::rowbuf_size(row.len()) as isize);
        // One pin for the unique check and the links (each outermost pin is an atomic
        // read-modify-write that waits for the row's stores).
        let linked = epoch::with_guard(&self.engine.collector, |g| {
            self.check_new_keys(t, row, idx, keys, g)?;
            let rowid = t.next_rowid();
            let rec = RecordPtr(Box::into_raw(Record::new_inserted(rowlock::held_word(
                rowlock::tag_of(self.lock_tag, stmt.sub),
                LockMode::Update,
            ))));
            t.rows.insert(rowid, rec, g);
            for (index, (key, _)) in idx.iter().zip(keys) {
                index.insert(key, rowid, rec, g);
            }
            Ok((rowid, rec))
        });
        let (rowid, rec) = match linked {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: our buffer, never published.
                unsafe { record::rowbuf_free(data) };
                self.engine
                    .account(-(record::rowbuf_size(row.len()) as isize));
                return Err(e);
            }
        };
        self.commit_reserve += reserve;
        self.engine.account(RECORD_BYTES as isize);
        self.engine.account(key_bytes as isize);
        self.push_entry(WriteEntry {
            table: slot,
            rowid,
            rec: Some(rec),
            origin: Origin::Inserted,
            newest: Version {
                cid: stmt.cid,
                sub: stmt.sub,
                data,
            },
            older: Vec::new(),
        });
        Ok(rowid)
    }

    /// The statement-time unique check of a new row's `keys` (in indexes `idx`).
    fn check_new_keys(
        &self,
        t: &TableHandle,
        row: &[u8],
        idx: &[std::sync::Arc<crate::index::KeyIndex>],
        keys: &[(Vec<u8>, bool)],
        g: &crossbeam_epoch::Guard,
    ) -> Result<()> {
        for (index, (key, null)) in idx.iter().zip(keys) {
            if !index.def.unique || *null {
                continue;
            }
            if let Some(tid) = self.unique_conflict(t, index, key, None, g)? {
                return Err(unique::violation(
                    index,
                    t,
                    row,
                    self.key_holder_seen(t, tid),
                ));
            }
        }
        Ok(())
    }

    /// Update (`row` = Some) or delete (None) of row `rowid`, read at `expected`.
    pub(super) fn write(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        expected: Tid,
        row: Option<&[u8]>,
        stmt: Stmt,
    ) -> Result<WriteOutcome> {
        if let Some(&ei) = self.pending.get(&Self::row_key(t, rowid)) {
            return self.write_again(t, ei, row, stmt);
        }
        let slot = self.table_slot(t);
        self.with_indexes(slot, |txn, idx| {
            txn.write_committed(t, slot, rowid, expected, row, stmt, idx)
        })
    }

    /// [`Txn::write`] of a row this transaction has not written, in table slot `slot`
    /// whose indexes are `idx`.
    #[allow(clippy::too_many_arguments)]
    fn write_committed(
        &mut self,
        t: &TableHandle,
        slot: usize,
        rowid: RowId,
        expected: Tid,
        row: Option<&[u8]>,
        stmt: Stmt,
        idx: &[std::sync::Arc<crate::index::KeyIndex>],
    ) -> Result<WriteOutcome> {
        let engine = self.engine;
        // A committed row: it must still be the version the statement read.
        let indexes = idx.len();
        let want_data = row.is_some() && indexes > 0;
        let state = epoch::with_guard(&engine.collector, |g| {
            t.rows.get(rowid, g).map(|r| {
                // SAFETY: reached through the index under guard `g`.
                let s = unsafe { r.get() }.read(g);
                let data = if want_data {
                    s.data.map(|d| scope::outside(|| d.to_vec()))
                } else {
                    None
                };
                (s.absent(), s.tid(), data)
            })
        });
        match state {
            None | Some((true, _, _)) => return Err(Error::Conflict(AbortReason::RowDeleted)),
            Some((false, tid, _)) if tid != expected => {
                return Err(Error::Conflict(AbortReason::WriteConflict))
            }
            Some((_, _, Some(prev))) => {
                let r = self.check_keys(t, rowid, row.expect("update"), &prev, idx);
                scope::outside(|| drop(prev));
                r?;
            }
            Some(_) => {}
        }
        let kind = if row.is_some() {
            EntryKind::Update
        } else {
            EntryKind::Delete
        };
        self.reserve_entry(kind, idx)?;
        let data = self.new_buffer(row)?;
        self.push_entry(WriteEntry {
            table: slot,
            rowid,
            rec: None,
            origin: Origin::Existing { read_tid: expected },
            newest: Version {
                cid: stmt.cid,
                sub: stmt.sub,
                data,
            },
            older: Vec::new(),
        });
        Ok(WriteOutcome::Done)
    }

    /// Another write of a row this transaction wrote before (entry `ei`).
    fn write_again(
        &mut self,
        t: &TableHandle,
        ei: usize,
        row: Option<&[u8]>,
        stmt: Stmt,
    ) -> Result<WriteOutcome> {
        let engine = self.engine;
        let e = self.entries.get(ei);
        if e.newest.cid == stmt.cid {
            return Ok(WriteOutcome::AlreadyModified);
        }
        let rowid = e.rowid;
        // SAFETY: pending buffers live until the transaction ends.
        let Some(prev) = (unsafe { pending_bytes(e.newest.data) }) else {
            return Ok(WriteOutcome::NotFound);
        };
        if let Some(new) = row {
            let slot = self.table_slot(t);
            self.with_indexes(slot, |txn, idx| txn.check_keys(t, rowid, new, prev, idx))?;
        }
        let data = self.new_buffer(row)?;
        let e = self.entries.get_mut(ei);
        // Versions of the same subtransaction that no statement can see any more
        // (superseded by `newest`, which the current statement sees) are dropped;
        // an inserted row keeps its first version (its keys are in the indexes).
        while e.newest.cid < stmt.cid
            && e.older.last().is_some_and(|o| o.sub == e.newest.sub)
            && !(e.origin == Origin::Inserted && e.older.len() == 1)
        {
            let o = e.older.pop().expect("checked");
            free_private(engine, o.data);
        }
        let prev = std::mem::replace(
            &mut e.newest,
            Version {
                cid: stmt.cid,
                sub: stmt.sub,
                data,
            },
        );
        scope::outside(|| e.older.push(prev));
        Ok(WriteOutcome::Done)
    }

    /// Checks an update of row `rowid` from `prev` to `new` against the unique
    /// indexes (keys it changes), and remembers the row as rekeyed if any key changes.
    fn check_keys(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        new: &[u8],
        prev: &[u8],
        idx: &[std::sync::Arc<crate::index::KeyIndex>],
    ) -> Result<()> {
        if idx.is_empty() {
            return Ok(());
        }
        let tk = super::TableKey::of(t.arc());
        let (mut kn, mut kp) = (Vec::new(), Vec::new());
        let mut changed = false;
        let mut need = 0;
        for index in idx.iter() {
            // Same column bytes, same key: most updates leave keys alone.
            let same = index
                .def
                .columns
                .iter()
                .all(|&c| t.layout.get(new, c as usize) == t.layout.get(prev, c as usize));
            if same {
                continue;
            }
            let null = index.key_of(&t.layout, new, &mut kn)?;
            index.key_of(&t.layout, prev, &mut kp)?;
            if kn == kp {
                continue;
            }
            changed = true;
            need += index.entry_bytes(kn.len());
            self.rekeyed.note_key_change(tk, index.def.id, rowid);
            if index.def.unique && !null {
                let dup = epoch::with_guard(&self.engine.collector, |g| {
                    self.unique_conflict(t, index, &kn, Some(rowid), g)
                })?;
                if let Some(tid) = dup {
                    return Err(unique::violation(
                        index,
                        t,
                        new,
                        self.key_holder_seen(t, tid),
                    ));
                }
                self.rekeyed.note_unique_key(tk, index.def.id, &kn);
            }
        }
        if changed {
            // The new keys' entries are made at commit: reserved with the rest of
            // what commit will take.
            self.engine
                .check_memory(Need::of(self.commit_reserve + need))?;
            self.commit_reserve += need;
            self.rekeyed.note_row(tk, rowid);
        }
        Ok(())
    }
}
