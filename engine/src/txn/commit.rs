//! The commit protocol, in named phases (cf. Silo's `txn_impl.h`). [`Commit::run`]
//! reads as the protocol:
//!
//! 1. **lock key stripes**: the striped locks of every unique key the write set gives
//!    a row, before any record lock (one global order);
//! 2. **find records**: look every written row up again under the commit's guard (a
//!    row read earlier may have been deleted and freed since);
//! 3. **lock write set**: lock every written record in [`super::RowKey`] order (table
//!    address, row id): one global order, so committers cannot deadlock;
//! 4. **mark writers**: count this committer in flight on the tables it writes, so
//!    serializable readers validating from now on conflict;
//! 5. **validate reads** (repeatable read, serializable): rows read unchanged, tables
//!    and key ranges read not written since the start, no other commit in flight on
//!    them (see [`super::read_set`]). After phase 4, so that of two committers each
//!    writing what the other read, the later validator sees the earlier one: in
//!    flight (its mark), or installed (its versions and links); in particular a key
//!    one moves into a range the other read is linked (phase 6) only after its mark;
//! 6. **link new keys**: add the index entries of keys rows gain (rekeyed rows,
//!    updated inserts) before the TID exists: a reader finding one waits on the locked
//!    record;
//! 7. **take TID**: from the global counter, greater than every TID this transaction
//!    read or wrote (those were handed out before);
//! 8. **validate writes**: every pre-existing row written still carries the version
//!    the transaction read (else [`AbortReason`]);
//! 9. **check unique keys**: no other committed row holds a unique key this commit
//!    introduces;
//! 10. **prepare versions**: read the snapshot horizon; if a live snapshot is older
//!     than the TID, allocate the chain nodes that keep the replaced versions (see
//!     [`crate::versions`]) — the last step that may fail for want of memory;
//! 11. **append redo**: the commit record (TID and after-images) goes to the redo log
//!     while the records are locked, so one row's records reach the log in TID order;
//! 12. **install**: queue what must wait for the horizon (pruning the rows' old
//!     versions, index entries of keys rows no longer have, deleted rows), then
//!     publish new buffers and versions and unlock; with no older snapshot, unlink
//!     stale keys at once and retire replaced buffers through the epoch collector;
//! 13. **make durable** (after row locks are released, outside the guard): wait until
//!     the record is durable (group commit), so readers never wait for an fsync.
//!
//! After the commit, the committer processes a few items of the horizon queue.
//!
//! A failure in any phase before install leaves nothing behind: [`Commit`]'s `Drop`
//! undoes, in reverse order, whatever the phases so far did (links, record locks,
//! writer marks, key stripes), and the caller then aborts the write set.

use super::truncate::Replacement;
use super::write_set::Origin;
use super::{free_private, RowKey, TableKey, Txn};
use crate::epoch;
use crate::error::{AbortReason, Error, Result};
use crate::garbage::{Garbage, Retired};
use crate::ids::{Lsn, RowId, Tid};
use crate::index::KeyIndex;
use crate::record::{self, ABSENT_BIT, LOCK_BIT, TID_MASK};
use crate::redo::payload::{CommitRecords, Redefinition};
use crate::redo::Appended;
use crate::scope;
use crate::table::Table;
use crate::versions::{self, Deferred, OldVersion, RowRef, StaleKey, NODE_BYTES};
use crate::versions::{BYTES_PER_ROW, BYTES_PER_STALE_KEY};
use crossbeam_epoch::Guard;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::AcqRel;
use std::sync::Arc;

/// Where a transaction is in its commit (see [`Txn::prepare`]). The state is inline:
/// boxing it would cost an allocation per commit.
#[allow(clippy::large_enum_variant)]
pub(super) enum Prepared {
    /// Nothing to install: finishing releases the row locks.
    ReadOnly,
    /// Locked, validated, and (with an xid) logged: finishing installs.
    Writes(CommitState),
}

impl Txn {
    /// Commits: [`Txn::prepare`] then [`Txn::finish`]. Returns the commit TID (0 if
    /// nothing was written).
    pub(super) fn commit(&mut self, durable: bool) -> Result<Tid> {
        self.prepare(None, durable)?;
        self.finish(durable)
    }

    /// The first half of a commit, for PostgreSQL's PRE_COMMIT: every phase that can
    /// fail (locks, validation, unique keys, memory), so that [`Txn::finish`] cannot.
    /// Nothing is visible yet. With `xid` (the PostgreSQL transaction has one) the redo
    /// record, tagged with it, is written here too (and made durable, if `durable`):
    /// it must be durable before PostgreSQL's commit record, and recovery applies it
    /// only if the xid committed. Without, the record is written by `finish`: the
    /// commit point is then memfdw's own. On error the transaction is aborted; after
    /// success it ends with `finish` or `abort` (which undoes everything).
    pub(super) fn prepare(&mut self, xid: Option<u32>, durable: bool) -> Result<()> {
        if !self.active || self.prepared.is_some() {
            return Err(Error::TxnNotActive);
        }
        self.drop_superseded_writes();
        // It reads no more: its snapshots must not keep the versions it replaces.
        self.release_snapshots();
        let engine = self.engine;
        if self.entries.is_empty() && self.truncations.is_empty() {
            // Not validated, also when serializable: it read one snapshot, a prefix
            // of the commit (TID) order, which is a serial order.
            self.prepared = Some(Prepared::ReadOnly);
            if durable && xid.is_some() {
                // What it read is durable before PostgreSQL's commit record.
                return self.make_durable(None).inspect_err(|_| self.abort());
            }
            return Ok(());
        }
        let prepared = epoch::with_guard(&engine.collector, |g| {
            let mut c = Commit::new(self, g, xid, durable);
            c.prepare_phases()?;
            Ok(c.suspend())
        });
        match prepared {
            Ok(st) => {
                let end = st.logged.map(|a| a.end);
                self.prepared = Some(Prepared::Writes(st));
                if durable && xid.is_some() {
                    self.make_durable(end).inspect_err(|_| self.abort())?;
                }
                Ok(())
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }

    /// The second half of a commit, for PostgreSQL's COMMIT: writes the redo record
    /// (if `prepare` did not), installs, and releases the row locks; then (if
    /// `durable`) waits until the record and what the transaction read are durable.
    /// Fails only if the log cannot be written or synced (the server must then
    /// restart and recover).
    pub(super) fn finish(&mut self, durable: bool) -> Result<Tid> {
        self.finish_then(durable, &mut || {})
    }

    /// [`Txn::finish`], calling `installed` once the commit is installed and its row
    /// locks released, before waiting for the log (the caller lets waiters go: they
    /// then depend on this record, and their own commits wait for it).
    pub(super) fn finish_then(
        &mut self,
        durable: bool,
        installed: &mut dyn FnMut(),
    ) -> Result<Tid> {
        let engine = self.engine;
        let Some(prepared) = self.prepared.take() else {
            return Err(Error::TxnNotActive);
        };
        let outcome = match prepared {
            Prepared::ReadOnly => Ok((Tid::NONE, None, false)),
            Prepared::Writes(st) => epoch::with_guard(&engine.collector, |g| {
                let tagged = st.xid.is_some();
                // (A tagged record was appended, and made durable, at prepare.)
                let r = Commit::resume(self, g, st, durable && !tagged)
                    .finish_phases()
                    .map(|(tid, end)| (tid, end, tagged));
                if r.is_ok() && !self.row_locks.is_empty() {
                    // After the install (waiters then read the new versions), and
                    // under the install's guard: a row this commit deleted may be
                    // unlinked by whoever processes its horizon item, but not freed
                    // before this guard is released.
                    self.release_row_locks(g, 0);
                }
                r
            }),
        };
        if outcome.is_ok() && !self.row_locks.is_empty() {
            // A read-only transaction's locks (SELECT FOR UPDATE): it deleted nothing.
            epoch::with_guard(&engine.collector, |g| self.release_row_locks(g, 0));
        }
        if outcome.is_err() {
            self.abort();
        }
        self.pending.clear();
        self.rekeyed.clear();
        self.truncations.clear();
        self.end_spills();
        self.active = false;
        let (tid, log_end, tagged) = outcome?;
        scope::outside(&mut *installed);
        engine.reclaim_versions(HELP_ITEMS);
        if durable && !tagged {
            self.make_durable(log_end)?;
        }
        Ok(tid)
    }

    /// Phase 13: returns once the log is durable up to `log_end` (this transaction's
    /// record) and [`Txn::depends_on`] (every record whose versions it read).
    fn make_durable(&self, log_end: Option<Lsn>) -> Result<()> {
        let upto = log_end.unwrap_or_default().max(self.depends_on);
        if let Some(sink) = self.engine.sink() {
            if upto > Lsn(0) {
                sink.make_durable(upto)
                    .map_err(|e| Error::NotDurable(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Undoes a prepared commit (PostgreSQL aborted after PRE_COMMIT): unlinks its
    /// keys, unlocks its records, frees what it allocated. A record it logged stays in
    /// the log, tagged with an xid PostgreSQL's commit log says did not commit.
    pub(super) fn undo_prepared(&mut self) {
        if let Some(Prepared::Writes(st)) = self.prepared.take() {
            let engine = self.engine;
            epoch::with_guard(&engine.collector, |g| {
                drop(Commit::resume(self, g, st, false))
            });
        }
    }
}

impl Txn {
    /// What kinds of entries the write set holds (one walk of it).
    fn write_kinds(&self) -> WriteKinds {
        let mut k = WriteKinds::default();
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            if e.origin == Origin::Inserted {
                if !e.older.is_empty() || e.newest.data.is_null() {
                    k.other_inserts += 1;
                }
            } else if e.newest.data.is_null() {
                k.deleted += 1;
            } else {
                k.updated += 1;
            }
        }
        k
    }
}

/// The kinds of entries in a write set, counted once per commit: a phase that concerns
/// only some kinds skips its walk of a write set without them (a million-row insert
/// walked it five more times to find nothing to do).
#[derive(Default, Clone, Copy)]
pub(super) struct WriteKinds {
    /// Pre-existing rows updated, and deleted.
    updated: usize,
    deleted: usize,
    /// Rows inserted by this transaction and then updated or deleted by it (the rest of
    /// its inserts are plain: inserted once, never changed).
    other_inserts: usize,
}

impl WriteKinds {
    fn existing(&self) -> usize {
        self.updated + self.deleted
    }
}

/// Items of the horizon queue a committer processes after its commit.
const HELP_ITEMS: usize = 4;

/// An index entry linked by phase 6 (unlinked again if the commit fails).
struct Link {
    /// Slot of the table in [`Txn::tables`], and of the index in its index list.
    table: usize,
    index: usize,
    key: Vec<u8>,
    rowid: RowId,
}

/// What a commit holds and must undo or finish (see [`Commit`]); kept in the
/// transaction between [`Txn::prepare`] and [`Txn::finish`].
#[derive(Default)]
pub(super) struct CommitState {
    /// Each written table's indexes, by table slot, as of the commit.
    idx: Vec<Arc<[Arc<KeyIndex>]>>,
    /// Key stripes held (phase 1).
    stripes: Vec<usize>,
    /// Records locked (phase 3): the first `locked` entries in lock order.
    locked: usize,
    /// Table slots marked with a writer in flight (phase 4).
    marked: Vec<usize>,
    /// Index entries linked (phase 6), in private memory: a mass key update makes many,
    /// and they live only during this commit, in this process.
    links: Vec<Link>,
    /// Per write-set entry, the keys (index slot, key) its row no longer has, unlinked
    /// after install.
    stale: BTreeMap<usize, Vec<(usize, Vec<u8>)>>,
    /// TRUNCATEs, ALTERs, loads and unloads taking effect.
    truncations: Vec<Replacement>,
    /// The kinds of the write set's entries (counted before phase 1; used by phases
    /// 2, 6, 8, 10 and 12).
    kinds: Option<WriteKinds>,
    /// The snapshot horizon read after the TID was taken (phase 10).
    horizon: Tid,
    /// Chain nodes for the replaced versions, one per pre-existing row written, if a
    /// snapshot older than the TID may read them (phase 10; private memory).
    nodes: Vec<*mut OldVersion>,
    /// The commit TID (phase 7).
    tid: Tid,
    /// The PostgreSQL transaction, if it has one: its record is written by prepare.
    xid: Option<u32>,
    /// The redo append (phase 11), until the install reports it installed.
    logged: Option<Appended>,
    /// Inside the engine's redefine gate (a commit that redefines a table).
    gate: bool,
}

/// A commit in progress, under one epoch guard. It records in its state what the
/// phases have done that a failure must undo; dropping it undoes that (see the module
/// documentation). Between PostgreSQL's PRE_COMMIT and COMMIT the state is kept in the
/// transaction (suspended) and taken up again (resumed).
struct Commit<'t, 'g> {
    txn: &'t mut Txn,
    g: &'g Guard,
    /// The commit waits for durability right after its record is appended (so the
    /// log may stage the record for that sync).
    durable: bool,
    /// Was the record appended (with no log: phase 11 done)?
    appended: bool,
    st: CommitState,
}

impl<'t, 'g> Commit<'t, 'g> {
    fn new(txn: &'t mut Txn, g: &'g Guard, xid: Option<u32>, durable: bool) -> Self {
        let st = CommitState {
            idx: txn.tables.iter().map(|t| t.indexes()).collect(),
            truncations: txn.final_truncations(),
            xid,
            ..CommitState::default()
        };
        Commit {
            txn,
            g,
            durable,
            appended: false,
            st,
        }
    }

    /// The phases that may fail (with an xid, the redo append too).
    fn prepare_phases(&mut self) -> Result<()> {
        // Before any lock: a checkpoint may hold the gate closed for a while.
        if self
            .st
            .truncations
            .iter()
            .any(|r| r.reside.is_some() || redefines(&r.old, &r.new))
        {
            self.txn.engine.enter_redefine();
            self.st.gate = true;
        }
        self.st.kinds = Some(self.txn.write_kinds());
        self.lock_key_stripes()?;
        self.find_records()?;
        self.lock_write_set();
        self.mark_writers();
        self.validate_reads()?;
        self.link_new_keys();
        self.st.tid = self.take_tid();
        self.validate_writes()?;
        self.check_unique_keys()?;
        self.prepare_versions(self.st.tid)?;
        if self.st.xid.is_some() {
            self.st.logged = self.append_redo(self.st.tid)?;
            self.appended = true;
        }
        Ok(())
    }

    /// The rest: the redo append (without an xid) and the install. Returns the TID
    /// and where the redo record ends.
    fn finish_phases(mut self) -> Result<(Tid, Option<Lsn>)> {
        if !self.appended {
            self.st.logged = self.append_redo(self.st.tid)?;
            self.appended = true;
        }
        let (tid, logged) = (self.st.tid, self.st.logged);
        self.install(tid, logged);
        self.st.logged = None;
        Ok((tid, logged.map(|a| a.end)))
    }

    /// Hands what the commit holds to a [`CommitState`] (nothing is undone).
    fn suspend(mut self) -> CommitState {
        debug_assert!(self.st.xid.is_none() || self.appended);
        // Dropped with an empty state: nothing is undone.
        std::mem::take(&mut self.st)
    }

    /// Takes a suspended commit up again, under guard `g`.
    fn resume(txn: &'t mut Txn, g: &'g Guard, st: CommitState, durable: bool) -> Self {
        Commit {
            txn,
            g,
            durable,
            appended: st.xid.is_some(),
            st,
        }
    }

    /// Phase 1.
    fn lock_key_stripes(&mut self) -> Result<()> {
        let k = self.kinds();
        let keyed_rows = self.txn.pending.len() - k.deleted;
        let stripes = self.txn.key_stripes(&self.st.idx, keyed_rows)?;
        for &s in &stripes {
            self.txn.engine.lock_key_stripe(s);
        }
        self.st.stripes = stripes;
        Ok(())
    }

    /// The kinds of the write set's entries (counted at the start of the phases).
    fn kinds(&self) -> WriteKinds {
        self.st.kinds.unwrap_or_else(|| self.txn.write_kinds())
    }

    /// Phase 2. A pre-existing row that is no longer linked was deleted by a
    /// committed transaction.
    fn find_records(&mut self) -> Result<()> {
        if self.kinds().existing() == 0 {
            return Ok(());
        }
        let txn = &mut *self.txn;
        for &i in txn.pending.values() {
            let e = txn.entries.get(i);
            if e.origin != Origin::Inserted {
                let Some(r) = txn.tables[e.table].rows.get(e.rowid, self.g) else {
                    return Err(Error::Conflict(AbortReason::RowDeleted));
                };
                txn.entries.get_mut(i).rec = Some(r);
            }
        }
        Ok(())
    }

    /// Phase 3.
    fn lock_write_set(&mut self) {
        for &i in self.txn.pending.values() {
            let rec = self.txn.entries.get(i).rec.expect("found in phase 2");
            // SAFETY: linked records found under the guard stay allocated while it
            // lives.
            unsafe { rec.get() }.lock();
            self.st.locked += 1;
        }
    }

    /// Phase 5.
    fn validate_reads(&self) -> Result<()> {
        self.txn.validate_reads(self.g, &self.st.marked)
    }

    /// Phase 4.
    fn mark_writers(&mut self) {
        let txn = &*self.txn;
        // Table slots written, in slot order (without a vector of one slot per row:
        // a million-row insert sorted eight megabytes here).
        let mut seen = vec![false; txn.tables.len()];
        for &i in txn.pending.values() {
            seen[txn.entries.get(i).table] = true;
        }
        let written: Vec<usize> = (0..seen.len()).filter(|&s| seen[s]).collect();
        for &w in &written {
            txn.tables[w].writers_in_flight.fetch_add(1, AcqRel);
        }
        self.st.marked = written;
    }

    /// Phase 6: links the index entries of the final keys of rekeyed rows and of
    /// updated inserted rows, and notes the keys they lose (unlinked after install).
    fn link_new_keys(&mut self) {
        let kinds = self.kinds();
        if kinds.existing() == 0 && kinds.other_inserts == 0 {
            // Plain inserts only: their entries were linked as they were inserted.
            return;
        }
        let txn = &*self.txn;
        let g = self.g;
        for &i in txn.pending.values() {
            let e = txn.entries.get(i);
            let indexes = &self.st.idx[e.table];
            let plain_insert =
                e.origin == Origin::Inserted && e.older.is_empty() && !e.newest.data.is_null();
            let keeps_keys = !e.newest.data.is_null() && !txn.may_rekey(i);
            if indexes.is_empty() || plain_insert || keeps_keys {
                continue;
            }
            let table = &txn.tables[e.table];
            let r = e.rec.expect("found");
            let base = match e.origin {
                Origin::Inserted => e.base_version(),
                // SAFETY: locked by us: the committed buffer is stable.
                Origin::Existing { .. } => unsafe { r.get() }.data_ptr(),
            };
            // SAFETY: live buffers (pending, or committed under our lock).
            let base = unsafe { super::pending_bytes(base) };
            let fin = e.newest_bytes();
            let (mut kb, mut kf) = (Vec::new(), Vec::new());
            for (n, index) in indexes.iter().enumerate() {
                // Keys were encoded from these same rows before: cannot fail now.
                if let Some(b) = base {
                    let _ = index.key_of(&table.layout, b, &mut kb);
                }
                if let Some(f) = fin {
                    let _ = index.key_of(&table.layout, f, &mut kf);
                }
                let moved = base.is_none() || fin.is_none() || kf != kb;
                // The entry may be there already: a key the row had before, whose
                // removal waits for an older snapshot. It is not this commit's to undo.
                if fin.is_some() && moved && !index.contains(&kf, e.rowid, g) {
                    index.insert(&kf, e.rowid, r, g);
                    txn.engine.account(index.entry_bytes(kf.len()) as isize);
                    scope::outside(|| {
                        self.st.links.push(Link {
                            table: e.table,
                            index: n,
                            key: kf.clone(),
                            rowid: e.rowid,
                        })
                    });
                }
                if base.is_some() && moved {
                    scope::outside(|| self.st.stale.entry(i).or_default().push((n, kb.clone())));
                }
            }
        }
    }

    /// Phase 7.
    fn take_tid(&self) -> Tid {
        self.txn.engine.next_commit_tid()
    }

    /// Phase 8.
    fn validate_writes(&self) -> Result<()> {
        if self.kinds().existing() == 0 {
            return Ok(());
        }
        let txn = &*self.txn;
        for &i in txn.pending.values() {
            let e = txn.entries.get(i);
            if let Origin::Existing { read_tid } = e.origin {
                // SAFETY: found under the guard and locked by us.
                let v = unsafe { e.rec.expect("found").get() }.version() & !LOCK_BIT;
                if v & ABSENT_BIT != 0 {
                    return Err(Error::Conflict(AbortReason::RowDeleted));
                }
                if v & TID_MASK != read_tid.get() {
                    return Err(Error::Conflict(AbortReason::WriteConflict));
                }
            }
        }
        Ok(())
    }

    /// Phase 9.
    fn check_unique_keys(&self) -> Result<()> {
        if self.st.idx.iter().any(|l| l.iter().any(|x| x.def.unique)) {
            self.txn.check_unique_at_commit(&self.st.idx, self.g)?;
        }
        Ok(())
    }

    /// Phase 10.
    fn prepare_versions(&mut self, tid: Tid) -> Result<()> {
        let txn = &*self.txn;
        let engine = txn.engine;
        self.st.horizon = engine.horizon();
        let keep = self.st.horizon < tid;
        let WriteKinds {
            updated, deleted, ..
        } = self.kinds();
        let nodes = if keep { updated + deleted } else { 0 };
        let queued = deleted + if keep { updated } else { 0 };
        let stale: usize = if keep {
            self.st
                .stale
                .values()
                .flatten()
                .map(|(_, k)| k.len())
                .sum::<usize>()
                + self.st.stale.values().map(Vec::len).sum::<usize>() * BYTES_PER_STALE_KEY
        } else {
            0
        };
        let need = nodes * NODE_BYTES + queued * BYTES_PER_ROW + stale;
        if need == 0 {
            return Ok(());
        }
        engine.check_memory_for_delete(crate::engine::Need::of(need))?;
        for _ in 0..nodes {
            let n = OldVersion::alloc();
            engine.account(NODE_BYTES as isize);
            scope::outside(|| self.st.nodes.push(n));
        }
        Ok(())
    }

    /// The horizon queue's item for this commit (phase 12): what may only happen once
    /// no snapshot older than `tid` is left. None if there is nothing to wait for.
    fn deferred_work(&self, tid: Tid, keep: bool) -> Option<Deferred> {
        let txn = &*self.txn;
        let WriteKinds {
            updated, deleted, ..
        } = self.kinds();
        if deleted == 0 && !(keep && updated > 0) {
            return None;
        }
        let mut d = Deferred {
            tid,
            tables: txn.tables.clone(),
            prune: Vec::with_capacity(if keep { updated } else { 0 }),
            stale: Vec::new(),
            unlink: Vec::with_capacity(deleted),
        };
        for &i in txn.pending.values() {
            let e = txn.entries.get(i);
            if e.origin == Origin::Inserted {
                continue;
            }
            let row = RowRef {
                table: e.table as u32,
                rowid: e.rowid,
                rec: e.rec.expect("found"),
            };
            if e.newest.data.is_null() {
                // Its keys go with it (see `versions`).
                d.unlink.push(row);
            } else if keep {
                d.prune.push(row);
                for (n, key) in self.st.stale.get(&i).into_iter().flatten() {
                    d.stale.push(StaleKey {
                        row,
                        index: self.st.idx[e.table][*n].clone(),
                        key: key[..].into(),
                    });
                }
            }
        }
        Some(d)
    }

    /// Phase 11: the commit record (or its parts, see [`CommitRecords`]), encoded and
    /// appended in private memory.
    fn append_redo(&self, tid: Tid) -> Result<Option<Appended>> {
        let txn = &*self.txn;
        let Some(sink) = txn.engine.sink() else {
            return Ok(None);
        };
        let appended = scope::outside(|| {
            let mut records = CommitRecords::new(tid, sink.max_record());
            if let Some(xid) = self.st.xid {
                records.xact(xid);
            }
            // Before the rows: replay empties the tables, then applies what this
            // transaction wrote into the replacements.
            for r in &self.st.truncations {
                // A load or unload first, then what followed it in this transaction.
                let mut base = &r.old;
                if let Some((twin, from)) = &r.reside {
                    records.reside(r.old.id, twin.residency(), from.as_deref());
                    base = twin;
                }
                if Arc::ptr_eq(base, &r.new) {
                    continue;
                }
                if redefines(base, &r.new) {
                    records.redefine(&Redefinition {
                        table: r.old.id,
                        def: r.new.def.clone(),
                        indexes: r.new.index_defs(),
                    });
                } else {
                    records.truncate(r.old.id);
                }
            }
            // Each part is appended as soon as it is complete (the log writes it
            // while the rest is encoded into a reused buffer).
            let mut writes = txn.pending.values();
            let mut next = |out: &mut Vec<u8>| loop {
                if records.take_ready(out) {
                    return true;
                }
                match writes.next() {
                    Some(&i) => {
                        let e = txn.entries.get(i);
                        if e.logged() {
                            records.push(txn.tables[e.table].id, e.rowid, e.newest_bytes());
                        }
                    }
                    None if records.ended() => return false,
                    None => records.end(),
                }
            };
            if self.durable {
                sink.append_stream_to_sync(&mut next)
            } else {
                sink.append_stream(&mut next)
            }
        });
        appended.map(Some).map_err(|e| Error::LogIo(e.to_string()))
    }

    /// Phase 12: queue the work that waits for the horizon, install every entry and
    /// unlock it; unlink stale keys (at once if no snapshot is older than the commit)
    /// and retire what was replaced. Cannot fail.
    fn install(&mut self, tid: Tid, logged: Option<Appended>) {
        let keep = !self.st.nodes.is_empty();
        // Queued before any record is unlocked: see the `versions` invariants.
        if let Some(d) = self.deferred_work(tid, keep) {
            self.txn.engine.horizon_queue().push(d);
        }
        let horizon = self.st.horizon;
        let mut nodes = std::mem::take(&mut self.st.nodes).into_iter();
        let txn = &mut *self.txn;
        let (engine, g) = (txn.engine, self.g);
        let mut garbage = Garbage::default();
        // Per table slot: did this commit write rows of it, give rows keys they did not
        // have? Its rows' and bytes' changes. (Counted here and published once per table after the
        // loop, before the writer marks are cleared: per row, these atomic updates of
        // lines every committer shares were a tenth of a big commit.)
        let mut new_keys = vec![false; txn.tables.len()];
        let mut counts = vec![(0i64, 0i64); txn.tables.len()];
        let mut wrote = vec![false; txn.tables.len()];
        for (i, e) in txn.entries.take_all().enumerate() {
            let table = &txn.tables[e.table];
            let r = e.rec.expect("found");
            // SAFETY: found under the guard and locked by us.
            let rec = unsafe { r.get() };
            for o in &e.older {
                free_private(engine, o.data);
            }
            let existing = e.origin != Origin::Inserted;
            let old_size = size(rec.data_ptr());
            let mut node = None;
            if existing {
                versions::retire_chain(table, rec.prune(horizon), &mut garbage);
                node = if keep { nodes.next() } else { None };
            }
            let old = rec.install_and_unlock(e.newest.data, tid, node);
            if node.is_some() {
                if old_size > 0 {
                    table.account_versions(1, NODE_BYTES as i64 + old_size);
                } else {
                    // The node was freed unused (nothing present was replaced).
                    engine.account(-(NODE_BYTES as isize));
                }
            }
            let stale = self.st.stale.remove(&i).unwrap_or_default();
            // Kept versions keep their keys until the horizon passes (see
            // `deferred_work`).
            if !(keep && existing) {
                for (n, key) in stale {
                    let index = &self.st.idx[e.table][n];
                    if index.remove(&key, e.rowid, g) {
                        engine.account(-(index.entry_bytes(key.len()) as isize));
                    }
                }
            }
            if e.origin == Origin::Inserted {
                // Its inserter's lock ends with the commit.
                rec.release_insert_lock(txn.lock_tag, engine);
                if !e.newest.data.is_null() {
                    new_keys[e.table] = true;
                }
            } else if !e.newest.data.is_null()
                && txn.rekeyed.contains(RowKey {
                    table: TableKey::of(table),
                    rowid: e.rowid,
                })
            {
                // A row whose keys may have changed: counted whether or not its new
                // key needed a new entry (an old version may still hold one).
                new_keys[e.table] = true;
            }
            let deleted = e.newest.data.is_null();
            let rows_delta = match (e.origin, deleted) {
                (Origin::Inserted, false) => 1,
                (Origin::Existing { .. }, true) => -1,
                _ => 0,
            };
            wrote[e.table] = true;
            let c = &mut counts[e.table];
            c.0 += rows_delta;
            c.1 += size(e.newest.data) - old_size;
            garbage.push(Retired::Buffer(old));
            // A deleted pre-existing row is unlinked by its queued `Unlink`.
            if deleted && !existing {
                table.rows.remove(e.rowid, g);
                garbage.push(Retired::Record(r.0));
            }
        }
        // Every record is unlocked; the linked keys stay.
        self.st.locked = 0;
        // Rows that moved into an index range count as inserts for phantom checks.
        for l in std::mem::take(&mut self.st.links) {
            new_keys[l.table] = true;
        }
        // For serializable validation: published before the writer marks are cleared
        // (a validator that sees no mark sees these).
        for (slot, t) in txn.tables.iter().enumerate() {
            if wrote[slot] {
                t.last_write_tid.fetch_max(tid.get(), AcqRel);
            }
            if new_keys[slot] {
                t.last_insert_tid.fetch_max(tid.get(), AcqRel);
            }
            t.account(counts[slot].0, counts[slot].1);
        }
        // Tables whose rows got keys they did not have: counted before the key
        // stripes are released (see `Table::key_commits`).
        for (t, _) in txn.tables.iter().zip(&new_keys).filter(|(_, &n)| n) {
            t.key_commits.fetch_add(1, AcqRel);
        }
        garbage.retire(engine, g);
        // TRUNCATEs: the replacements go into the catalog; readers that read the old
        // tables (serializable validation) see them written.
        for r in std::mem::take(&mut self.st.truncations) {
            r.old.last_write_tid.fetch_max(tid.get(), AcqRel);
            r.old.last_insert_tid.fetch_max(tid.get(), AcqRel);
            if let Some((_, Some(from))) = &r.reside {
                // Replay of this commit reads the file again until a checkpoint that
                // begins after now covers the loaded rows; pinned before the catalog
                // stops naming it (see `crate::unload`).
                engine.pin_spill_file(
                    from,
                    engine
                        .checkpoints_begun
                        .load(std::sync::atomic::Ordering::SeqCst)
                        + 1,
                );
            }
            engine.replace_table(&r.old, r.new, false);
        }
        if let (Some(sink), Some(a)) = (engine.sink(), logged) {
            sink.installed(a.phase);
        }
    }
}

/// The bytes accounted for row buffer `p` (0 for null).
fn size(p: *mut u8) -> i64 {
    if p.is_null() {
        0
    } else {
        // SAFETY: `p` is live (pending, or committed under the caller's lock).
        record::rowbuf_size(unsafe { record::rowbuf_slice(p) }.len()) as i64
    }
}

impl Drop for Commit<'_, '_> {
    /// Undoes what the phases did, latest first. After a successful install only the
    /// writer marks and key stripes remain to release.
    fn drop(&mut self) {
        if let (Some(sink), Some(a)) = (self.txn.engine.sink(), self.st.logged) {
            // Logged, never installed: a checkpoint must not wait for it.
            sink.installed(a.phase);
        }
        for &n in &self.st.nodes {
            // SAFETY: allocated by phase 10 and never published (install takes them).
            unsafe { versions::free_unused(n) };
            self.txn.engine.account(-(NODE_BYTES as isize));
        }
        for l in &self.st.links {
            let index = &self.st.idx[l.table][l.index];
            index.remove(&l.key, l.rowid, self.g);
            self.txn
                .engine
                .account(-(index.entry_bytes(l.key.len()) as isize));
        }
        for &i in self.txn.pending.values().take(self.st.locked) {
            let rec = self
                .txn
                .entries
                .get(i)
                .rec
                .expect("locked entries have records");
            // SAFETY: found under the commit guard, still held; we hold its lock.
            unsafe { rec.get() }.unlock();
        }
        for &w in &self.st.marked {
            self.txn.tables[w].writers_in_flight.fetch_sub(1, AcqRel);
        }
        for &s in &self.st.stripes {
            self.txn.engine.unlock_key_stripe(s);
        }
        if self.st.gate {
            self.txn.engine.leave_redefine();
        }
    }
}

/// Does replacing `old` by `new` change the table's definition or indexes (logged as
/// a redefine entry, not a truncate entry)?
fn redefines(old: &Table, new: &Table) -> bool {
    new.def != old.def || new.index_defs() != old.index_defs()
}
