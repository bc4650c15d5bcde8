//! The engine root: catalog of tables, TID source, epoch collector, memory limit.
//! One `Engine` lives in the arena and is shared by every process.

use crate::alloc;
use crate::catalog::TableDef;
use crate::epoch;
use crate::error::{Error, Result};
use crate::fnv::FnvBuild;
use crate::ids::{TableId, Tid};
use crate::redo::payload::LogRecord;
use crate::redo::RedoSink;
use crate::scope;
use crate::sync::SpinRwLock;
use crate::table::{Table, TableStats};
use crate::txn::{Txn, TxnHandle};
use crossbeam_epoch::Collector;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Settings fixed when the engine is built.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Bytes the engine may use for data and transactions. With an arena installed,
    /// it is compared with the arena's bytes in use; the arena keeps headroom above it.
    pub memory_limit: usize,
}

impl EngineConfig {
    /// A limit that leaves headroom in an arena of `capacity` bytes for garbage in
    /// flight and for structures that must never fail to allocate (skip-list nodes,
    /// epoch bags): 1/8 of the arena, at least 2 MiB.
    pub fn for_arena(capacity: usize) -> Self {
        let headroom = (capacity / 8).max(2 << 20);
        EngineConfig {
            memory_limit: capacity.saturating_sub(headroom),
        }
    }
}

pub struct Engine {
    pub(crate) collector: Collector,
    tables: SpinRwLock<HashMap<TableId, Arc<Table>, FnvBuild>>,
    /// Last commit TID handed out.
    last_tid: AtomicU64,
    /// The next transaction id not handed out in a block (see [`Engine::begin`]).
    next_txn_id: AtomicU64,
    /// Tells this engine from others a process made before (tests build many): a
    /// process's block of transaction ids belongs to one engine.
    instance: u64,
    config: EngineConfig,
    /// Bytes accounted by the engine itself (kept only when no arena is installed:
    /// see [`Engine::account`]).
    accounted: AtomicUsize,
    /// The redo log, attached once (at start-up, after recovery); null = none.
    sink: AtomicPtr<SinkBox>,
    /// Last index id handed out.
    last_index_id: std::sync::atomic::AtomicU32,
    /// Striped locks on unique keys, taken by committers (in stripe order, before
    /// any record lock) for every unique key they write, so that two transactions
    /// committing the same key serialise and the second sees the first.
    key_locks: Box<[std::sync::atomic::AtomicU32]>,
    /// Futex stripes of row-lock waiters (see [`crate::rowlock`]).
    row_wakeups: Box<[std::sync::atomic::AtomicU32]>,
    /// Holders of rows locked by more than one lock entry (see [`crate::rowlock`]).
    lock_table: crate::rowlock::LockTable,
    /// Who waits for whom, for deadlock detection.
    wait_slots: Box<[crate::rowlock::WaitSlot]>,
    /// Serialises deadlock checks, so that of a cycle's members checking at once only
    /// the first is chosen (it leaves the waits-for graph before the next one looks).
    pub(crate) deadlock_check: crate::sync::SpinLock<()>,
    /// Registered snapshots (see [`crate::snapshots`]).
    snapshots: crate::snapshots::Snapshots,
    /// Work waiting for the horizon (see [`crate::versions`]).
    horizon_queue: crate::versions::HorizonQueue,
    /// Keeps a checkpoint and a commit that redefines a table (ALTER TABLE) apart; see
    /// [`Engine::enter_redefine`].
    redefine_gate: AtomicU64,
    /// Spill files kept whatever the catalog says: (name, number of the first
    /// checkpoint whose sweep may delete it; `u64::MAX`: an unload in flight). See
    /// [`crate::unload`].
    pub(crate) spill_pins: crate::sync::SpinLock<Vec<(String, u64)>>,
    /// Checkpoints begun since start-up (see [`crate::unload`]).
    pub(crate) checkpoints_begun: AtomicU64,
}

/// Older versions kept for snapshots, and what holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionStats {
    /// The oldest registered snapshot.
    pub oldest: Option<crate::snapshots::OldestSnapshot>,
    /// Older row versions kept, and their bytes (nodes and row buffers).
    pub versions: i64,
    pub bytes: i64,
    /// Commits whose cleanup waits for the horizon.
    pub queued: usize,
}

/// Number of unique-key lock stripes.
pub(crate) const KEY_LOCK_STRIPES: usize = 4096;

/// Bytes an operation is about to allocate, split by how the arena serves them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// Requests below `arena::LARGE_MIN`.
    pub small: usize,
    /// Requests of at least `arena::LARGE_MIN` (growing vectors, huge rows).
    pub large: usize,
}

impl Need {
    /// One allocation of `bytes`.
    pub fn of(bytes: usize) -> Need {
        if bytes >= crate::arena::LARGE_MIN {
            Need {
                small: 0,
                large: bytes,
            }
        } else {
            Need {
                small: bytes,
                large: 0,
            }
        }
    }

    pub fn total(self) -> usize {
        self.small + self.large
    }
}

impl std::ops::Add for Need {
    type Output = Need;
    fn add(self, o: Need) -> Need {
        Need {
            small: self.small + o.small,
            large: self.large + o.large,
        }
    }
}

/// A reference to a table that keeps it alive; dropping it enters the engine scope.
pub struct TableHandle(Option<Arc<Table>>);

impl TableHandle {
    /// A handle on `t` (call inside an engine scope: it clones an arena `Arc`).
    pub(crate) fn of(t: Arc<Table>) -> TableHandle {
        TableHandle(Some(t))
    }

    pub fn table(&self) -> &Table {
        self.0.as_ref().expect("live handle")
    }
    pub(crate) fn arc(&self) -> &Arc<Table> {
        self.0.as_ref().expect("live handle")
    }
}

impl std::ops::Deref for TableHandle {
    type Target = Table;
    fn deref(&self) -> &Table {
        self.table()
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        let _s = scope::enter();
        drop(self.0.take());
    }
}

struct SinkBox(Box<dyn RedoSink>);

/// The redefine gate's closed bit (the rest counts redefine commits inside).
const GATE_CLOSED: u64 = 1 << 63;

/// The closed redefine gate of a checkpoint (see [`Engine::close_redefines`]).
pub struct RedefineGate<'e>(&'e Engine);

impl Drop for RedefineGate<'_> {
    fn drop(&mut self) {
        self.0
            .redefine_gate
            .fetch_and(!GATE_CLOSED, Ordering::AcqRel);
    }
}

/// Figures about the engine's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub limit: usize,
    pub in_use: usize,
    pub arena_capacity: usize,
    pub arena_reserved: usize,
}

/// Transaction ids a thread takes from the shared counter at once.
const TXN_ID_BLOCK: u64 = 256;

/// Instance numbers of engines (see `Engine::instance`), from 1.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A thread's block of transaction ids: `next..end` of engine `instance`, taken in
/// fork generation `generation`.
#[derive(Clone, Copy)]
struct TxnIds {
    instance: u64,
    generation: u64,
    next: u64,
    end: u64,
}

thread_local! {
    static TXN_IDS: std::cell::Cell<TxnIds> = const {
        std::cell::Cell::new(TxnIds { instance: 0, generation: 0, next: 0, end: 0 })
    };
}

impl Engine {
    /// Builds an engine. With an arena installed, it lives in the arena (the caller
    /// leaks the box into shared memory). A `sink` must itself be allocated inside an
    /// engine scope, since every process calls it.
    pub fn new(config: EngineConfig, sink: Option<Box<dyn RedoSink>>) -> Box<Engine> {
        let _s = scope::enter();
        Box::new(Engine {
            collector: Collector::new(),
            tables: SpinRwLock::new(HashMap::default()),
            last_tid: AtomicU64::new(0),
            next_txn_id: AtomicU64::new(1),
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            config,
            accounted: AtomicUsize::new(0),
            sink: AtomicPtr::new(sink.map_or(std::ptr::null_mut(), |s| {
                Box::into_raw(Box::new(SinkBox(s)))
            })),
            last_index_id: std::sync::atomic::AtomicU32::new(0),
            key_locks: (0..KEY_LOCK_STRIPES)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            row_wakeups: crate::rowlock::new_wakeups(),
            lock_table: crate::rowlock::new_lock_table(),
            wait_slots: crate::rowlock::new_wait_slots(),
            deadlock_check: crate::sync::SpinLock::new(()),
            snapshots: crate::snapshots::Snapshots::new(),
            horizon_queue: crate::versions::HorizonQueue::default(),
            redefine_gate: AtomicU64::new(0),
            spill_pins: crate::sync::SpinLock::new(Vec::new()),
            checkpoints_begun: AtomicU64::new(0),
        })
    }

    /// Creates engine table `table` (its definition takes the table's database).
    pub fn create_table(&self, table: TableId, def: TableDef) -> Result<()> {
        self.create_table_inner(table, def, true)
    }

    pub(crate) fn create_table_inner(
        &self,
        table: TableId,
        mut def: TableDef,
        log: bool,
    ) -> Result<()> {
        def.database = table.database;
        def.validate()?;
        let _s = scope::enter();
        // The caller built `def` in its own (private) memory: copy it into the arena,
        // or other processes would read this process's heap.
        let shared_def = def.clone();
        scope::outside(|| drop(def));
        let def = shared_def;
        // (Replay, unlogged, may use part of the headroom: see
        // `check_memory_for_replay`.)
        if log {
            self.check_memory(Need::of(4096))?;
        } else {
            self.check_memory_for_replay(Need::of(4096))?;
        }
        // The catalog stays locked from the log append to the change, so a checkpoint
        // (which takes its start LSN under the catalog lock) sees the table or replays
        // its record.
        let mut tables = self.tables.write();
        if tables.contains_key(&table) {
            return Err(Error::TableExists { table });
        }
        let phase = if log {
            let rec = scope::outside(|| LogRecord::CreateTable {
                table,
                def: def.clone(),
            });
            self.log_durably(&rec)?
        } else {
            None
        };
        tables.insert(table, Arc::new(Table::new(table, def)));
        drop(tables);
        if let (Some(sink), Some(p)) = (self.sink(), phase) {
            sink.installed(p);
        }
        Ok(())
    }

    /// Removes table `table` from the catalog; its memory is freed once no transaction
    /// or scan refers to it. Returns false if there was no such table.
    ///
    /// The drop is logged first; if the log cannot take it, nothing is dropped.
    pub fn drop_table(&self, table: TableId) -> Result<bool> {
        self.drop_table_logged(table, true)
    }

    /// Appends `rec` to the redo log (if any) and waits until it is durable; returns
    /// the checkpoint phase to report as installed.
    fn log_durably(&self, rec: &LogRecord) -> Result<Option<usize>> {
        let Some(sink) = self.sink() else {
            return Ok(None);
        };
        let buf = scope::outside(|| {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            buf
        });
        let a = sink.append(&buf).map_err(|e| Error::LogIo(e.to_string()))?;
        scope::outside(|| drop(buf));
        if let Err(e) = sink.make_durable(a.end) {
            sink.installed(a.phase);
            return Err(Error::NotDurable(e.to_string()));
        }
        Ok(Some(a.phase))
    }

    pub(crate) fn drop_table_inner(&self, table: TableId) -> bool {
        self.drop_table_logged(table, false).unwrap_or(false)
    }

    fn drop_table_logged(&self, table: TableId, log: bool) -> Result<bool> {
        let _s = scope::enter();
        let mut tables = self.tables.write();
        if !tables.contains_key(&table) {
            return Ok(false);
        }
        let phase = if log {
            self.log_durably(&LogRecord::DropTable { table })?
        } else {
            None
        };
        let removed = tables.remove(&table);
        drop(tables);
        if let (Some(sink), Some(p)) = (self.sink(), phase) {
            sink.installed(p);
        }
        if let Some(t) = removed {
            // Retire through the collector: the drop of the skip lists must not race
            // with epoch-protected readers of their nodes.
            epoch::with_guard(&self.collector, |g| g.defer(move || drop(t)));
            epoch::reclaim(&self.collector);
        }
        Ok(true)
    }

    /// Locks unique-key stripe `i` (spins: holders are committers in their commit
    /// window, which never wait for anything but other commit-window locks taken in
    /// the same global order).
    pub(crate) fn lock_key_stripe(&self, i: usize) {
        let w = &self.key_locks[i];
        let mut backoff = crate::sync::Backoff::new();
        while w
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            backoff.snooze();
        }
    }

    pub(crate) fn unlock_key_stripe(&self, i: usize) {
        self.key_locks[i].store(0, Ordering::Release);
    }

    pub(crate) fn row_wakeups(&self) -> &[std::sync::atomic::AtomicU32] {
        &self.row_wakeups
    }

    pub(crate) fn lock_table(&self) -> &crate::rowlock::LockTable {
        &self.lock_table
    }

    pub(crate) fn wait_slots(&self) -> &[crate::rowlock::WaitSlot] {
        &self.wait_slots
    }

    /// A new index id.
    pub fn next_index_id(&self) -> u32 {
        self.last_index_id.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn observe_index_id(&self, id: u32) {
        self.last_index_id.fetch_max(id, Ordering::AcqRel);
    }

    /// Publishes a built index on `t` (logged first when `log`): nothing changes if
    /// the log cannot take it or the table already has an index of that name.
    pub(crate) fn publish_index(
        &self,
        t: &Table,
        index: Arc<crate::index::KeyIndex>,
        log: bool,
    ) -> Result<()> {
        let _s = scope::enter();
        // The catalog lock orders index DDL with checkpoints, as for tables.
        let tables = self.tables.write();
        let current = t.indexes();
        if current.iter().any(|i| i.def.name == index.def.name) {
            return Err(scope::outside(|| Error::IndexExists {
                name: index.def.name.clone(),
            }));
        }
        let phase = if log {
            let rec = scope::outside(|| LogRecord::CreateIndex {
                table: t.id,
                def: index.def.clone(),
            });
            let r = self.log_durably(&rec);
            scope::outside(|| drop(rec));
            r?
        } else {
            None
        };
        self.observe_index_id(index.def.id);
        let mut list: Vec<_> = current.iter().cloned().collect();
        list.push(index);
        t.set_indexes(list);
        drop(tables);
        if let (Some(sink), Some(p)) = (self.sink(), phase) {
            sink.installed(p);
        }
        Ok(())
    }

    /// Drops index `id` of table `table` (logged first). Returns false if there is no
    /// such index.
    pub fn drop_index(&self, table: TableId, id: u32) -> Result<bool> {
        self.drop_index_logged(table, id, true)
    }

    pub(crate) fn drop_index_logged(&self, table: TableId, id: u32, log: bool) -> Result<bool> {
        let _s = scope::enter();
        let Some(t) = self.tables.read().get(&table).cloned() else {
            return Ok(false);
        };
        let tables = self.tables.write();
        let current = t.indexes();
        let Some(pos) = current.iter().position(|i| i.def.id == id) else {
            return Ok(false);
        };
        let phase = if log {
            self.log_durably(&LogRecord::DropIndex { table, id })?
        } else {
            None
        };
        let mut list: Vec<_> = current.iter().cloned().collect();
        let removed = list.remove(pos);
        t.set_indexes(list);
        drop(tables);
        drop(current);
        if let (Some(sink), Some(p)) = (self.sink(), phase) {
            sink.installed(p);
        }
        // Scans look the index up again under each guard; free it once none can hold it.
        epoch::with_guard(&self.collector, |g| g.defer(move || drop(removed)));
        epoch::reclaim(&self.collector);
        Ok(true)
    }

    /// Removes index `id` from table object `t` without logging (a replacement table
    /// not yet in the catalog: see [`TxnHandle::drop_index_of_replacement`]).
    pub(crate) fn drop_index_from(&self, t: &Table, id: u32) {
        let _s = scope::enter();
        let current = t.indexes();
        let Some(pos) = current.iter().position(|i| i.def.id == id) else {
            return;
        };
        let mut list: Vec<_> = current.iter().cloned().collect();
        let removed = list.remove(pos);
        t.set_indexes(list);
        drop(current);
        epoch::with_guard(&self.collector, |g| g.defer(move || drop(removed)));
    }

    /// A commit that redefines a table enters before it takes any lock and leaves
    /// after its install (or undo). A checkpoint closes the gate from before it takes
    /// its start LSN until it has written every table, and waits for those inside.
    ///
    /// Invariant: no redefine commit appends its record or installs while a checkpoint
    /// writes tables. Without it, a checkpoint could hold a table with its new
    /// definition while the log from the checkpoint's start still holds that table's
    /// older rows, in the old layout, to replay into it.
    pub(crate) fn enter_redefine(&self) {
        let mut backoff = crate::sync::Backoff::new();
        loop {
            let v = self.redefine_gate.load(Ordering::Acquire);
            if v & GATE_CLOSED == 0
                && self
                    .redefine_gate
                    .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if v & GATE_CLOSED != 0 {
                // A checkpoint writes tables (seconds, for a big database): sleep.
                std::thread::sleep(std::time::Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }

    pub(crate) fn leave_redefine(&self) {
        self.redefine_gate.fetch_sub(1, Ordering::AcqRel);
    }

    /// Closes the redefine gate (see [`Engine::enter_redefine`]) until the returned
    /// guard is dropped: waits for another checkpoint's closing and for the redefine
    /// commits inside.
    pub fn close_redefines(&self) -> RedefineGate<'_> {
        loop {
            let v = self.redefine_gate.load(Ordering::Acquire);
            if v & GATE_CLOSED == 0
                && self
                    .redefine_gate
                    .compare_exchange_weak(v, v | GATE_CLOSED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        while self.redefine_gate.load(Ordering::Acquire) & !GATE_CLOSED != 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        RedefineGate(self)
    }

    /// The catalog, for changing it (one writer at a time; DDL logs under it).
    pub(crate) fn tables_mut(
        &self,
    ) -> crate::sync::WriteGuard<'_, HashMap<TableId, Arc<Table>, FnvBuild>> {
        self.tables.write()
    }

    pub fn table(&self, table: TableId) -> Option<TableHandle> {
        let _s = scope::enter();
        let t = self.tables.read().get(&table).cloned();
        t.map(|t| TableHandle(Some(t)))
    }

    /// Every table, in (database, relation) order.
    pub fn table_ids(&self) -> Vec<TableId> {
        let _s = scope::enter();
        let ids: Vec<TableId> = self.tables.read().keys().copied().collect();
        scope::outside(|| {
            let mut v = ids.to_vec();
            v.sort_unstable();
            v
        })
    }

    pub fn table_stats(&self, table: TableId) -> Option<TableStats> {
        self.table(table).map(|t| t.stats())
    }

    /// Runs `f` while no table is created or dropped (checkpoints take their start
    /// LSN this way: DDL logs and changes the catalog under its write lock).
    pub fn with_stable_catalog<R>(&self, f: impl FnOnce() -> R) -> R {
        let _s = scope::enter();
        let _g = self.tables.read();
        scope::outside(f)
    }

    /// The redo log, if one is attached.
    pub(crate) fn sink(&self) -> Option<&dyn RedoSink> {
        let p = self.sink.load(Ordering::Acquire);
        // SAFETY: set once from a leaked box that lives as long as the engine.
        unsafe { p.as_ref() }.map(|b| &*b.0)
    }

    /// Attaches the redo log (once, after recovery, before any other process uses
    /// the engine). The sink must have been allocated inside an engine scope.
    pub fn attach_sink(&self, sink: Box<dyn RedoSink>) {
        let _s = scope::enter();
        let p = Box::into_raw(Box::new(SinkBox(sink)));
        let old = self.sink.swap(p, Ordering::AcqRel);
        assert!(old.is_null(), "a redo sink is already attached");
    }

    /// Starts a transaction.
    pub fn begin(&'static self) -> TxnHandle {
        let _s = scope::enter();
        let id = self.next_txn_id();
        TxnHandle::new(Txn::new(self, id))
    }

    /// A transaction id no other transaction of this engine has: from this thread's
    /// block of [`TXN_ID_BLOCK`] ids, taken from the shared counter when used up (one
    /// update of a line every backend writes per block, not per transaction). A
    /// block belongs to one engine and one process: a child process forked after its
    /// parent took a block takes its own (see [`crate::epoch::fork_generation`]).
    fn next_txn_id(&self) -> u64 {
        let generation = crate::epoch::fork_generation();
        TXN_IDS.with(|b| {
            let mut block = b.get();
            if block.instance != self.instance
                || block.generation != generation
                || block.next == block.end
            {
                let start = self.next_txn_id.fetch_add(TXN_ID_BLOCK, Ordering::Relaxed);
                block = TxnIds {
                    instance: self.instance,
                    generation,
                    next: start,
                    end: start + TXN_ID_BLOCK,
                };
            }
            let id = block.next;
            block.next += 1;
            b.set(block);
            id
        })
    }

    /// A new commit TID. Sequentially consistent: see [`crate::snapshots`].
    pub(crate) fn next_commit_tid(&self) -> Tid {
        Tid(self.last_tid.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// The snapshot slots.
    pub(crate) fn snapshots(&self) -> &crate::snapshots::Snapshots {
        &self.snapshots
    }

    /// A snapshot TID (the caller has published a slot first: see
    /// [`crate::snapshots`]).
    pub(crate) fn snapshot_tid(&self) -> Tid {
        Tid(self.last_tid.load(Ordering::SeqCst))
    }

    /// No live or future snapshot is older than this.
    pub(crate) fn horizon(&self) -> Tid {
        self.snapshots.horizon(&self.last_tid)
    }

    pub(crate) fn horizon_queue(&self) -> &crate::versions::HorizonQueue {
        &self.horizon_queue
    }

    /// Older versions kept for snapshots, over all tables, and the oldest snapshot.
    pub fn version_stats(&self) -> VersionStats {
        let (mut versions, mut bytes) = (0, 0);
        for t in self.tables.read().values() {
            let (n, b) = t.versions();
            versions += n;
            bytes += b;
        }
        VersionStats {
            oldest: self.snapshots.oldest(),
            versions,
            bytes,
            queued: self.horizon_queue.len(),
        }
    }

    /// Makes sure new commit TIDs are above `tid` (recovery).
    pub(crate) fn observe_tid(&self, tid: Tid) {
        self.last_tid.fetch_max(tid.get(), Ordering::AcqRel);
    }

    /// The newest commit TID handed out.
    pub fn last_tid(&self) -> Tid {
        Tid(self.last_tid.load(Ordering::Acquire))
    }

    /// Notes `delta` bytes of engine data allocated (freed when negative), for an
    /// engine without an arena. With an arena, memory in use is the arena's own
    /// count: an atomic add per row buffer, record and index entry on a line every
    /// backend shares (beside the commit TID) would only cost (it stalled every
    /// insert behind the stores of the row just copied).
    #[inline]
    pub(crate) fn account(&self, delta: isize) {
        if alloc::arena().is_some() {
            return;
        }
        if delta >= 0 {
            self.accounted.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.accounted
                .fetch_sub((-delta) as usize, Ordering::Relaxed);
        }
    }

    fn in_use(&self) -> usize {
        match alloc::arena() {
            Some(a) => a.stats().in_use,
            None => self.accounted.load(Ordering::Relaxed),
        }
    }

    /// Refuses new data (inserts, updates) that would need `need` more bytes beyond
    /// the limit. Tries to reclaim garbage once before giving up.
    pub(crate) fn check_memory(&self, need: Need) -> Result<()> {
        self.check_against(need, self.config.memory_limit)
    }

    /// For rows the redo log replays: they fitted before the server stopped, but
    /// their indexes may take a little more now (a B+tree's fill depends on the
    /// order of its inserts), and recovery must not fail for that. They may use half
    /// of the headroom deletes may use, so that a full engine can still be emptied
    /// after recovery.
    pub(crate) fn check_memory_for_replay(&self, need: Need) -> Result<()> {
        let limit = self.config.memory_limit;
        let hard = self.delete_ceiling().max(limit);
        self.check_against(need, limit + (hard - limit) / 2)
    }

    /// What deletes may fill the arena up to (see `check_memory_for_delete`).
    fn delete_ceiling(&self) -> usize {
        match alloc::arena() {
            Some(a) => {
                let cap = a.stats().capacity;
                cap - 2 * Self::floor(cap)
            }
            None => self.config.memory_limit + self.config.memory_limit / 8,
        }
    }

    /// Would `bytes` more fit under the memory limit now? (For optional memory, such
    /// as caches: no reclaim, no error.)
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.fits(Need::of(bytes), self.config.memory_limit)
    }

    /// Like [`Engine::check_memory`], for the bookkeeping of deletes: they may use part
    /// of the headroom, so that a full engine can still be emptied.
    pub(crate) fn check_memory_for_delete(&self, need: Need) -> Result<()> {
        self.check_against(need, self.delete_ceiling().max(self.config.memory_limit))
    }

    /// Part of the arena kept for allocations that must never fail (skip-list nodes,
    /// epoch bags) beyond what any check asked for.
    fn floor(capacity: usize) -> usize {
        (capacity / 64).max(256 << 10)
    }

    fn fits(&self, need: Need, limit: usize) -> bool {
        if self.in_use() + need.total() > limit {
            return false;
        }
        let Some(a) = alloc::arena() else {
            return true;
        };
        // Large requests are served by the bump pointer or the large free list only;
        // small ones also by their class's free list (counted as a whole: a class list
        // is usually refilled by data of the same sizes).
        let st = a.stats();
        let floor = Self::floor(st.capacity);
        let for_large = a.unreserved() + st.large_free;
        let small_free = st.reserved.saturating_sub(st.in_use + st.large_free);
        for_large >= floor + need.large && for_large + small_free >= floor + need.total()
    }

    fn check_against(&self, need: Need, limit: usize) -> Result<()> {
        if self.fits(need, limit) {
            return Ok(());
        }
        // Garbage waits for every pinned participant to move on (another backend in
        // a statement, the worker): give them a few short chances before refusing.
        for attempt in 0..5 {
            epoch::reclaim(&self.collector);
            if self.fits(need, limit) {
                return Ok(());
            }
            if attempt < 4 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        Err(Error::OutOfMemory {
            in_use: self.in_use(),
            limit: self.config.memory_limit,
        })
    }

    pub fn memory(&self) -> MemoryStats {
        let (cap, res) = alloc::arena()
            .map(|a| {
                let s = a.stats();
                (s.capacity, s.reserved)
            })
            .unwrap_or((0, 0));
        MemoryStats {
            limit: self.config.memory_limit,
            in_use: self.in_use(),
            arena_capacity: cap,
            arena_reserved: res,
        }
    }

    /// Frees garbage whose readers are gone (tests and introspection).
    pub fn reclaim(&self) {
        epoch::reclaim(&self.collector);
    }
}
