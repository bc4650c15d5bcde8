//! Optimistic transactions (Silo-style) over the per-record version word.
//!
//! A transaction buffers its writes in a write set; new rows are linked into the
//! row-id index at once as *absent* records, invisible to everybody else. Each pending
//! write carries the command id and subtransaction id that made it, so a statement
//! sees the writes of earlier statements of its transaction but not its own (the
//! PostgreSQL rule), and rolling back to a savepoint drops exactly the writes made
//! after it.
//!
//! Commit, in named phases (cf. Silo's `txn_impl.h`), after taking the unique-key
//! stripes of the keys it writes (before any record lock: one global order):
//! 0. **find**: look every written row up again under the commit's guard (a row read
//!    earlier may have been deleted and freed since);
//! 1. **lock**: lock every written record in (table address, row id) order: one
//!    global order, so committers cannot deadlock;
//!    1b. **validate reads** (repeatable read, serializable): rows read unchanged,
//!    tables read not written since the start (see [`Isolation`]);
//!    1c. **mark and link**: count this committer in flight on its tables and link the
//!    index entries of keys its rows gain, before the TID exists;
//! 2. **tid**: take a commit TID from the global counter (greater than every TID
//!    this transaction read or wrote, since those were handed out before);
//! 3. **validate**: every pre-existing row written must still carry the version the
//!    transaction read (else [`AbortReason`]); 3b. no other committed row holds a
//!    unique key this commit introduces;
//! 4. **log**: append the commit record (TID and after-images) to the redo log;
//! 5. **install**: publish new buffers and versions, unlink deleted rows and keys rows
//!    no longer have, unlock; replaced buffers and unlinked records are retired through
//!    the epoch collector; release row locks;
//! 6. **durable**: wait until the record is durable (group commit), locks released.
//!
//! A failure after 1c unlinks what 1c linked before unlocking.

use crate::engine::{Engine, Need, TableHandle};
use crate::epoch;
use crate::error::{AbortReason, Error, Result};
use crate::garbage::{Chunked, Garbage, Retired, BYTES_PER_RETIRED, RECORD_BYTES};
use crate::index::{IndexDef, KeyIndex, KEY_ENTRY_BYTES};
use crate::keys;
use crate::record::{self, Record, RecordPtr, ABSENT_BIT, LOCK_BIT, TID_MASK};
use crate::redo::payload::encode_write;
use crate::scope;
use crate::table::Table;
use crossbeam_epoch::Guard;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

/// How long a committer checking a unique key waits for another committer's row lock
/// before it gives up with a serialization failure (it may hold locks that one needs).
const UNIQUE_CHECK_WAIT: Duration = Duration::from_millis(20);

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

    /// The version whose keys are in the indexes for an inserted row: its first one.
    fn base_version(&self) -> *mut u8 {
        self.older.first().map_or(self.newest.data, |o| o.data)
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
    /// Pending rows (table address, row id) an update gave another index key: their
    /// new keys are not in the indexes until commit, so this transaction's own index
    /// scans and unique checks look at them separately.
    rekeyed: BTreeSet<(usize, u64)>,
    /// Hashes of every new key an update of this transaction gave a rekeyed row, per
    /// (table address, index id): a unique check looks at the rekeyed rows only if the
    /// key's hash is here (so a big key-changing UPDATE is not quadratic). Never shrinks
    /// before the transaction ends, so it stays a superset after savepoint rollbacks.
    /// Tables in `rekeyed_untracked` have rekeyed rows whose keys were never hashed
    /// (an index created after the updates): always look there.
    rekeyed_hashes: HashSet<(usize, u32, u64)>,
    /// The rekeyed rows per (table address, index id, row id) whose key in that index
    /// changed: an index scan looks only at those (unless the table is untracked), so
    /// rows rekeyed in one index do not slow every scan of another.
    rekeyed_in: BTreeSet<(usize, u32, u64)>,
    rekeyed_untracked: BTreeSet<usize>,
    /// Row locks held (see [`crate::rowlock`]), with the subtransaction that took each.
    row_locks: Chunked<(RecordPtr, u32)>,
    /// What this transaction writes into the owner word of rows it locks (and how
    /// waiters name it): its id, or a tag the caller chose (the FDW uses PostgreSQL's
    /// virtual transaction id, so waiters can wait on PostgreSQL's lock for it).
    lock_tag: u64,
    iso: Isolation,
    /// Snapshot TID (repeatable read, serializable): the newest TID handed out when the
    /// transaction started. A committer holds its records locked from before it takes
    /// its TID until they are installed, so every read waits for commits up to it.
    start_tid: u64,
    /// Rows read (table address, row id, version) for commit validation.
    read_rows: Vec<(usize, u64, u64)>,
    /// Tables read (slot in `tables`): `true` = scanned whole (any write after the
    /// start conflicts), `false` = read through an index (inserts conflict).
    read_tables: Vec<(usize, bool)>,
    active: bool,
}

/// Isolation level of a transaction (PostgreSQL's; READ UNCOMMITTED is READ COMMITTED).
///
/// * `ReadCommitted`: every read sees the newest committed version; UPDATE/DELETE lock
///   rows at fetch and go on with their newest version.
/// * `RepeatableRead` and `Serializable`: optimistic, Silo-style. The transaction's
///   start TID is its snapshot; reading a committed version newer than it fails at once
///   (40001), and commit validates what was read: rows read must be unchanged, tables
///   scanned whole must not have been written, and tables read through an index range
///   must not have received rows (inserts, or keys moved) since the start. This refuses
///   write skew and phantoms, so both levels are serializable; REPEATABLE READ is thus
///   stricter than PostgreSQL's (more 40001, never an anomaly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Isolation {
    #[default]
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

/// Rows recorded per transaction for read validation; beyond it, tables are validated
/// as a whole.
const MAX_READ_ROWS: usize = 100_000;

/// What [`TxnHandle::lock_row`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLock {
    /// The row is locked by this transaction; `tid` is its newest committed version
    /// (0 for a row this transaction inserted), `fresh` if this call took the lock.
    Locked { tid: u64, fresh: bool },
    /// Another transaction holds the lock.
    Busy { holder: u64 },
    /// The row no longer exists.
    Gone,
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

/// The keys of `row` in each index, with whether each has a NULL column.
fn index_keys(t: &Table, idx: &[Arc<KeyIndex>], row: &[u8]) -> Result<Vec<(Vec<u8>, bool)>> {
    idx.iter()
        .map(|i| {
            let mut k = Vec::new();
            let null = i.key_of(&t.layout, row, &mut k)?;
            Ok((k, null))
        })
        .collect()
}

/// The unique-violation error for `row` (copied into private memory).
fn unique_violation(index: &KeyIndex, t: &Table, row: &[u8]) -> Error {
    scope::outside(|| Error::UniqueViolation {
        index: index.def.name.clone(),
        table_oid: t.oid,
        columns: index.def.columns.clone(),
        row: row.to_vec(),
    })
}

fn stripe_of(index_id: u32, key: &[u8]) -> usize {
    let mut h = crc32fast::Hasher::new();
    h.update(&index_id.to_le_bytes());
    h.update(key);
    h.finalize() as usize % crate::engine::KEY_LOCK_STRIPES
}

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
    extras: Option<Vec<(Vec<u8>, u64)>>,
    extra_pos: usize,
    /// Index entries visited so far.
    pub examined: u64,
    /// Set by the caller when the bounds fix every column of a unique index (at most
    /// one row): a row found needs no phantom protection under serializable.
    pub unique_point: bool,
    returned: u64,
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
            examined: 0,
            unique_point: false,
            returned: 0,
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
            rekeyed: BTreeSet::new(),
            rekeyed_hashes: HashSet::new(),
            rekeyed_in: BTreeSet::new(),
            rekeyed_untracked: BTreeSet::new(),
            row_locks: Chunked::default(),
            lock_tag: id,
            iso: Isolation::ReadCommitted,
            start_tid: 0,
            read_rows: Vec::new(),
            read_tables: Vec::new(),
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
        let idx = t.indexes();
        let keys = if idx.is_empty() {
            Vec::new()
        } else {
            index_keys(t, &idx, row)?
        };
        let key_bytes: usize = keys.iter().map(|(k, _)| KEY_ENTRY_BYTES + k.len()).sum();
        self.engine.check_memory(
            Need::of(record::rowbuf_size(row.len())) + Need::of(RECORD_BYTES) + Need::of(key_bytes),
        )?;
        if idx.iter().any(|i| i.def.unique) {
            epoch::with_guard(&self.engine.collector, |g| {
                for (index, (key, null)) in idx.iter().zip(&keys) {
                    if index.def.unique && !null && self.unique_conflict(t, index, key, None, g)? {
                        return Err(unique_violation(index, t, row));
                    }
                }
                Ok(())
            })?;
        }
        self.reserve_entry(false)?;
        let data = self.new_buffer(Some(row))?;
        let slot = self.table_slot(t);
        let rowid = t.next_rowid();
        let rec = RecordPtr(Box::into_raw(Record::new_absent(rowid)));
        self.engine.account(RECORD_BYTES as isize);
        epoch::with_guard(&self.engine.collector, |g| {
            t.rows.insert(rowid, rec, g);
            for (index, (key, _)) in idx.iter().zip(&keys) {
                index.insert(key, rowid, rec, g);
            }
        });
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
            if let Some(new) = row {
                // SAFETY: pending buffers live until the transaction ends.
                let prev = unsafe { record::rowbuf_slice(e.newest.data) };
                self.check_keys(t, rowid, new, prev)?;
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
            e.older.push(prev);
            return Ok(WriteOutcome::Done);
        }
        // A committed row: it must still be the version the statement read.
        let want_data = row.is_some() && !t.indexes().is_empty();
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
                let r = self.check_keys(t, rowid, row.expect("update"), &prev);
                scope::outside(|| drop(prev));
                r?;
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

    /// Checks an update of row `rowid` from `prev` to `new` against the unique
    /// indexes (keys it changes), and remembers the row if any key changes.
    fn check_keys(&mut self, t: &TableHandle, rowid: u64, new: &[u8], prev: &[u8]) -> Result<()> {
        let idx = t.indexes();
        if idx.is_empty() {
            return Ok(());
        }
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
            need += KEY_ENTRY_BYTES + kn.len();
            self.rekeyed_in
                .insert((Self::key(t, 0).0, index.def.id, rowid));
            if index.def.unique && !null {
                let dup = epoch::with_guard(&self.engine.collector, |g| {
                    self.unique_conflict(t, index, &kn, Some(rowid), g)
                })?;
                if dup {
                    return Err(unique_violation(index, t, new));
                }
                self.rekeyed_hashes
                    .insert((Self::key(t, 0).0, index.def.id, Self::key_hash(&kn)));
            }
        }
        if changed {
            // The new keys' entries are made at commit.
            self.engine.check_memory(Need::of(need))?;
            self.rekeyed.insert(Self::key(t, rowid));
        }
        Ok(())
    }

    /// Does a row other than `rowid` hold `key` in unique index `index`, as this
    /// transaction sees rows for uniqueness: its own newest versions (also those of
    /// the current statement, as PostgreSQL checks each row at once), otherwise the
    /// committed ones? Rows other transactions have not committed do not count here;
    /// commit checks again (see `commit_pinned`).
    fn unique_conflict(
        &self,
        t: &TableHandle,
        index: &KeyIndex,
        key: &[u8],
        rowid: Option<u64>,
        g: &Guard,
    ) -> Result<bool> {
        let upper = keys::prefix_successor(key);
        let hi = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let tk = Self::key(t, 0).0;
        let mut found = false;
        let mut err = None;
        let mut buf = Vec::new();
        index.scan(Bound::Included(key), hi, false, g, |k, rid, rec| {
            if Some(rid) == rowid || k != key {
                return true;
            }
            let data = match self.pending.get(&(tk, rid)) {
                Some(&i) => {
                    let e = self.entries.get(i);
                    // SAFETY: pending buffers live until the transaction ends.
                    (!e.newest.data.is_null())
                        .then(|| unsafe { record::rowbuf_slice(e.newest.data) })
                }
                None => {
                    // SAFETY: reached through the index under guard `g`.
                    let s = unsafe { rec.get() }.read(g);
                    if s.absent() {
                        None
                    } else {
                        s.data
                    }
                }
            };
            match data.map(|d| index.key_is(&t.layout, d, key, &mut buf)) {
                Some(Ok(true)) => found = true,
                Some(Err(e)) => err = Some(e),
                _ => return true,
            }
            false
        });
        if let Some(e) = err {
            return Err(e);
        }
        let may_be_rekeyed = self.rekeyed_untracked.contains(&tk)
            || self
                .rekeyed_hashes
                .contains(&(tk, index.def.id, Self::key_hash(key)));
        if !found && may_be_rekeyed {
            for &(_, rid) in self.rekeyed.range((tk, 0)..=(tk, u64::MAX)) {
                if Some(rid) == rowid {
                    continue;
                }
                let Some(&i) = self.pending.get(&(tk, rid)) else {
                    continue;
                };
                let e = self.entries.get(i);
                if e.newest.data.is_null() {
                    continue;
                }
                // SAFETY: pending buffers live until the transaction ends.
                let d = unsafe { record::rowbuf_slice(e.newest.data) };
                index.key_of(&t.layout, d, &mut buf)?;
                if buf == key {
                    found = true;
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Notes that `t` was read (whole, or through an index) for commit validation.
    fn note_table_read(&mut self, t: &TableHandle, whole: bool) {
        let slot = self.table_slot(t);
        match self.read_tables.iter_mut().find(|(s, _)| *s == slot) {
            Some(e) => e.1 |= whole,
            None => self.read_tables.push((slot, whole)),
        }
    }

    /// Commit validation of what this transaction read (repeatable read,
    /// serializable); run before its own writers are marked in flight.
    fn validate_reads(&self, g: &Guard) -> Result<()> {
        if self.iso == Isolation::ReadCommitted {
            return Ok(());
        }
        for &(tk, rowid, tid) in &self.read_rows {
            if self.pending.contains_key(&(tk, rowid)) {
                continue;
            }
            let Some(t) = self.tables.iter().find(|t| Arc::as_ptr(t) as usize == tk) else {
                continue;
            };
            let changed = match t.rows.get(rowid, g) {
                None => true,
                Some(r) => {
                    // SAFETY: reached through the row index under guard `g`.
                    let v = unsafe { r.get() }.version();
                    v & (LOCK_BIT | ABSENT_BIT) != 0 || v & TID_MASK != tid
                }
            };
            if changed {
                return Err(Error::Conflict(AbortReason::ReadChanged));
            }
        }
        for &(slot, whole) in &self.read_tables {
            let t = &self.tables[slot];
            let last = if whole {
                t.last_write_tid.load(std::sync::atomic::Ordering::Acquire)
            } else {
                t.last_insert_tid.load(std::sync::atomic::Ordering::Acquire)
            };
            if t.writers_in_flight
                .load(std::sync::atomic::Ordering::Acquire)
                > 0
                || last > self.start_tid
            {
                return Err(Error::Conflict(AbortReason::TableChanged));
            }
        }
        Ok(())
    }

    fn scan(
        &mut self,
        t: &TableHandle,
        cursor: &mut ScanCursor,
        cid: u32,
        batch: &mut RowBatch,
        max_rows: usize,
    ) -> Result<()> {
        batch.clear();
        if cursor.done {
            return Ok(());
        }
        if self.iso != Isolation::ReadCommitted {
            self.note_table_read(t, true);
        }
        let snapshot = (self.iso != Isolation::ReadCommitted).then_some(self.start_tid);
        let mut too_new = false;
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
                let mut committed = |batch: &mut RowBatch| {
                    // SAFETY: reached through the index under guard `g`.
                    let s = unsafe { rec.get() }.read(g);
                    if let (false, Some(d)) = (s.absent(), s.data) {
                        if snapshot.is_some_and(|st| s.tid() > st) {
                            too_new = true;
                        }
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
                !too_new && batch.len() < max_rows && seen < max_rows * 8
            });
        });
        if too_new {
            batch.clear();
            return Err(Error::Conflict(AbortReason::ReadChanged));
        }
        if last == cursor.after {
            cursor.done = true;
        }
        cursor.after = last;
        Ok(())
    }

    /// The version of row `rowid` that a statement with command id `cid` sees, with
    /// the TID to report, if the row exists for it.
    fn visible_version<'g>(
        &self,
        t: &TableHandle,
        rowid: u64,
        rec: Option<RecordPtr>,
        cid: u32,
        g: &'g Guard,
    ) -> Option<(&'g [u8], u64)> {
        if let Some(e) = self.pending_entry(t, rowid).map(|i| self.entries.get(i)) {
            match (e.visible(cid), e.origin) {
                (Some(v), _) if v.data.is_null() => return None,
                // SAFETY: pending buffers live until the transaction ends, beyond `g`'s use.
                (Some(v), _) => {
                    return Some((unsafe { record::rowbuf_slice(v.data) }, e.reported_tid()))
                }
                (None, Origin::Inserted) => return None,
                (None, Origin::Existing { .. }) => {}
            }
        }
        let rec = rec.or_else(|| t.rows.get(rowid, g))?;
        // SAFETY: reached through an index under guard `g`.
        let s = unsafe { rec.get() }.read(g);
        match (s.absent(), s.data) {
            (false, Some(d)) => Some((d, s.tid())),
            _ => None,
        }
    }

    fn index_scan(
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
                table_oid: t.oid,
                id: scan.index_id,
            });
        };
        let tk = Self::key(t, 0).0;
        let index_id = index.def.id;
        // Own rows whose key in this index may differ from their committed entry.
        let untracked = self.rekeyed_untracked.contains(&tk);
        let engine = self.engine;
        let snapshot = (self.iso != Isolation::ReadCommitted).then_some(self.start_tid);
        if snapshot.is_some() && !scan.unique_point {
            self.note_table_read(t, false);
        }
        let mut reads: Vec<(u64, u64)> = Vec::new();
        let mut too_new = false;
        let this = &*self;
        let rekeyed_here = || -> Box<dyn Iterator<Item = u64> + '_> {
            if untracked {
                Box::new(
                    this.rekeyed
                        .range((tk, 0)..=(tk, u64::MAX))
                        .map(|&(_, r)| r),
                )
            } else {
                Box::new(
                    this.rekeyed_in
                        .range((tk, index_id, 0)..=(tk, index_id, u64::MAX))
                        .map(|&(_, _, r)| r),
                )
            }
        };
        let is_rekeyed_here = |rid: u64| {
            if untracked {
                this.rekeyed.contains(&(tk, rid))
            } else {
                this.rekeyed_in.contains(&(tk, index_id, rid))
            }
        };
        let has_rekeyed = scope::outside(|| rekeyed_here().next().is_some());
        let res = epoch::with_guard(&engine.collector, |g| {
            let mut key = Vec::new();
            if scan.extras.is_none() {
                let mut extras = scope::outside(Vec::new);
                for rid in scope::outside(rekeyed_here) {
                    if let Some((d, _)) = this.visible_version(t, rid, None, cid, g) {
                        index.key_of(&t.layout, d, &mut key)?;
                        let entry = scope::outside(|| {
                            let mut v = key.clone();
                            v.extend_from_slice(&rid.to_be_bytes());
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
                });
                scan.extras = Some(extras);
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
            let push_extra = |batch: &mut RowBatch, rid: u64| {
                if let Some((d, tid)) = this.visible_version(t, rid, None, cid, g) {
                    batch.push(rid, tid, d);
                }
            };
            index.scan(lo, hi, scan.reverse, g, |k, rid, rec| {
                entry.clear();
                entry.extend_from_slice(k);
                entry.extend_from_slice(&rid.to_be_bytes());
                last.clear();
                last.extend_from_slice(&entry);
                seen += 1;
                while pos < extras.len() && scan.before(&extras[pos].0, &entry) {
                    push_extra(batch, extras[pos].1);
                    pos += 1;
                }
                if !(has_rekeyed && is_rekeyed_here(rid)) {
                    if let Some((d, tid)) = this.visible_version(t, rid, Some(rec), cid, g) {
                        match index.key_of(&t.layout, d, &mut key) {
                            Ok(_) if key == k => {
                                if let Some(st) = snapshot {
                                    if this.pending_entry(t, rid).is_none() {
                                        if tid > st {
                                            too_new = true;
                                            return false;
                                        }
                                        reads.push((rid, tid));
                                    }
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
        if too_new {
            batch.clear();
            return Err(Error::Conflict(AbortReason::ReadChanged));
        }
        res?;
        scan.returned += batch.len() as u64;
        if snapshot.is_some() {
            // Validation finds the table of recorded rows among the transaction's.
            self.table_slot(t);
            if self.read_rows.len() + reads.len() > MAX_READ_ROWS {
                self.note_table_read(t, true);
            } else {
                self.read_rows
                    .extend(reads.iter().map(|&(r, v)| (tk, r, v)));
            }
            if scan.unique_point && scan.done && scan.returned == 0 {
                // A key looked for and not found: its later insert is a phantom.
                self.note_table_read(t, false);
            }
        }
        Ok(())
    }

    /// Builds index `def` over the rows of `t` and publishes it. Its entries are the
    /// committed rows' keys and this transaction's inserted rows' first keys (what
    /// commit and abort expect); uniqueness is checked on the rows as this transaction
    /// sees them. The caller makes sure no other transaction writes to `t` meanwhile
    /// (PostgreSQL's ShareLock on the table).
    fn build_index(&mut self, t: &TableHandle, def: IndexDef) -> Result<()> {
        def.validate(&t.def)?;
        let engine = self.engine;
        let shared = def.clone();
        scope::outside(|| drop(def));
        let unique = shared.unique;
        let index = Arc::new(KeyIndex::new(shared, &t.def, &engine.collector));
        let tk = Self::key(t, 0).0;
        let mut keys_seen: Vec<(Vec<u8>, u64)> = scope::outside(Vec::new);
        let this = &*self;
        let mut bytes = 0usize;
        let built = epoch::with_guard(&engine.collector, |g| {
            let mut key = Vec::new();
            let mut res = Ok(());
            t.rows.scan_after(None, g, |rowid, rec| {
                let own = this.pending.get(&(tk, rowid)).map(|&i| this.entries.get(i));
                // SAFETY: reached through the row index under guard `g`.
                let committed = || {
                    let s = unsafe { rec.get() }.read(g);
                    if s.absent() {
                        None
                    } else {
                        s.data
                    }
                };
                let pending = |p: *mut u8| {
                    // SAFETY: pending buffers live until the transaction ends.
                    (!p.is_null()).then(|| unsafe { record::rowbuf_slice(p) })
                };
                let (indexed, newest) = match own {
                    Some(e) if e.origin == Origin::Inserted => {
                        (pending(e.base_version()), pending(e.newest.data))
                    }
                    Some(e) => (committed(), pending(e.newest.data)),
                    None => (committed(), committed()),
                };
                let step = (|| {
                    if let Some(d) = indexed {
                        index.key_of(&t.layout, d, &mut key)?;
                        if bytes % (1 << 20) < KEY_ENTRY_BYTES + key.len() {
                            engine.check_memory(Need::of(1 << 20))?;
                        }
                        bytes += KEY_ENTRY_BYTES + key.len();
                        index.insert(&key, rowid, rec, g);
                    }
                    if let (true, Some(d)) = (unique, newest) {
                        if !index.key_of(&t.layout, d, &mut key)? {
                            scope::outside(|| keys_seen.push((key.clone(), rowid)));
                        }
                    }
                    Ok(())
                })();
                res = step;
                res.is_ok()
            });
            res
        });
        engine.account(bytes as isize);
        let dup = if built.is_ok() && unique {
            scope::outside(|| {
                keys_seen.sort_unstable();
                keys_seen
                    .windows(2)
                    .find(|w| w[0].0 == w[1].0)
                    .map(|w| w[1].1)
            })
        } else {
            None
        };
        scope::outside(|| drop(keys_seen));
        let result = match (built, dup) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(rowid)) => {
                let mut row = Vec::new();
                self.get(t, rowid, u32::MAX, &mut row);
                let e = unique_violation(&index, t, &row);
                Err(e)
            }
            (Ok(()), None) => engine.publish_index(t, index.clone(), true),
        };
        if result.is_err() {
            engine.account(-(bytes as isize));
        }
        // An unpublished index is dropped here: nobody else saw it.
        drop(index);
        if result.is_ok() {
            // This transaction's pending updates of the table may give their rows
            // another key in the new index than the committed one: commit must look.
            let tk = Self::key(t, 0).0;
            let own: Vec<(usize, u64)> = self
                .pending
                .range((tk, 0)..=(tk, u64::MAX))
                .filter(|(_, &i)| self.entries.get(i).origin != Origin::Inserted)
                .map(|(&k, _)| k)
                .collect();
            if !own.is_empty() {
                self.rekeyed_untracked.insert(tk);
            }
            self.rekeyed.extend(own);
        }
        result
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
        let engine = self.engine;
        if self.entries.is_empty() {
            if self.iso == Isolation::ReadCommitted && self.row_locks.is_empty() {
                self.active = false;
                return Ok(0);
            }
            let valid = epoch::with_guard(&engine.collector, |g| {
                let v = self.validate_reads(g);
                self.release_row_locks(g, 0);
                v
            });
            self.active = false;
            return valid.map(|_| 0);
        }
        let outcome = epoch::with_guard(&engine.collector, |g| {
            let r = self.commit_pinned(g);
            if r.is_ok() {
                // After the install: waiters then read the new versions.
                self.release_row_locks(g, 0);
            }
            r
        });
        if outcome.is_err() {
            self.abort();
        }
        self.pending.clear();
        self.clear_rekeyed();
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

    /// Can entry `e` change index keys at commit? Not a pre-existing row whose every
    /// update kept its keys (such rows are never in `rekeyed`).
    fn may_rekey(&self, e: &WriteEntry) -> bool {
        e.origin == Origin::Inserted
            || self
                .rekeyed
                .contains(&(Arc::as_ptr(&self.tables[e.table]) as usize, e.rowid))
    }

    /// Unique-key stripes of every unique key of every row version this commit
    /// writes, sorted and without repeats.
    fn key_stripes(&self, idx: &[Arc<[Arc<KeyIndex>]>]) -> Result<Vec<usize>> {
        let mut stripes = Vec::new();
        let mut key = Vec::new();
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            if e.newest.data.is_null() || !self.may_rekey(e) {
                continue;
            }
            let table = &self.tables[e.table];
            for index in idx[e.table].iter().filter(|x| x.def.unique) {
                // SAFETY: pending buffers live until install.
                let row = unsafe { record::rowbuf_slice(e.newest.data) };
                if !index.key_of(&table.layout, row, &mut key)? {
                    stripes.push(stripe_of(index.def.id, &key));
                }
            }
        }
        stripes.sort_unstable();
        stripes.dedup();
        Ok(stripes)
    }

    /// Phases 0-5 under one guard, holding the unique-key stripes of the write set
    /// (taken before any record lock: one global order); returns the commit TID and
    /// where its redo record ends in the log.
    fn commit_pinned(&mut self, g: &Guard) -> Result<(u64, Option<u64>)> {
        let idx: Vec<Arc<[Arc<KeyIndex>]>> = self.tables.iter().map(|t| t.indexes()).collect();
        let stripes = self.key_stripes(&idx)?;
        for &s in &stripes {
            self.engine.lock_key_stripe(s);
        }
        let r = self.commit_locked(g, &idx);
        for &s in &stripes {
            self.engine.unlock_key_stripe(s);
        }
        r
    }

    /// Checks, under the commit locks, that no other committed row holds a unique key
    /// this commit introduces (a key its rows did not have before). Rows of this
    /// transaction were checked by their statements.
    fn check_unique_at_commit(&self, idx: &[Arc<[Arc<KeyIndex>]>], g: &Guard) -> Result<()> {
        let (mut kf, mut kb, mut ko) = (Vec::new(), Vec::new(), Vec::new());
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            if e.newest.data.is_null()
                || !idx[e.table].iter().any(|x| x.def.unique)
                || !self.may_rekey(e)
            {
                continue;
            }
            let table = &self.tables[e.table];
            let tk = Arc::as_ptr(table) as usize;
            // SAFETY: pending buffers live until install.
            let fin = unsafe { record::rowbuf_slice(e.newest.data) };
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
                let upper = keys::prefix_successor(&kf);
                let hi = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                let mut res = Ok(());
                index.scan(Bound::Included(&kf[..]), hi, false, g, |k, rid, rec| {
                    if k != &kf[..] || self.pending.contains_key(&(tk, rid)) {
                        return true;
                    }
                    // SAFETY: reached through the index under guard `g`.
                    let Some(s) = unsafe { rec.get() }.try_read(g, UNIQUE_CHECK_WAIT) else {
                        res = Err(Error::Conflict(AbortReason::UniqueKeyBusy));
                        return false;
                    };
                    let data = (!s.absent()).then_some(s.data).flatten();
                    match data.map(|d| index.key_is(&table.layout, d, &kf, &mut ko)) {
                        Some(Ok(true)) => res = Err(unique_violation(index, table, fin)),
                        Some(Err(e)) => res = Err(e),
                        _ => return true,
                    }
                    false
                });
                res?;
            }
        }
        Ok(())
    }

    fn commit_locked(
        &mut self,
        g: &Guard,
        idx: &[Arc<[Arc<KeyIndex>]>],
    ) -> Result<(u64, Option<u64>)> {
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
        // Phase 1b: validate what was read (repeatable read, serializable).
        if let Err(e) = self.validate_reads(g) {
            self.unlock_first(self.pending.len());
            return Err(e);
        }
        // Phase 1c: mark the written tables (serializable readers validating from now
        // on conflict) and link the new keys of re-keyed rows, before the TID exists:
        // a reader that finds such an entry waits on the locked record.
        let mut written: Vec<usize> = self
            .pending
            .values()
            .map(|&i| self.entries.get(i).table)
            .collect();
        written.sort_unstable();
        written.dedup();
        for &w in &written {
            self.tables[w]
                .writers_in_flight
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        let (links, mut stale) = self.link_new_keys(idx, g);
        let r = self.commit_from_tid(g, idx, &links, &mut stale);
        if r.is_err() {
            for (slot, n, key, rowid) in &links {
                idx[*slot][*n].remove(key, *rowid, g);
            }
            self.unlock_first(self.pending.len());
        }
        for &w in &written {
            self.tables[w]
                .writers_in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        r
    }

    /// Links the index entries of the final keys of re-keyed and updated-inserted rows;
    /// returns them (to unlink on failure) and, per write-set entry, the base keys to
    /// unlink after install.
    #[allow(clippy::type_complexity)]
    fn link_new_keys(
        &self,
        idx: &[Arc<[Arc<KeyIndex>]>],
        g: &Guard,
    ) -> (
        Vec<(usize, usize, Vec<u8>, u64)>,
        BTreeMap<usize, Vec<(usize, Vec<u8>)>>,
    ) {
        // In private memory: these may be large (a mass key update) and live only
        // during this commit, in this process.
        let mut links = scope::outside(|| Vec::with_capacity(16));
        let mut stale: BTreeMap<usize, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        for &i in self.pending.values() {
            let e = self.entries.get(i);
            let indexes = &idx[e.table];
            let plain_insert =
                e.origin == Origin::Inserted && e.older.is_empty() && !e.newest.data.is_null();
            let keeps_keys = !e.newest.data.is_null() && !self.may_rekey(e);
            if indexes.is_empty() || plain_insert || keeps_keys {
                continue;
            }
            let table = &self.tables[e.table];
            let r = e.rec.expect("found");
            let base = match e.origin {
                Origin::Inserted => e.base_version(),
                // SAFETY: locked by us: the committed buffer is stable.
                Origin::Existing { .. } => unsafe { r.get() }.data_ptr(),
            };
            let (mut kb, mut kf) = (Vec::new(), Vec::new());
            for (n, index) in indexes.iter().enumerate() {
                // Keys were encoded from these same rows before: cannot fail now.
                let has_base = !base.is_null();
                if has_base {
                    // SAFETY: live buffers (pending, or committed under our lock).
                    let _ = index.key_of(
                        &table.layout,
                        unsafe { record::rowbuf_slice(base) },
                        &mut kb,
                    );
                }
                let has_final = !e.newest.data.is_null();
                if has_final {
                    // SAFETY: as above.
                    let _ = index.key_of(
                        &table.layout,
                        unsafe { record::rowbuf_slice(e.newest.data) },
                        &mut kf,
                    );
                }
                if has_final && (!has_base || kf != kb) {
                    index.insert(&kf, e.rowid, r, g);
                    self.engine.account((KEY_ENTRY_BYTES + kf.len()) as isize);
                    scope::outside(|| links.push((e.table, n, kf.clone(), e.rowid)));
                }
                if has_base && (!has_final || kf != kb) {
                    scope::outside(|| stale.entry(i).or_default().push((n, kb.clone())));
                }
            }
        }
        (links, stale)
    }

    /// Phases 2-5, with the write set locked and new keys linked.
    fn commit_from_tid(
        &mut self,
        g: &Guard,
        idx: &[Arc<[Arc<KeyIndex>]>],
        links: &[(usize, usize, Vec<u8>, u64)],
        stale: &mut BTreeMap<usize, Vec<(usize, Vec<u8>)>>,
    ) -> Result<(u64, Option<u64>)> {
        let engine = self.engine;
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
                    return Err(Error::Conflict(reason));
                }
            }
        }
        // Phase 3b: unique keys.
        if idx.iter().any(|l| l.iter().any(|x| x.def.unique)) {
            self.check_unique_at_commit(idx, g)?;
        }
        // Phase 4: log.
        let mut log_end = None;
        if let Some(sink) = engine.sink() {
            let parts = scope::outside(|| self.commit_records(tid, sink.max_record()));
            let appended = scope::outside(|| {
                let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                sink.append_parts(&refs)
            });
            scope::outside(|| drop(parts));
            match appended {
                Ok(a) => log_end = Some(a),
                Err(e) => return Err(Error::LogIo(e.to_string())),
            }
        }
        // Phase 5: install and unlock; then unlink the keys rows no longer have.
        let mut garbage = Garbage::default();
        let rekeyed_tables: Vec<usize> = links.iter().map(|l| l.0).collect();
        for (i, e) in self.entries.take_all().enumerate() {
            let table = &self.tables[e.table];
            let r = e.rec.expect("found");
            // SAFETY: as above.
            let rec = unsafe { r.get() };
            let indexes = &idx[e.table];
            for o in &e.older {
                free_private(engine, o.data);
            }
            let old = rec.install_and_unlock(e.newest.data, tid);
            for (n, key) in stale.remove(&i).unwrap_or_default() {
                indexes[n].remove(&key, e.rowid, g);
                engine.account(-((KEY_ENTRY_BYTES + key.len()) as isize));
            }
            use std::sync::atomic::Ordering::AcqRel;
            table.last_write_tid.fetch_max(tid, AcqRel);
            if e.origin == Origin::Inserted && !e.newest.data.is_null() {
                table.last_insert_tid.fetch_max(tid, AcqRel);
            }
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
        for slot in rekeyed_tables {
            self.tables[slot]
                .last_insert_tid
                .fetch_max(tid, std::sync::atomic::Ordering::AcqRel);
        }
        garbage.retire(engine, g);
        if let (Some(sink), Some(a)) = (engine.sink(), log_end) {
            sink.installed(a.phase);
        }
        Ok((tid, log_end.map(|a| a.end)))
    }

    /// The redo record of this commit (built in private memory).
    /// The redo record of this commit: one commit record, or commit parts and a final
    /// commit record (see `redo::payload`) if the after-images exceed `max` bytes.
    fn commit_records(&self, tid: u64, max: usize) -> Vec<Vec<u8>> {
        use crate::redo::payload::{COMMIT, COMMIT_PART};
        let logged = |e: &&WriteEntry| !(e.origin == Origin::Inserted && e.newest.data.is_null());
        let start = |parts: &mut Vec<Vec<u8>>| {
            let mut out = Vec::with_capacity(64 << 10);
            out.push(COMMIT);
            out.extend_from_slice(&tid.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            parts.push(out);
        };
        let mut parts = Vec::new();
        let mut counts = vec![0u32];
        start(&mut parts);
        let mut write = Vec::new();
        for e in self
            .pending
            .values()
            .map(|&i| self.entries.get(i))
            .filter(logged)
        {
            // SAFETY: pending buffers live until install.
            let after =
                (!e.newest.data.is_null()).then(|| unsafe { record::rowbuf_slice(e.newest.data) });
            write.clear();
            encode_write(&mut write, self.tables[e.table].oid, e.rowid, after);
            let cur = parts.last().expect("started");
            if *counts.last().unwrap() > 0 && cur.len() + write.len() > max {
                start(&mut parts);
                counts.push(0);
            }
            parts.last_mut().unwrap().extend_from_slice(&write);
            *counts.last_mut().unwrap() += 1;
        }
        let last = parts.len() - 1;
        for (n, (p, c)) in parts.iter_mut().zip(counts).enumerate() {
            p[0] = if n == last { COMMIT } else { COMMIT_PART };
            p[9..13].copy_from_slice(&c.to_le_bytes());
        }
        parts
    }

    /// Releases the row locks taken by subtransaction `sub` or later (0: all).
    fn release_row_locks(&mut self, g: &Guard, sub: u32) {
        let _ = g;
        let (id, engine) = (self.lock_tag, self.engine);
        // Chunk by chunk, without allocating more than the kept entries' chunks.
        for chunk in self.row_locks.take_chunks() {
            for (r, s) in chunk {
                if s >= sub {
                    // SAFETY: a row-locked record is deleted only by its holder (us),
                    // which releases it under the guard `g` of that commit: still
                    // allocated.
                    unsafe { r.get() }.unlock_row(id, engine);
                } else {
                    self.row_locks.push((r, s));
                }
            }
        }
    }

    fn lock_row(&mut self, t: &TableHandle, rowid: u64, sub: u32) -> Result<RowLock> {
        if let Some(e) = self.pending_entry(t, rowid).map(|i| self.entries.get(i)) {
            if e.newest.data.is_null() {
                return Ok(RowLock::Gone);
            }
            if e.origin == Origin::Inserted {
                return Ok(RowLock::Locked {
                    tid: 0,
                    fresh: false,
                });
            }
        }
        let engine = self.engine;
        if self.row_locks.next_push_allocates() {
            // Like a delete's bookkeeping: may use part of the headroom.
            engine.check_memory_for_delete(Need::of(Chunked::<(RecordPtr, u32)>::chunk_bytes()))?;
        }
        let me = self.lock_tag;
        Ok(epoch::with_guard(&engine.collector, |g| {
            let Some(r) = t.rows.get(rowid, g) else {
                return RowLock::Gone;
            };
            // SAFETY: reached through the row index under guard `g`.
            let rec = unsafe { r.get() };
            match rec.try_lock_row(me) {
                crate::rowlock::TryLock::Busy { holder } => RowLock::Busy { holder },
                crate::rowlock::TryLock::Held { fresh } => {
                    let s = rec.read(g);
                    if s.absent() {
                        if fresh {
                            rec.unlock_row(me, engine);
                        }
                        return RowLock::Gone;
                    }
                    if fresh {
                        self.row_locks.push((r, sub));
                    }
                    RowLock::Locked {
                        tid: s.tid(),
                        fresh,
                    }
                }
            }
        }))
    }

    /// Releases a lock `lock_row` just took (the row turned out not to qualify).
    fn unlock_row(&mut self, t: &TableHandle, rowid: u64) {
        let engine = self.engine;
        epoch::with_guard(&engine.collector, |g| {
            if let Some(r) = t.rows.get(rowid, g) {
                // The lock just taken is the last one recorded; otherwise it stays
                // held until the transaction ends.
                if self.row_locks.last().is_some_and(|&(x, _)| x == r) {
                    self.row_locks.pop();
                    // SAFETY: reached through the row index under guard `g`.
                    unsafe { r.get() }.unlock_row(self.lock_tag, engine);
                }
            }
        });
    }

    fn abort(&mut self) {
        let engine = self.engine;
        // Chunk by chunk, freeing each as it goes: an abort must not need memory (it
        // often follows a statement refused for lack of it).
        let chunks = self.entries.take_chunks();
        engine.set_waiting(self.lock_tag, 0);
        epoch::with_guard(&engine.collector, |g| {
            self.release_row_locks(g, 0);
            let mut garbage = Garbage::default();
            for chunk in chunks {
                for e in chunk {
                    self.discard_entry(e, g, &mut garbage);
                }
            }
            garbage.retire(engine, g);
        });
        self.pending.clear();
        self.clear_rekeyed();
        self.active = false;
    }

    fn clear_rekeyed(&mut self) {
        self.rekeyed.clear();
        self.rekeyed_hashes.clear();
        self.rekeyed_in.clear();
        self.rekeyed_untracked.clear();
    }

    fn key_hash(key: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn discard_entry(&self, e: WriteEntry, g: &Guard, garbage: &mut Garbage) {
        if e.origin == Origin::Inserted {
            // Unlink the index entries of the inserted version before it is freed.
            let table = &self.tables[e.table];
            let base = e.base_version();
            if !base.is_null() {
                let mut key = Vec::new();
                for index in table.indexes().iter() {
                    // SAFETY: pending buffers live until freed below.
                    if index
                        .key_of(
                            &table.layout,
                            unsafe { record::rowbuf_slice(base) },
                            &mut key,
                        )
                        .is_ok()
                    {
                        index.remove(&key, e.rowid, g);
                        self.engine
                            .account(-((KEY_ENTRY_BYTES + key.len()) as isize));
                    }
                }
            }
        }
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
        // Chunk by chunk (see `abort`): kept entries move to new chunks as old ones
        // are freed.
        let chunks = self.entries.take_chunks();
        self.pending.clear();
        engine.set_waiting(self.lock_tag, 0);
        epoch::with_guard(&engine.collector, |g| {
            let mut garbage = Garbage::default();
            for chunk in chunks {
                for mut e in chunk {
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
            }
            // After the writes are undone: PostgreSQL releases the row locks of an
            // aborted subtransaction too.
            self.release_row_locks(g, sub);
            garbage.retire(engine, g);
        });
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(&v[..]),
        Bound::Excluded(v) => Bound::Excluded(&v[..]),
        Bound::Unbounded => Bound::Unbounded,
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
    ) -> Result<()> {
        let _s = scope::enter();
        self.txn().scan(t, cursor, cid, batch, max_rows.max(1))
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

    /// Builds index `def` on `t` (its id from [`Engine::next_index_id`]) and publishes
    /// it, logged. Fails with nothing left if a unique index meets a duplicate. The
    /// caller keeps other writers of `t` out while it runs, and drops the index with
    /// [`Engine::drop_index`] if the transaction aborts.
    pub fn create_index(&mut self, t: &TableHandle, def: IndexDef) -> Result<()> {
        let _s = scope::enter();
        self.check_active()?;
        self.txn().build_index(t, def)
    }

    /// Sets the isolation level; call right after [`Engine::begin`], before any read.
    /// Repeatable read and serializable take their snapshot TID here.
    pub fn set_isolation(&mut self, iso: Isolation) {
        let txn = self.txn();
        txn.iso = iso;
        txn.start_tid = txn.engine.last_tid();
    }

    pub fn isolation(&mut self) -> Isolation {
        self.txn().iso
    }

    /// Names this transaction in row locks by `tag` (non-zero, below 2^63, unique
    /// among live transactions) instead of its id; call before locking any row.
    pub fn set_lock_tag(&mut self, tag: u64) {
        assert!(
            tag != 0 && tag & crate::rowlock::WAITING == 0,
            "invalid lock tag"
        );
        self.txn().lock_tag = tag;
    }

    /// Locks row `rowid` for an UPDATE, DELETE or SELECT FOR UPDATE of subtransaction
    /// `sub` (see [`crate::rowlock`]); never waits: on [`RowLock::Busy`] the caller
    /// waits with [`TxnHandle::wait_row`] and tries again.
    pub fn lock_row(&mut self, t: &TableHandle, rowid: u64, sub: u32) -> Result<RowLock> {
        let _s = scope::enter();
        self.txn().lock_row(t, rowid, sub)
    }

    /// Releases the lock on `rowid` that the last `lock_row` took (it was `fresh`).
    pub fn unlock_row(&mut self, t: &TableHandle, rowid: u64) {
        let _s = scope::enter();
        self.txn().unlock_row(t, rowid)
    }

    /// Waits (at most `timeout`, less if interrupted or released) for `holder` to
    /// release the lock on `rowid`, published as a wait for deadlock detection until
    /// [`TxnHandle::stop_waiting`]. Holds no epoch pin while it sleeps.
    pub fn wait_row(&mut self, t: &TableHandle, rowid: u64, holder: u64, timeout: Duration) {
        let _s = scope::enter();
        let txn = self.txn();
        let engine = txn.engine;
        engine.set_waiting(txn.lock_tag, holder);
        let rec = epoch::with_guard(&engine.collector, |g| t.rows.get(rowid, g));
        if let Some(r) = rec {
            // The record may be freed once unpinned: only its address is used below,
            // after the WAITING mark set under a fresh pin.
            let seq = engine.wake_seq(r.addr());
            let marked = epoch::with_guard(&engine.collector, |g| {
                t.rows.get(rowid, g) == Some(r) && {
                    // SAFETY: reached through the row index under guard `g`.
                    unsafe { r.get() }
                        .owner
                        .fetch_or(crate::rowlock::WAITING, std::sync::atomic::Ordering::AcqRel)
                        & !crate::rowlock::WAITING
                        == holder
                }
            });
            if marked {
                engine.sleep_on_row_addr(r.addr(), seq, timeout);
            }
        }
    }

    /// Ends the wait published by [`TxnHandle::wait_row`].
    pub fn stop_waiting(&mut self) {
        let txn = self.txn();
        txn.engine.set_waiting(txn.lock_tag, 0);
    }

    /// Is this transaction part of a cycle of row-lock waits?
    pub fn deadlocked(&mut self) -> bool {
        let txn = self.txn();
        txn.engine.deadlocked(txn.lock_tag)
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
