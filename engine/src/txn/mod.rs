//! Optimistic transactions (Silo-style) over the per-record version word.
//!
//! A transaction buffers its writes in a write set; new rows are linked into the
//! row-id index at once as *absent* records, invisible to everybody else. Each pending
//! write carries the command id and subtransaction id that made it, so a statement
//! sees the writes of earlier statements of its transaction but not its own (the
//! PostgreSQL rule), and rolling back to a savepoint drops exactly the writes made
//! after it.
//!
//! Where each part lives:
//! * [`handle`]: [`TxnHandle`], the entry point every caller uses (it enters the
//!   engine scope around each call);
//! * [`write_set`]: pending versions, *the* rule for which version a command sees,
//!   inserts, updates and deletes;
//! * [`rekeyed`]: rows whose index keys an update changed (their new keys reach the
//!   indexes only at commit);
//! * [`read_set`]: what repeatable read and serializable transactions read, and its
//!   validation at commit;
//! * [`unique`]: unique-key probes (at each statement and again at commit) and the
//!   striped key locks;
//! * [`scan`] and [`index_scan`]: reading rows; [`shared_scan`]: scans shared with
//!   other processes (parallel query); [`index_build`]: CREATE INDEX;
//! * [`row_locks`]: row locks for UPDATE/DELETE/SELECT FOR UPDATE;
//! * [`rollback`]: abort and rollback to a savepoint;
//! * [`commit`]: the commit protocol, one function per phase.

mod commit;
mod handle;
mod index_build;
mod index_scan;
mod pending_map;
mod read_set;
mod rekeyed;
mod rollback;
mod row_locks;
mod scan;
mod shared_scan;
mod snapshot;
mod truncate;
mod unique;
mod unload;
mod write_set;

pub use handle::TxnHandle;
pub use index_scan::{IndexScan, KeyBound};
pub use scan::{BatchRow, RowBatch, ScanCursor};
pub use shared_scan::{SharedCursor, SharedScan};

use crate::chunked::Chunked;
use crate::engine::{Engine, Need, TableHandle};
use crate::error::{Error, Result};
use crate::ids::{RowId, Tid};
use crate::record::{self, RecordPtr};
use crate::table::Table;
use pending_map::PendingMap;
use read_set::ReadSet;
use rekeyed::Rekeyed;
use std::sync::Arc;
use write_set::WriteEntry;

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

/// Isolation level of a transaction (PostgreSQL's; READ UNCOMMITTED is READ COMMITTED).
///
/// * `ReadCommitted`: each statement reads the snapshot it was given (see
///   [`TxnHandle::snapshot`]; without one, the newest committed versions);
///   UPDATE/DELETE lock rows at fetch and go on with their newest version.
/// * `RepeatableRead`: snapshot isolation, as PostgreSQL's: every read sees the
///   snapshot taken when the transaction started; writing a row changed since fails
///   (40001); reads never fail.
/// * `Serializable`: the same snapshot reads, and commit validates what was read
///   (Silo): rows read must be unchanged, tables scanned whole must not have been
///   written, and tables read through an index range must not have received rows
///   (inserts, or keys moved) since the start. A transaction without writes is not
///   validated: commit order is TID order, so its snapshot is a prefix of a serial
///   order and it never fails (PostgreSQL's READ ONLY DEFERRABLE, without waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Isolation {
    #[default]
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

/// What [`TxnHandle::lock_row`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowLock {
    /// The row is locked by this transaction; `tid` is its newest committed version
    /// (0 for a row this transaction inserted), `fresh` if this call took the lock.
    Locked { tid: Tid, fresh: bool },
    /// Another transaction holds it in a conflicting mode: `holder` is the lock tag
    /// (transaction and subtransaction, see [`crate::rowlock`]) to wait for.
    /// `holding`: this transaction already holds a weaker lock on the row (PostgreSQL
    /// lets such a waiter skip the row's queue of waiters, or it would deadlock with
    /// those waiting for its own lock).
    Busy { holder: u64, holding: bool },
    /// The row no longer exists.
    Gone,
}

/// Names a table within a transaction: the address of its shared [`Table`], stable
/// while the transaction holds the table's `Arc` (in [`Txn::tables`]). Its order is
/// the first half of commit's global lock order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct TableKey(usize);

impl TableKey {
    fn of(t: &Arc<Table>) -> TableKey {
        TableKey(Arc::as_ptr(t) as usize)
    }
}

/// Names a row within a transaction. Ordered by table, then row id: the global order in
/// which commit locks records, so committers cannot deadlock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RowKey {
    table: TableKey,
    rowid: RowId,
}

impl RowKey {
    /// Every row of table `table`, as a range of keys.
    fn all_of(table: TableKey) -> std::ops::RangeInclusive<RowKey> {
        RowKey {
            table,
            rowid: RowId(0),
        }..=RowKey {
            table,
            rowid: RowId(u64::MAX),
        }
    }
}

/// One engine transaction. The object lives in the arena (see [`TxnHandle`]); its
/// write set (entries and pending map) and row-lock list are in the owning process's
/// private memory (only that process reads them, and they must not use up the shared
/// memory a big DELETE is about to free); the pending row buffers and absent records
/// they point to are shared.
pub(crate) struct Txn {
    engine: &'static Engine,
    id: u64,
    /// Tables this transaction touched; a write-set entry names its table by slot here.
    tables: Vec<Arc<Table>>,
    entries: Chunked<WriteEntry>,
    /// Row -> index in `entries`, in lock order.
    pending: PendingMap,
    rekeyed: Rekeyed,
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
    start_tid: Tid,
    reads: ReadSet,
    /// This transaction's slot in the engine's snapshot table, while it holds
    /// snapshots (see [`crate::snapshots`]).
    snap_slot: Option<usize>,
    /// Read committed: the snapshot the current statement reads (None: newest).
    statement_snapshot: Option<Tid>,
    /// Between [`Txn::prepare`] and [`Txn::finish`] (see [`commit`]).
    prepared: Option<commit::Prepared>,
    /// TRUNCATEs of this transaction, in order (see [`truncate`]).
    truncations: Vec<truncate::Truncation>,
    /// Spill files its unloads wrote, pinned as in flight until it ends (see
    /// [`crate::unload`]).
    spill_files: Vec<String>,
    /// Tables this transaction created (the caller says so): nobody else writes them
    /// before it commits (see `unique::private_slots`).
    private: Vec<crate::ids::TableId>,
    /// Per table, its `key_commits` count read before this transaction's first
    /// unique-key check on it (see `unique::check_unique_at_commit`).
    key_watermarks: std::cell::RefCell<Vec<(TableKey, u64)>>,
    /// Reads see the newest committed versions whatever the snapshot (set only for
    /// the duration of [`TxnHandle::scan_newest`]).
    read_newest: bool,
    /// Shared-memory bytes the commit of the write set will take until the epoch
    /// moves on (see `reserve_entry`); never shrinks before the transaction ends.
    commit_reserve: usize,
    /// The log must be durable up to here before this transaction's commit is
    /// acknowledged: it read committed versions whose records end at or before it
    /// (see [`Txn::note_read_committed`]).
    depends_on: crate::ids::Lsn,
    /// The index keys of the row an insert is adding, one per index, with whether a
    /// column is NULL: kept between inserts (in private memory) so that a row's keys
    /// take no allocation.
    insert_keys: Vec<(Vec<u8>, bool)>,
    /// Per table slot, the table's index list as of an index generation (see
    /// [`Txn::with_indexes`]).
    index_lists: Vec<Option<(u64, IndexList)>>,
    active: bool,
}

/// A table's index list.
type IndexList = Arc<[Arc<crate::index::KeyIndex>]>;

impl Txn {
    pub(crate) fn new(engine: &'static Engine, id: u64) -> Txn {
        Txn {
            engine,
            id,
            tables: Vec::new(),
            entries: Chunked::default(),
            pending: PendingMap::new(),
            rekeyed: Rekeyed::default(),
            row_locks: Chunked::default(),
            lock_tag: id << crate::rowlock::SUB_BITS,
            iso: Isolation::ReadCommitted,
            start_tid: Tid::NONE,
            reads: ReadSet::default(),
            snap_slot: None,
            statement_snapshot: None,
            prepared: None,
            truncations: Vec::new(),
            spill_files: Vec::new(),
            private: Vec::new(),
            key_watermarks: std::cell::RefCell::new(Vec::new()),
            read_newest: false,
            commit_reserve: 0,
            depends_on: crate::ids::Lsn(0),
            insert_keys: Vec::new(),
            index_lists: Vec::new(),
            active: true,
        }
    }

    /// The slot of `t` in [`Txn::tables`], added if new.
    fn table_slot(&mut self, t: &TableHandle) -> usize {
        if let Some(i) = self.tables.iter().position(|x| Arc::ptr_eq(x, t.arc())) {
            return i;
        }
        self.tables.push(t.arc().clone());
        self.tables.len() - 1
    }

    /// Calls `f` with the index list of the table in slot `slot`. The list is kept
    /// for the transaction and taken again only when the table's index generation
    /// moved: every row written took the table's list lock and a reference to the
    /// list, four atomic updates of lines every writer of the table shares.
    fn with_indexes<R>(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut Self, &[Arc<crate::index::KeyIndex>]) -> R,
    ) -> R {
        if self.index_lists.len() <= slot {
            self.index_lists.resize_with(slot + 1, || None);
        }
        let generation = self.tables[slot].index_generation();
        let list = match self.index_lists[slot].take() {
            Some((g, list)) if g == generation => list,
            // (Dropped in the engine scope: the last reference may free the list.)
            _ => self.tables[slot].indexes(),
        };
        let r = f(self, &list);
        self.index_lists[slot] = Some((generation, list));
        r
    }

    fn row_key(t: &TableHandle, rowid: RowId) -> RowKey {
        RowKey {
            table: TableKey::of(t.arc()),
            rowid,
        }
    }

    /// This transaction has just read committed versions: each was installed after its
    /// redo record was appended, so the log's current end covers them. Its commit
    /// waits until the log is durable up to there (durable reads: nothing acknowledged
    /// may depend on a change a crash can lose). One atomic load per engine call.
    pub(super) fn note_read_committed(&mut self) {
        if let Some(sink) = self.engine.sink() {
            self.depends_on = self.depends_on.max(sink.written());
        }
    }

    /// The snapshot reads see committed rows at: the transaction's (repeatable read,
    /// serializable) or the statement's (read committed).
    fn read_view(&self) -> Tid {
        if self.read_newest {
            return Tid::NEWEST;
        }
        match self.iso {
            Isolation::ReadCommitted => self.statement_snapshot.unwrap_or(Tid::NEWEST),
            _ => self.start_tid,
        }
    }

    /// Does commit validate what this transaction read (serializable)?
    fn validates_reads(&self) -> bool {
        self.iso == Isolation::Serializable
    }

    /// A new pending buffer holding `row` (None: a delete, null), accounted.
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

/// The bytes of pending buffer `p`, or None for a delete (null).
///
/// # Safety
/// `p` is null or a pending buffer of a live write set; the slice must not outlive the
/// buffer (pending buffers live until install or rollback frees them).
unsafe fn pending_bytes<'a>(p: *mut u8) -> Option<&'a [u8]> {
    // SAFETY: forwarded contract.
    (!p.is_null()).then(|| unsafe { record::rowbuf_slice(p) })
}
