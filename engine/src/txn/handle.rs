//! [`TxnHandle`]: the transaction as callers see it. Every call that touches shared
//! structures enters the engine scope for its whole duration (see [`crate::scope`]).

use super::{IndexScan, Isolation, RowBatch, RowLock, ScanCursor, Stmt, Txn, WriteOutcome};
use crate::engine::TableHandle;
use crate::error::{Error, Result};
use crate::ids::{RowId, TableId, Tid};
use crate::index::IndexDef;
use crate::rowlock::LockMode;
use crate::scope;
use crate::unload::{Residency, UnloadMode};
use std::path::Path;
use std::time::Duration;

/// A transaction owned by one thread (one PostgreSQL backend). It lives in the arena;
/// dropping an unfinished handle aborts it.
pub struct TxnHandle {
    txn: *mut Txn,
}

// SAFETY: a handle is used by one thread at a time; everything it points to is in
// shared memory and synchronised by the engine's protocols.
unsafe impl Send for TxnHandle {}

impl TxnHandle {
    pub(crate) fn new(txn: Txn) -> TxnHandle {
        let _s = scope::enter();
        TxnHandle {
            txn: Box::into_raw(Box::new(txn)),
        }
    }

    fn txn(&mut self) -> &mut Txn {
        // SAFETY: the handle owns the box until drop.
        unsafe { &mut *self.txn }
    }

    pub fn id(&mut self) -> u64 {
        self.txn().id
    }

    /// True if the transaction has pending writes.
    pub fn has_writes(&mut self) -> bool {
        !self.txn().entries.is_empty()
    }

    pub fn is_active(&mut self) -> bool {
        self.txn().active
    }

    /// Inserts a packed row; returns its row id.
    pub fn insert(&mut self, t: &TableHandle, row: &[u8], stmt: Stmt) -> Result<RowId> {
        let _s = scope::enter();
        self.check_active()?;
        check_loaded(t)?;
        self.txn().insert(t, row, stmt)
    }

    /// Replaces row `rowid`, which the caller read at version `expected`.
    pub fn update(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        expected: Tid,
        row: &[u8],
        stmt: Stmt,
    ) -> Result<WriteOutcome> {
        let _s = scope::enter();
        self.check_active()?;
        self.txn().write(t, rowid, expected, Some(row), stmt)
    }

    /// Deletes row `rowid`, which the caller read at version `expected`.
    pub fn delete(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        expected: Tid,
        stmt: Stmt,
    ) -> Result<WriteOutcome> {
        let _s = scope::enter();
        self.check_active()?;
        self.txn().write(t, rowid, expected, None, stmt)
    }

    /// Fills `batch` with up to `max_rows` rows after the cursor that a statement with
    /// command id `cid` sees, and advances the cursor.
    pub fn scan(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> Result<()> {
        let _s = scope::enter();
        self.txn().scan(t, cursor, cid, batch, max_rows.max(1))
    }

    /// Hands the rows after `cursor` that a statement with command id `cid` sees to
    /// `visit`, up to `max_rows` of the table's rows at a time, without copying them
    /// (see [`Txn::scan_visit`]: `visit` must not allocate in the engine's memory,
    /// block or call back).
    pub fn scan_visit(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        max_rows: usize,
        visit: impl FnMut(&[u8]),
    ) -> Result<()> {
        let _s = scope::enter();
        self.txn()
            .scan_visit(t, cursor, cid, max_rows.max(1), visit)
    }

    /// Visits the committed rows with ids in `from..to` that pass `filter` on
    /// `states.len()` threads (see [`Txn::scan_visit_parallel`]); None if this
    /// transaction sees the table otherwise than as committed.
    pub fn scan_visit_parallel<S: Send>(
        &mut self,
        t: &TableHandle,
        filter: Option<&std::sync::Arc<crate::row_filter::RowFilter>>,
        from: u64,
        to: u64,
        states: &mut [S],
        visit: impl Fn(&mut S, &[u8]) + Sync,
    ) -> Result<Option<(u64, u64)>> {
        let _s = scope::enter();
        self.txn()
            .scan_visit_parallel(t, filter, from, to, states, visit)
    }

    /// Fills `batch` with up to `max_rows` rows of an index scan that a statement with
    /// command id `cid` sees, in the scan's order, and advances the scan. Fails if the
    /// index was dropped.
    pub fn index_scan(
        &mut self,
        t: &TableHandle,
        scan: &mut IndexScan,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> Result<()> {
        let _s = scope::enter();
        self.txn().index_scan(t, scan, cid, batch, max_rows.max(1))
    }

    /// Sets up a scan of `t` that other processes share (see [`super::shared_scan`]),
    /// reading what the current statement reads; the caller places the result where
    /// they all see it and reads with [`Engine::shared_scan`].
    ///
    /// [`Engine::shared_scan`]: crate::Engine::shared_scan
    pub fn start_shared_scan(&mut self, t: &TableHandle) -> super::SharedScan {
        let _s = scope::enter();
        self.txn().start_shared_scan(t)
    }

    /// Does this transaction see table `id` otherwise than as committed (it wrote,
    /// truncated or altered it)? A scan other processes share cannot read it then.
    pub fn own_view_of(&mut self, id: TableId) -> bool {
        self.txn().own_view_of(id)
    }

    /// This transaction has just been given committed rows read by other processes
    /// for it (a shared scan): its commit waits for the log's current end (durable
    /// reads).
    pub fn note_shared_reads(&mut self) {
        self.txn().note_read_committed()
    }

    /// Builds index `def` on `t` (its id from [`Engine::next_index_id`]) and publishes
    /// it, logged. Fails with nothing left if a unique index meets a duplicate. The
    /// caller keeps other writers of `t` out while it runs, and drops the index with
    /// [`Engine::drop_index`] if the transaction aborts.
    pub fn create_index(&mut self, t: &TableHandle, def: IndexDef) -> Result<()> {
        let _s = scope::enter();
        self.check_active()?;
        check_loaded(t)?;
        if self.txn().is_resident_twin(t.arc()) {
            return Err(Error::ChangedInTransaction { table: t.id });
        }
        self.txn().build_index(t, def)
    }

    /// TRUNCATE of `t` (as [`TxnHandle::table`] gives it) by subtransaction `sub`:
    /// from now on this transaction sees the table empty; at commit it replaces the
    /// table (in constant memory: see [`crate::truncate`]).
    pub fn truncate(&mut self, t: &TableHandle, sub: u32) -> Result<()> {
        let _s = scope::enter();
        self.check_active()?;
        check_loaded(t)?;
        self.txn().truncate(t, sub)
    }

    /// ALTER TABLE of `t` (as [`TxnHandle::table`] gives it) by subtransaction `sub`:
    /// from now on this transaction sees an empty table with definition `def` and
    /// indexes `indexes` (ids of new ones from [`Engine::next_index_id`]), which the
    /// caller fills with `t`'s rows rewritten (read them first, with
    /// [`TxnHandle::scan_newest`]); at commit it replaces the table, logged with its
    /// new definition. The caller keeps every other session away from the table
    /// until the transaction ends (PostgreSQL's AccessExclusiveLock).
    pub fn redefine(
        &mut self,
        t: &TableHandle,
        def: crate::catalog::TableDef,
        indexes: &[IndexDef],
        sub: u32,
    ) -> Result<()> {
        let _s = scope::enter();
        self.check_active()?;
        check_loaded(t)?;
        self.txn().redefine(t, def, indexes, sub)
    }

    /// Like [`TxnHandle::scan`], but reads the newest committed version of each row
    /// (and this transaction's own writes) whatever the snapshot: ALTER TABLE's
    /// rewrite, which must keep rows committed after a repeatable read snapshot.
    pub fn scan_newest(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> Result<()> {
        let _s = scope::enter();
        let txn = self.txn();
        txn.read_newest = true;
        let r = txn.scan(t, cursor, cid, batch, max_rows.max(1));
        txn.read_newest = false;
        r
    }

    /// Drops index `id` of `t` at once if `t` is this transaction's replacement of its
    /// table (after TRUNCATE or ALTER: unlogged, the commit logs the replacement with
    /// its indexes); returns false, doing nothing, for a table in the catalog.
    pub fn drop_index_of_replacement(&mut self, t: &TableHandle, id: u32) -> bool {
        let _s = scope::enter();
        if !self.txn().is_twin(t.arc()) {
            return false;
        }
        self.txn().engine.drop_index_from(t, id);
        true
    }

    /// Unloads `t` (as [`TxnHandle::table`] gives it) by subtransaction `sub`, spilling
    /// its rows to a new file in `spill_dir` for [`UnloadMode::Spill`] (see
    /// [`crate::unload`]); from now on this transaction sees it unloaded, and its
    /// commit makes it so. Returns the new residency, or None if the table already is
    /// unloaded that way. It must be the first change of `t` in this transaction. The
    /// caller keeps every other session away from the table until the transaction
    /// ends (PostgreSQL's AccessExclusiveLock).
    pub fn unload(
        &mut self,
        t: &TableHandle,
        mode: UnloadMode,
        spill_dir: &Path,
        sub: u32,
    ) -> Result<Option<Residency>> {
        let _s = scope::enter();
        self.check_active()?;
        self.txn().unload(t, mode, spill_dir, sub)
    }

    /// Loads `t` back (see [`TxnHandle::unload`]): the rows of its spill file in
    /// `spill_dir`, with its indexes, or none for a discarded table. Returns the rows
    /// loaded, or None if it is loaded already.
    pub fn load(&mut self, t: &TableHandle, spill_dir: &Path, sub: u32) -> Result<Option<u64>> {
        let _s = scope::enter();
        self.check_active()?;
        self.txn().load(t, spill_dir, sub)
    }

    /// Did this transaction load or unload table `id`? (Index DDL on it must wait for
    /// the next transaction.)
    pub fn resided(&mut self, id: TableId) -> bool {
        self.txn().resided(id)
    }

    /// Table `id` was created by this transaction: no other transaction can write it
    /// until this one commits (PostgreSQL's catalog hides it), so its commit skips
    /// the unique-key checks its statements already made.
    pub fn note_private(&mut self, id: TableId) {
        let _s = scope::enter();
        let txn = self.txn();
        if !txn.private.contains(&id) {
            txn.private.push(id);
        }
    }

    /// Did this transaction TRUNCATE table `id` (it then works on a replacement)?
    pub fn truncated(&mut self, id: TableId) -> bool {
        self.txn().truncations_of(id)
    }

    /// Table `id` as this transaction sees it (after its own TRUNCATEs).
    pub fn table(&mut self, id: TableId) -> Option<TableHandle> {
        let _s = scope::enter();
        self.txn().current_table(id)
    }

    /// Sets the isolation level; call right after [`Engine::begin`] (and
    /// [`TxnHandle::set_lock_tag`]), before any read. Repeatable read and serializable
    /// take their snapshot here; it stays registered until the transaction ends.
    pub fn set_isolation(&mut self, iso: Isolation) -> Result<()> {
        let _s = scope::enter();
        let txn = self.txn();
        txn.iso = iso;
        txn.start_tid = if iso == Isolation::ReadCommitted {
            txn.engine.last_tid()
        } else {
            txn.take_snapshot()?
        };
        Ok(())
    }

    /// Takes a snapshot for a read committed statement and registers it (repeatable
    /// read and serializable: returns the transaction's). Reads use it once passed to
    /// [`TxnHandle::set_read_snapshot`]; it stays registered until
    /// [`TxnHandle::retain_snapshots`] lets it go or the transaction ends.
    pub fn snapshot(&mut self) -> Result<Tid> {
        let txn = self.txn();
        if txn.iso != Isolation::ReadCommitted {
            return Ok(txn.start_tid);
        }
        txn.take_snapshot()
    }

    /// Read committed: the snapshot (from [`TxnHandle::snapshot`]) the following
    /// reads see committed rows at; None: the newest committed versions.
    pub fn set_read_snapshot(&mut self, at: Option<Tid>) {
        self.txn().statement_snapshot = at;
    }

    /// Read committed: the oldest snapshot the caller still reads at, None if none;
    /// the versions only older snapshots needed may then be reclaimed.
    pub fn retain_snapshots(&mut self, oldest: Option<Tid>) {
        self.txn().retain_snapshots(oldest)
    }

    pub fn isolation(&mut self) -> Isolation {
        self.txn().iso
    }

    /// Names this transaction in row locks by `tag` instead of its id: non-zero,
    /// unique among live transactions, within [`crate::rowlock::TAG_MASK`], its low
    /// [`crate::rowlock::SUB_BITS`] bits zero (they name the subtransaction of each
    /// lock). Call before locking any row.
    pub fn set_lock_tag(&mut self, tag: u64) {
        assert!(
            tag != 0 && tag & !crate::rowlock::TAG_MASK == 0 && crate::rowlock::txn_of(tag) == tag,
            "invalid lock tag"
        );
        self.txn().lock_tag = tag;
    }

    /// This transaction's base lock tag (see [`TxnHandle::set_lock_tag`]).
    pub fn lock_tag(&mut self) -> u64 {
        self.txn().lock_tag
    }

    /// Locks row `rowid` in `mode` for an UPDATE, DELETE or SELECT FOR ... of
    /// subtransaction `sub` (see [`crate::rowlock`]); never waits: on
    /// [`RowLock::Busy`] the caller waits with [`TxnHandle::wait_row`] (or for the
    /// holder's subtransaction) and tries again.
    pub fn lock_row(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        sub: u32,
        mode: LockMode,
    ) -> Result<RowLock> {
        let _s = scope::enter();
        self.txn().lock_row(t, rowid, sub, mode)
    }

    /// Releases the lock on `rowid` that the last `lock_row` took (it was `fresh`).
    pub fn unlock_row(&mut self, t: &TableHandle, rowid: RowId) {
        let _s = scope::enter();
        self.txn().unlock_row(t, rowid)
    }

    /// Waits (at most `timeout`, less if interrupted or released) for `holder` to
    /// release the lock on `rowid`, published as a wait for deadlock detection until
    /// [`TxnHandle::stop_waiting`]. Holds no epoch pin while it sleeps.
    pub fn wait_row(&mut self, t: &TableHandle, rowid: RowId, holder: u64, timeout: Duration) {
        let _s = scope::enter();
        self.txn().wait_row(t, rowid, holder, timeout)
    }

    /// Makes this transaction's commit wait until the log is durable as far as it is
    /// written now (after a wait for another transaction, whose commit it may have
    /// seen before that commit was durable: a row gone, a key taken).
    pub fn depend_on_log(&mut self) {
        self.txn().note_read_committed();
    }

    /// Ends the wait published by [`TxnHandle::wait_row`].
    pub fn stop_waiting(&mut self) {
        self.txn().stop_waiting()
    }

    /// Is this transaction part of a cycle of row-lock waits?
    pub fn deadlocked(&mut self) -> bool {
        let txn = self.txn();
        txn.engine.deadlocked(txn.lock_tag)
    }

    /// Point lookup: copies the version of row `rowid` that a statement with command id
    /// `cid` sees into `out`; returns its TID, or None if there is no such row.
    pub fn get(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        cid: u32,
        out: &mut Vec<u8>,
    ) -> Option<Tid> {
        let at = self.txn().read_view();
        self.get_at(t, rowid, cid, at, out)
    }

    /// Like [`TxnHandle::get`], but reads the newest committed version whatever the
    /// snapshot (read committed's recheck of a row it locked, as EvalPlanQual).
    pub fn get_newest(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        cid: u32,
        out: &mut Vec<u8>,
    ) -> Option<Tid> {
        self.get_at(t, rowid, cid, Tid::NEWEST, out)
    }

    fn get_at(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        cid: u32,
        at: Tid,
        out: &mut Vec<u8>,
    ) -> Option<Tid> {
        let _s = scope::enter();
        let r = self.txn().get_at(t, rowid, cid, at, out);
        if r.is_some() {
            self.txn().note_read_committed();
        }
        r
    }

    /// Deletes every row a statement with command id `stmt.cid` sees (TRUNCATE);
    /// returns how many.
    pub fn delete_all(&mut self, t: &TableHandle, stmt: Stmt) -> Result<u64> {
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        let mut victims: Vec<(RowId, Tid)> = Vec::new();
        while !cursor.done() {
            self.scan(t, &mut cursor, stmt.cid, &mut batch, 1024)?;
            while let Some(r) = batch.next() {
                victims.push((r.rowid, r.tid));
            }
        }
        let mut n = 0;
        for (rowid, tid) in victims {
            if self.delete(t, rowid, tid, stmt)? == WriteOutcome::Done {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Commits; returns the commit TID (0 for a transaction without writes) once the
    /// commit is durable.
    pub fn commit(&mut self) -> Result<Tid> {
        self.commit_with(true)
    }

    /// Commits; with `durable` false, returns before the redo record is synced
    /// (asynchronous commit: a crash may lose it, never tear it).
    pub fn commit_with(&mut self, durable: bool) -> Result<Tid> {
        let _s = scope::enter();
        self.txn().commit(durable)
    }

    /// The first half of a commit with PostgreSQL (its PRE_COMMIT): everything that
    /// can fail, nothing visible yet. With `xid` (the PostgreSQL transaction has one)
    /// the redo record is written here, tagged with it, and made durable if `durable`:
    /// recovery applies it only if PostgreSQL's commit log says `xid` committed. Then
    /// [`TxnHandle::finish`] (at PostgreSQL's COMMIT) or [`TxnHandle::abort`]. On error
    /// the transaction is aborted.
    pub fn prepare(&mut self, xid: Option<u32>, durable: bool) -> Result<()> {
        let _s = scope::enter();
        self.txn().prepare(xid, durable)
    }

    /// The second half: installs (and, without an xid, writes the redo record), then
    /// with `durable` waits until it is durable. Returns the commit TID (0 for a
    /// transaction without writes). Fails only if the log cannot be written or synced.
    pub fn finish(&mut self, durable: bool) -> Result<Tid> {
        let _s = scope::enter();
        self.txn().finish(durable)
    }

    /// [`TxnHandle::finish`], calling `installed` (outside the engine scope) once the
    /// commit is installed and its row locks are released, before waiting for the
    /// log: the glue releases the lock that waiters for this transaction's rows sleep
    /// on, so they go on without waiting for this commit's log sync (their own
    /// commits wait for it: they read its versions).
    pub fn finish_then(&mut self, durable: bool, installed: &mut dyn FnMut()) -> Result<Tid> {
        let _s = scope::enter();
        self.txn().finish_then(durable, installed)
    }

    pub fn abort(&mut self) {
        let _s = scope::enter();
        if self.txn().active {
            self.txn().abort();
        }
        self.txn().release_snapshots();
    }

    /// Undoes every write made by subtransaction `sub` and its children.
    pub fn rollback_to(&mut self, sub: u32) {
        let _s = scope::enter();
        self.txn().rollback_to(sub)
    }

    fn check_active(&mut self) -> Result<()> {
        if self.txn().active {
            Ok(())
        } else {
            Err(Error::TxnNotActive)
        }
    }
}

/// Refuses to change the rows or indexes of a table that is not in memory (a load
/// replaces it from its spill file: whatever was written to it would be lost).
fn check_loaded(t: &TableHandle) -> Result<()> {
    match t.residency() {
        Residency::Loaded => Ok(()),
        r => Err(Error::NotLoaded {
            table: t.id,
            state: r.state(),
        }),
    }
}

impl Drop for TxnHandle {
    fn drop(&mut self) {
        let _s = scope::enter();
        self.abort();
        // SAFETY: allocated by `new`, dropped once.
        drop(unsafe { Box::from_raw(self.txn) });
    }
}
