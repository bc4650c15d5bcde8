//! Optimistic transactions (Silo-style) over the per-record version word.
//!
//! A transaction buffers its writes in a write set; new rows are linked into the
//! row-id index at once as *absent* records, invisible to everybody else. Each pending
//! write carries the command id and subtransaction id that made it, so a statement
//! sees the writes of earlier statements of its transaction but not its own (the
//! PostgreSQL rule), and rolling back to a savepoint drops exactly the writes made
//! after it.
//!
//! Commit, in named phases (cf. Silo's `txn_impl.h`):
//! 1. **lock**: lock every written record in (table address, row id) order: one
//!    global order, so committers cannot deadlock;
//! 2. **tid**: take a commit TID from the global counter (greater than every TID
//!    this transaction read or wrote, since those were handed out before);
//! 3. **validate**: every pre-existing row written must still carry the version the
//!    transaction read (else [`AbortReason`]);
//! 4. **log**: append the commit record (TID and after-images) to the redo log;
//! 5. **install**: publish new buffers and versions, unlink deleted rows, unlock;
//!    replaced buffers and unlinked records are retired through the epoch collector;
//! 6. **durable**: wait until the record is durable (group commit), locks released.
//!
//! Phase 0 looks every written row up again under the commit's guard (a row read
//! earlier may have been deleted and freed since).

use crate::engine::{Engine, Need, TableHandle};
use crate::epoch;
use crate::error::{AbortReason, Error, Result};
use crate::garbage::{Chunked, Garbage, Retired, BYTES_PER_RETIRED, RECORD_BYTES};
use crate::record::{self, Record, RecordPtr, ABSENT_BIT, LOCK_BIT, TID_MASK};
use crate::redo::payload::encode_write;
use crate::scope;
use crate::table::Table;
use crossbeam_epoch::Guard;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Identifies the statement doing a write or a read: PostgreSQL's command id and
/// subtransaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stmt {
    pub cid: u32,
    pub sub: u32,
}

/// What happened to an update or delete that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Done,
    /// The row was already written by this same command; nothing was done.
    AlreadyModified,
    /// The row no longer exists for this transaction (it deleted it earlier).
    NotFound,
}

#[derive(Clone, Copy)]
struct Version {
    cid: u32,
    sub: u32,
    /// Row buffer, or null for a delete.
    data: *mut u8,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Inserted,
    Existing { read_tid: u64 },
}

struct WriteEntry {
    table: usize,
    rowid: u64,
    /// The record. For an `Inserted` entry it is ours alone until commit, so it stays
    /// alive. For an `Existing` one it is only set while commit holds its guard:
    /// another transaction may delete and free the record meanwhile, so commit looks
    /// the row id up again.
    rec: Option<RecordPtr>,
    origin: Origin,
    newest: Version,
    /// Earlier pending versions, oldest first.
    older: Vec<Version>,
}

impl WriteEntry {
    /// The newest version a statement with command id `cid` sees.
    fn visible(&self, cid: u32) -> Option<&Version> {
        std::iter::once(&self.newest)
            .chain(self.older.iter().rev())
            .find(|v| v.cid < cid)
    }

    fn reported_tid(&self) -> u64 {
        match self.origin {
            Origin::Inserted => 0,
            Origin::Existing { read_tid } => read_tid,
        }
    }
}

/// (table address, row id) -> index in the write set. The key order is the global
/// lock order of commit.
type PendingMap = BTreeMap<(usize, u64), usize>;

pub struct Txn {
    engine: &'static Engine,
    id: u64,
    tables: Vec<Arc<Table>>,
    entries: Chunked<WriteEntry>,
    pending: PendingMap,
    active: bool,
}

/// Resume point of a scan.
#[derive(Debug, Default, Clone)]
pub struct ScanCursor {
    after: Option<u64>,
    done: bool,
}

impl ScanCursor {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn done(&self) -> bool {
        self.done
    }
}

/// Rows copied out of the engine into memory private to the caller.
#[derive(Debug, Default)]
pub struct RowBatch {
    buf: Vec<u8>,
    rows: Vec<(u64, u64, usize, usize)>,
    next: usize,
}

/// One row of a batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchRow<'a> {
    pub rowid: u64,
    /// The version the row was read at (0 for rows this transaction inserted).
    pub tid: u64,
    pub data: &'a [u8],
}

impl RowBatch {
    pub fn new() -> Self {
        Self::default()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.rows.clear();
        self.next = 0;
    }

    fn push(&mut self, rowid: u64, tid: u64, data: &[u8]) {
        scope::outside(|| {
            let start = self.buf.len();
            self.buf.extend_from_slice(data);
            self.rows.push((rowid, tid, start, self.buf.len()));
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The next unread row.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<BatchRow<'_>> {
        let &(rowid, tid, s, e) = self.rows.get(self.next)?;
        self.next += 1;
        Some(BatchRow {
            rowid,
            tid,
            data: &self.buf[s..e],
        })
    }
}

/// Arena bytes of one pending-map entry (B-tree nodes hold 11 keys, at least half
/// full).
const PENDING_BYTES_PER_ENTRY: usize = 2 * std::mem::size_of::<((usize, u64), usize)>() + 8;

/// Frees a pending buffer nobody else ever saw.
fn free_private(engine: &Engine, p: *mut u8) {
    if !p.is_null() {
        // SAFETY: pending buffers are owned by the write set alone.
        unsafe {
            let size = record::rowbuf_size(record::rowbuf_slice(p).len());
            record::rowbuf_free(p);
            engine.account(-(size as isize));
        }
    }
}

impl Txn {
    pub(crate) fn new(engine: &'static Engine, id: u64) -> Txn {
        Txn {
            engine,
            id,
            tables: Vec::new(),
            entries: Chunked::default(),
            pending: PendingMap::new(),
            active: true,
        }
    }

    fn table_slot(&mut self, t: &TableHandle) -> usize {
        if let Some(i) = self.tables.iter().position(|x| Arc::ptr_eq(x, t.arc())) {
            return i;
        }
        self.tables.push(t.arc().clone());
        self.tables.len() - 1
    }

    fn key(t: &TableHandle, rowid: u64) -> (usize, u64) {
        (Arc::as_ptr(t.arc()) as usize, rowid)
    }

    fn pending_entry(&self, t: &TableHandle, rowid: u64) -> Option<usize> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.get(&Self::key(t, rowid)).copied()
    }

    fn new_buffer(&self, row: Option<&[u8]>) -> Result<*mut u8> {
        let Some(row) = row else {
            return Ok(std::ptr::null_mut());
        };
        self.engine
            .check_memory(Need::of(record::rowbuf_size(row.len())))?;
        let p = record::rowbuf_new(row);
        if p.is_null() {
            return Err(self.oom());
        }
        self.engine.account(record::rowbuf_size(row.len()) as isize);
        Ok(p)
    }

    fn oom(&self) -> Error {
        let m = self.engine.memory();
        Error::OutOfMemory {
            in_use: m.in_use,
            limit: m.limit,
        }
    }

    /// Checks the memory limit for one more write-set entry: its share of a chunk,
    /// its pending-map slot, and what retiring its objects at commit will take.
    fn reserve_entry(&mut self, delete: bool) -> Result<()> {
        let mut need = Need::of(PENDING_BYTES_PER_ENTRY + 2 * BYTES_PER_RETIRED);
        if self.entries.next_push_allocates() {
            need = need + Need::of(Chunked::<WriteEntry>::chunk_bytes());
        }
        // Retirement of the entries already made, at commit, is not allocated yet.
        need = need + Need::of(self.entries.len() * 2 * BYTES_PER_RETIRED);
        if delete {
            self.engine.check_memory_for_delete(need)
        } else {
            self.engine.check_memory(need)
        }
    }

    fn push_entry(&mut self, e: WriteEntry) {
        let key = (Arc::as_ptr(&self.tables[e.table]) as usize, e.rowid);
        self.pending.insert(key, self.entries.len());
        self.entries.push(e);
    }

    fn insert(&mut self, t: &TableHandle, row: &[u8], stmt: Stmt) -> Result<u64> {
        self.engine
            .check_memory(Need::of(record::rowbuf_size(row.len())) + Need::of(RECORD_BYTES))?;
        self.reserve_entry(false)?;
        let data = self.new_buffer(Some(row))?;
        let slot = self.table_slot(t);
        let rowid = t.next_rowid();
        let rec = RecordPtr(Box::into_raw(Record::new_absent(rowid)));
        self.engine.account(RECORD_BYTES as isize);
        epoch::with_guard(&self.engine.collector, |g| t.rows.insert(rowid, rec, g));
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

    /// Update (`row` = Some) or delete (None) of row `rowid`, read at `expected`.
    fn write(
        &mut self,
        t: &TableHandle,
        rowid: u64,
        expected: u64,
        row: Option<&[u8]>,
        stmt: Stmt,
    ) -> Result<WriteOutcome> {
        let engine = self.engine;
        if let Some(ei) = self.pending_entry(t, rowid) {
            let e = self.entries.get(ei);
            if e.newest.cid == stmt.cid {
                return Ok(WriteOutcome::AlreadyModified);
            }
            if e.newest.data.is_null() {
                return Ok(WriteOutcome::NotFound);
            }
            let data = self.new_buffer(row)?;
            let e = self.entries.get_mut(ei);
            // Versions of the same subtransaction that no statement can see any more
            // (superseded by `newest`, which the current statement sees) are dropped.
            while e.newest.cid < stmt.cid && e.older.last().is_some_and(|o| o.sub == e.newest.sub) {
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
            e.older.push(prev);
            return Ok(WriteOutcome::Done);
        }
        // A committed row: it must still be the version the statement read.
        let state = epoch::with_guard(&engine.collector, |g| {
            t.rows.get(rowid, g).map(|r| {
                // SAFETY: reached through the index under guard `g`.
                let s = unsafe { r.get() }.read(g);
                (s.absent(), s.tid())
            })
        });
        match state {
            None | Some((true, _)) => return Err(Error::Conflict(AbortReason::RowDeleted)),
            Some((false, tid)) if tid != expected => {
                return Err(Error::Conflict(AbortReason::WriteConflict))
            }
            Some(_) => {}
        }
        self.reserve_entry(row.is_none())?;
        let data = self.new_buffer(row)?;
        let slot = self.table_slot(t);
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

    fn scan(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) {
        batch.clear();
        if cursor.done {
            return;
        }
        let mut last = cursor.after;
        let mut seen = 0usize;
        let own_rows = self.tables.iter().any(|x| Arc::ptr_eq(x, t.arc()));
        let this = &*self;
        epoch::with_guard(&self.engine.collector, |g| {
            t.rows.scan_after(cursor.after, g, |rowid, rec| {
                last = Some(rowid);
                seen += 1;
                let own = if own_rows {
                    this.pending_entry(t, rowid).map(|i| this.entries.get(i))
                } else {
                    None
                };
                let committed = |batch: &mut RowBatch| {
                    // SAFETY: reached through the index under guard `g`.
                    let s = unsafe { rec.get() }.read(g);
                    if let (false, Some(d)) = (s.absent(), s.data) {
                        batch.push(rowid, s.tid(), d);
                    }
                };
                match own {
                    None => committed(batch),
                    Some(e) => match (e.visible(cid), e.origin) {
                        (Some(v), _) => {
                            if !v.data.is_null() {
                                // SAFETY: pending buffers live until the txn ends.
                                batch.push(rowid, e.reported_tid(), unsafe {
                                    record::rowbuf_slice(v.data)
                                });
                            }
                        }
                        (None, Origin::Inserted) => {}
                        (None, Origin::Existing { .. }) => committed(batch),
                    },
                }
                batch.len() < max_rows && seen < max_rows * 8
            });
        });
        if last == cursor.after {
            cursor.done = true;
        }
        cursor.after = last;
    }

    /// The version of row `rowid` a statement with command id `cid` sees, copied into
    /// `out` (cleared first). Returns the version's TID (0 for own inserts).
    fn get(&self, t: &TableHandle, rowid: u64, cid: u32, out: &mut Vec<u8>) -> Option<u64> {
        let copy = |out: &mut Vec<u8>, d: &[u8]| {
            scope::outside(|| {
                out.clear();
                out.extend_from_slice(d);
            })
        };
        if let Some(e) = self.pending_entry(t, rowid).map(|i| self.entries.get(i)) {
            match (e.visible(cid), e.origin) {
                (Some(v), _) if v.data.is_null() => return None,
                (Some(v), _) => {
                    // SAFETY: pending buffers live until the txn ends.
                    copy(out, unsafe { record::rowbuf_slice(v.data) });
                    return Some(e.reported_tid());
                }
                (None, Origin::Inserted) => return None,
                (None, Origin::Existing { .. }) => {}
            }
        }
        epoch::with_guard(&self.engine.collector, |g| {
            let rec = t.rows.get(rowid, g)?;
            // SAFETY: reached through the index under guard `g`.
            let s = unsafe { rec.get() }.read(g);
            match (s.absent(), s.data) {
                (false, Some(d)) => {
                    copy(out, d);
                    Some(s.tid())
                }
                _ => None,
            }
        })
    }

    fn commit(&mut self, durable: bool) -> Result<u64> {
        if !self.active {
            return Err(Error::TxnNotActive);
        }
        if self.entries.is_empty() {
            self.active = false;
            return Ok(0);
        }
        let engine = self.engine;
        let outcome = epoch::with_guard(&engine.collector, |g| self.commit_pinned(g));
        if outcome.is_err() {
            self.abort();
        }
        self.pending.clear();
        self.active = false;
        let (tid, log_end) = outcome?;
        // Phase 6: durable. After the locks are gone, so readers never wait for an
        // fsync; the caller acknowledges the commit only after this.
        if let (true, Some(sink), Some(end)) = (durable, engine.sink(), log_end) {
            sink.make_durable(end)
                .map_err(|e| Error::NotDurable(e.to_string()))?;
        }
        Ok(tid)
    }

    /// Unlocks the first `n` entries in lock order.
    fn unlock_first(&self, n: usize) {
        for &i in self.pending.values().take(n) {
            let rec = self
                .entries
                .get(i)
                .rec
                .expect("locked entries have records");
            // SAFETY: found under the commit guard, still held; we hold its lock.
            unsafe { rec.get() }.unlock();
        }
    }

    /// Phases 0-5 under one guard; returns the commit TID and where its redo record
    /// ends in the log.
    fn commit_pinned(&mut self, g: &Guard) -> Result<(u64, Option<u64>)> {
        let engine = self.engine;
        // Phase 0: find every written record under this guard. A pre-existing row that
        // is no longer linked was deleted by a committed transaction.
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            if e.origin != Origin::Inserted {
                let found = self.tables[e.table].rows.get(e.rowid, g);
                let Some(r) = found else {
                    return Err(Error::Conflict(AbortReason::RowDeleted));
                };
                self.entries.get_mut(i).rec = Some(r);
            }
        }
        // Phase 1: lock the write set in (table, row id) order.
        for &i in self.pending.values() {
            let rec = self.entries.get(i).rec.expect("found in phase 0");
            // SAFETY: linked records found under `g` stay allocated while `g` lives.
            unsafe { rec.get() }.lock();
        }
        // Phase 2: the commit TID.
        let tid = engine.next_commit_tid();
        // Phase 3: validate.
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            if let Origin::Existing { read_tid } = e.origin {
                // SAFETY: as above.
                let v = unsafe { e.rec.expect("found").get() }.version() & !LOCK_BIT;
                let reason = if v & ABSENT_BIT != 0 {
                    Some(AbortReason::RowDeleted)
                } else if v & TID_MASK != read_tid {
                    Some(AbortReason::WriteConflict)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.unlock_first(self.pending.len());
                    return Err(Error::Conflict(reason));
                }
            }
        }
        // Phase 4: log.
        let mut log_end = None;
        if let Some(sink) = engine.sink() {
            let payload = scope::outside(|| self.commit_record(tid));
            match sink.append(&payload) {
                Ok(a) => log_end = Some(a),
                Err(e) => {
                    self.unlock_first(self.pending.len());
                    return Err(Error::LogIo(e.to_string()));
                }
            }
            scope::outside(|| drop(payload));
        }
        // Phase 5: install and unlock.
        let mut garbage = Garbage::default();
        for e in self.entries.take_all() {
            for o in &e.older {
                free_private(engine, o.data);
            }
            let table = &self.tables[e.table];
            let r = e.rec.expect("found");
            // SAFETY: as above.
            let rec = unsafe { r.get() };
            let old = rec.install_and_unlock(e.newest.data, tid);
            let size = |p: *mut u8| {
                if p.is_null() {
                    0
                } else {
                    // SAFETY: `p` is live (pending, or replaced and not yet retired).
                    record::rowbuf_size(unsafe { record::rowbuf_slice(p) }.len()) as i64
                }
            };
            let deleted = e.newest.data.is_null();
            let rows_delta = match (e.origin, deleted) {
                (Origin::Inserted, false) => 1,
                (Origin::Existing { .. }, true) => -1,
                _ => 0,
            };
            table.account(rows_delta, size(e.newest.data) - size(old));
            garbage.push(Retired::Buffer(old));
            if deleted {
                table.rows.remove(e.rowid, g);
                garbage.push(Retired::Record(r.0));
            }
        }
        garbage.retire(engine, g);
        if let (Some(sink), Some(a)) = (engine.sink(), log_end) {
            sink.installed(a.phase);
        }
        Ok((tid, log_end.map(|a| a.end)))
    }

    /// The redo record of this commit (built in private memory).
    fn commit_record(&self, tid: u64) -> Vec<u8> {
        let logged = |e: &&WriteEntry| !(e.origin == Origin::Inserted && e.newest.data.is_null());
        let n = self
            .pending
            .values()
            .map(|&i| self.entries.get(i))
            .filter(logged)
            .count();
        let mut out = Vec::with_capacity(13 + n * 32);
        out.push(1);
        out.extend_from_slice(&tid.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for e in self
            .pending
            .values()
            .map(|&i| self.entries.get(i))
            .filter(logged)
        {
            // SAFETY: pending buffers live until install.
            let after =
                (!e.newest.data.is_null()).then(|| unsafe { record::rowbuf_slice(e.newest.data) });
            encode_write(&mut out, self.tables[e.table].oid, e.rowid, after);
        }
        out
    }

    fn abort(&mut self) {
        let engine = self.engine;
        let entries: Vec<WriteEntry> = self.entries.take_all().collect();
        epoch::with_guard(&engine.collector, |g| {
            let mut garbage = Garbage::default();
            for e in entries {
                self.discard_entry(e, g, &mut garbage);
            }
            garbage.retire(engine, g);
        });
        self.pending.clear();
        self.active = false;
    }

    fn discard_entry(&self, e: WriteEntry, g: &Guard, garbage: &mut Garbage) {
        free_private(self.engine, e.newest.data);
        for o in &e.older {
            free_private(self.engine, o.data);
        }
        if let (Origin::Inserted, Some(rec)) = (e.origin, e.rec) {
            // Our own absent record, linked until now.
            self.tables[e.table].rows.remove(e.rowid, g);
            garbage.push(Retired::Record(rec.0));
        }
    }

    fn rollback_to(&mut self, sub: u32) {
        let engine = self.engine;
        let entries: Vec<WriteEntry> = self.entries.take_all().collect();
        self.pending.clear();
        epoch::with_guard(&engine.collector, |g| {
            let mut garbage = Garbage::default();
            for mut e in entries {
                while e.newest.sub >= sub {
                    let Some(prev) = e.older.pop() else { break };
                    free_private(engine, std::mem::replace(&mut e.newest, prev).data);
                }
                if e.newest.sub >= sub {
                    self.discard_entry(e, g, &mut garbage);
                } else {
                    self.push_entry(e);
                }
            }
            garbage.retire(engine, g);
        });
    }
}

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
    pub fn insert(&mut self, t: &TableHandle, row: &[u8], stmt: Stmt) -> Result<u64> {
        let _s = scope::enter();
        self.check_active()?;
        self.txn().insert(t, row, stmt)
    }

    /// Replaces row `rowid`, which the caller read at version `expected`.
    pub fn update(
        &mut self,
        t: &TableHandle,
        rowid: u64,
        expected: u64,
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
        rowid: u64,
        expected: u64,
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
    ) {
        let _s = scope::enter();
        self.txn().scan(t, cursor, cid, batch, max_rows.max(1))
    }

    /// Point lookup: copies the version of row `rowid` that a statement with command id
    /// `cid` sees into `out`; returns its TID, or None if there is no such row.
    pub fn get(&mut self, t: &TableHandle, rowid: u64, cid: u32, out: &mut Vec<u8>) -> Option<u64> {
        let _s = scope::enter();
        self.txn().get(t, rowid, cid, out)
    }

    /// Deletes every row a statement with command id `stmt.cid` sees (TRUNCATE);
    /// returns how many.
    pub fn delete_all(&mut self, t: &TableHandle, stmt: Stmt) -> Result<u64> {
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        let mut victims: Vec<(u64, u64)> = Vec::new();
        while !cursor.done() {
            self.scan(t, &mut cursor, stmt.cid, &mut batch, 1024);
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
    pub fn commit(&mut self) -> Result<u64> {
        self.commit_with(true)
    }

    /// Commits; with `durable` false, returns before the redo record is synced
    /// (asynchronous commit: a crash may lose it, never tear it).
    pub fn commit_with(&mut self, durable: bool) -> Result<u64> {
        let _s = scope::enter();
        self.txn().commit(durable)
    }

    pub fn abort(&mut self) {
        let _s = scope::enter();
        if self.txn().active {
            self.txn().abort();
        }
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

impl Drop for TxnHandle {
    fn drop(&mut self) {
        let _s = scope::enter();
        self.abort();
        // SAFETY: allocated by `new`, dropped once.
        drop(unsafe { Box::from_raw(self.txn) });
    }
}
