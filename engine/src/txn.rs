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
//! 1. **lock**: lock every written record, in address order (one global order, so
//!    committers cannot deadlock);
//! 2. **tid**: take a commit TID from the global counter (greater than every TID
//!    this transaction read or wrote, since those were handed out before);
//! 3. **validate**: every pre-existing row written must still carry the version the
//!    transaction read (else [`AbortReason`]);
//! 4. **log**: hand the after-images to the redo sink;
//! 5. **install**: publish new buffers and versions, unlink deleted rows, unlock;
//!    replaced buffers and unlinked records are retired through the epoch collector.

use crate::engine::{Engine, TableHandle};
use crate::epoch;
use crate::error::{AbortReason, Error, Result};
use crate::record::{self, Record, RecordPtr, ABSENT_BIT, LOCK_BIT, TID_MASK};
use crate::redo::LoggedWrite;
use crate::scope;
use crate::table::Table;
use crossbeam_epoch::Guard;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
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
    /// The record of an `Inserted` entry (ours alone until commit, so it stays alive).
    /// For `Existing` entries it is not kept: another transaction may delete and free
    /// the record meanwhile, so commit looks the row id up again under its guard.
    inserted: Option<RecordPtr>,
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

#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// (table slot, row id) -> index in the write set.
type PendingMap = HashMap<(usize, u64), usize, BuildHasherDefault<KeyHasher>>;

pub struct Txn {
    engine: &'static Engine,
    id: u64,
    tables: Vec<Arc<Table>>,
    entries: Vec<WriteEntry>,
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

struct SendPtr<T>(*const T);
// SAFETY: used only to move a retired pointer into a deferred destructor; the
// pointee is unreachable by anybody else by then.
unsafe impl<T> Send for SendPtr<T> {}

/// Arena bytes of epoch garbage-bag space an entry may need at commit: two deferred
/// functions (32 bytes each) in bags rounded up to their size class.
const GARBAGE_PER_ENTRY: usize = 96;

const RECORD_BYTES: usize = std::mem::size_of::<Record>() + 96; // record + skip-list node

fn retire_buffer(engine: &'static Engine, guard: &Guard, p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is a live row buffer.
    let size = record::rowbuf_size(unsafe { record::rowbuf_slice(p) }.len());
    let p = SendPtr(p as *const u8);
    // SAFETY: the buffer is unlinked; readers that loaded it hold guards older than
    // this deferral, so it is freed only after they are gone.
    unsafe {
        guard.defer_unchecked(move || {
            let p = p;
            record::rowbuf_free(p.0 as *mut u8);
            engine.account(-(size as isize));
        })
    };
}

fn retire_record(engine: &'static Engine, guard: &Guard, rec: RecordPtr) {
    let p = SendPtr(rec.0);
    // SAFETY: the record is unlinked from its index; see `retire_buffer`.
    unsafe {
        guard.defer_unchecked(move || {
            let p = p;
            let data = (*p.0).data_ptr();
            let size = RECORD_BYTES
                + if data.is_null() {
                    0
                } else {
                    record::rowbuf_size(record::rowbuf_slice(data).len())
                };
            record::record_free(p.0);
            engine.account(-(size as isize));
        })
    };
}

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
            entries: Vec::new(),
            pending: PendingMap::default(),
            active: true,
        }
    }

    fn table_slot(&mut self, t: &TableHandle) -> usize {
        if let Some(i) = self.find_slot(t) {
            return i;
        }
        self.tables.push(t.arc().clone());
        self.tables.len() - 1
    }

    fn find_slot(&self, t: &TableHandle) -> Option<usize> {
        self.tables.iter().position(|x| Arc::ptr_eq(x, t.arc()))
    }

    fn new_buffer(&self, row: Option<&[u8]>) -> Result<*mut u8> {
        let Some(row) = row else {
            return Ok(std::ptr::null_mut());
        };
        self.engine.check_memory(row.len() + 64)?;
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

    /// Checks the memory limit before the write set grows (its vectors double).
    fn reserve_entry(&mut self, delete: bool) -> Result<()> {
        // The vector and the pending map double when full; check before they do.
        let mut need = 0;
        if self.entries.len() == self.entries.capacity() {
            need += self.entries.capacity().max(4) * 2 * std::mem::size_of::<WriteEntry>();
        }
        if self.pending.len() == self.pending.capacity() {
            need += self.pending.capacity().max(4)
                * 2
                * (std::mem::size_of::<((usize, u64), usize)>() + 1)
                * 8
                / 7;
        }
        // At commit every entry may retire up to two objects (a buffer, a record); each
        // costs a slot in an epoch garbage bag, which must not fail to allocate.
        need += (self.entries.len() + 1) * GARBAGE_PER_ENTRY;
        if delete {
            self.engine.check_memory_for_delete(need)
        } else {
            self.engine.check_memory(need)
        }
    }

    fn push_entry(&mut self, e: WriteEntry) {
        self.pending.insert((e.table, e.rowid), self.entries.len());
        self.entries.push(e);
    }

    fn insert(&mut self, t: &TableHandle, row: &[u8], stmt: Stmt) -> Result<u64> {
        self.engine.check_memory(row.len() + RECORD_BYTES + 64)?;
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
            inserted: Some(rec),
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
        if let Some(&ei) = self
            .find_slot(t)
            .and_then(|s| self.pending.get(&(s, rowid)))
        {
            let e = &self.entries[ei];
            if e.newest.cid == stmt.cid {
                return Ok(WriteOutcome::AlreadyModified);
            }
            if e.newest.data.is_null() {
                return Ok(WriteOutcome::NotFound);
            }
            let data = self.new_buffer(row)?;
            let e = &mut self.entries[ei];
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
            inserted: None,
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
        let slot = self.find_slot(t);
        let pending = &self.pending;
        let entries = &self.entries;
        epoch::with_guard(&self.engine.collector, |g| {
            t.rows.scan_after(cursor.after, g, |rowid, rec| {
                last = Some(rowid);
                seen += 1;
                let own = slot
                    .and_then(|s| pending.get(&(s, rowid)))
                    .map(|&i| &entries[i]);
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
        let own = self
            .find_slot(t)
            .and_then(|s| self.pending.get(&(s, rowid)))
            .map(|&i| &self.entries[i]);
        let copy = |out: &mut Vec<u8>, d: &[u8]| {
            scope::outside(|| {
                out.clear();
                out.extend_from_slice(d);
            })
        };
        if let Some(e) = own {
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

    fn commit(&mut self) -> Result<u64> {
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
        outcome
    }

    fn commit_pinned(&mut self, g: &Guard) -> Result<u64> {
        let engine = self.engine;
        // Phase 0: find every written record under this guard. A pre-existing row that
        // is no longer linked was deleted by a committed transaction.
        let mut recs: Vec<(RecordPtr, usize)> = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            let rec = match e.inserted {
                Some(r) => r,
                None => match self.tables[e.table].rows.get(e.rowid, g) {
                    Some(r) => r,
                    None => return Err(Error::Conflict(AbortReason::RowDeleted)),
                },
            };
            recs.push((rec, i));
        }
        // Phase 1: lock the write set in address order.
        recs.sort_unstable_by_key(|(r, _)| r.addr());
        for (r, _) in &recs {
            // SAFETY: linked records found under `g` stay allocated while `g` lives.
            unsafe { r.get() }.lock();
        }
        // Phase 2: the commit TID.
        let tid = engine.next_commit_tid();
        // Phase 3: validate.
        for (r, i) in &recs {
            if let Origin::Existing { read_tid } = self.entries[*i].origin {
                // SAFETY: as above.
                let v = unsafe { r.get() }.version() & !LOCK_BIT;
                let reason = if v & ABSENT_BIT != 0 {
                    Some(AbortReason::RowDeleted)
                } else if v & TID_MASK != read_tid {
                    Some(AbortReason::WriteConflict)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    for (r, _) in &recs {
                        // SAFETY: as above; we hold the lock.
                        unsafe { r.get() }.unlock();
                    }
                    return Err(Error::Conflict(reason));
                }
            }
        }
        // Phase 4: log.
        if let Some(sink) = &engine.sink {
            let writes: Vec<LoggedWrite<'_>> = self
                .entries
                .iter()
                .filter(|e| !(e.origin == Origin::Inserted && e.newest.data.is_null()))
                .map(|e| LoggedWrite {
                    table_oid: self.tables[e.table].oid,
                    rowid: e.rowid,
                    // SAFETY: pending buffers live until install.
                    after: (!e.newest.data.is_null())
                        .then(|| unsafe { record::rowbuf_slice(e.newest.data) }),
                })
                .collect();
            sink.append(tid, &writes);
        }
        // Phase 5: install and unlock.
        let entries = std::mem::take(&mut self.entries);
        for (r, i) in recs {
            let e = &entries[i];
            for o in &e.older {
                free_private(engine, o.data);
            }
            let table = &self.tables[e.table];
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
            retire_buffer(engine, g, old);
            if deleted {
                table.rows.remove(e.rowid, g);
                retire_record(engine, g, r);
            }
        }
        Ok(tid)
    }

    fn abort(&mut self) {
        let engine = self.engine;
        let entries = std::mem::take(&mut self.entries);
        epoch::with_guard(&engine.collector, |g| {
            for e in entries {
                self.discard_entry(e, g);
            }
        });
        self.pending.clear();
        self.active = false;
    }

    fn discard_entry(&self, e: WriteEntry, g: &Guard) {
        free_private(self.engine, e.newest.data);
        for o in &e.older {
            free_private(self.engine, o.data);
        }
        if let Some(rec) = e.inserted {
            // Our own absent record, linked until now.
            self.tables[e.table].rows.remove(e.rowid, g);
            retire_record(self.engine, g, rec);
        }
    }

    fn rollback_to(&mut self, sub: u32) {
        let engine = self.engine;
        let entries = std::mem::take(&mut self.entries);
        let mut kept = Vec::with_capacity(entries.len());
        epoch::with_guard(&engine.collector, |g| {
            for mut e in entries {
                while e.newest.sub >= sub {
                    let Some(prev) = e.older.pop() else { break };
                    free_private(engine, std::mem::replace(&mut e.newest, prev).data);
                }
                if e.newest.sub >= sub {
                    self.discard_entry(e, g);
                } else {
                    kept.push(e);
                }
            }
        });
        self.pending.clear();
        for e in kept {
            self.push_entry(e);
        }
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

    /// Commits; returns the commit TID (0 for a transaction without writes).
    pub fn commit(&mut self) -> Result<u64> {
        let _s = scope::enter();
        self.txn().commit()
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
