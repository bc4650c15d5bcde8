//! A memory table: its definition, row layout, indexes and statistics.

use crate::catalog::{ColumnType, TableDef};
use crate::ids::{RowId, TableId};
use crate::index::{KeyIndex, RowIdIndex};
use crate::row::RowLayout;
use crate::sync::SpinRwLock;
use crate::unload::Residency;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

pub struct Table {
    /// PostgreSQL's relation OID.
    pub id: TableId,
    pub def: TableDef,
    pub layout: RowLayout,
    /// The pseudo-primary key.
    pub(crate) rows: RowIdIndex,
    /// Key indexes. Changed only by index DDL (copy on write); readers clone the
    /// outer `Arc` (inside the engine scope: dropping it may free arena memory).
    indexes: SpinRwLock<Arc<[Arc<KeyIndex>]>>,
    index_generation: AtomicU64,
    next_rowid: AtomicU64,
    /// Committed live rows.
    live_rows: AtomicI64,
    /// For serializable validation (see `txn.rs`): committers writing this table now,
    /// and the newest commit TID that wrote any row / inserted or re-keyed a row.
    pub(crate) writers_in_flight: std::sync::atomic::AtomicU32,
    pub(crate) last_write_tid: AtomicU64,
    pub(crate) last_insert_tid: AtomicU64,
    /// Commits that gave rows of this table keys they did not have (inserts, key
    /// updates), counted once per commit before it releases its key stripes: a
    /// transaction that saw the same count before its first unique check and at its
    /// commit (its stripes held) knows no other row took one of its keys meanwhile
    /// (see `txn::unique`).
    pub(crate) key_commits: AtomicU64,
    /// Bytes of committed row data (payloads and buffer headers).
    data_bytes: AtomicI64,
    /// Older versions kept for snapshots (see [`crate::versions`]), and their bytes.
    versions: AtomicI64,
    version_bytes: AtomicI64,
    /// Access counters (see [`AccessStats`]).
    pub access: Arc<AccessStats>,
    /// Where the rows are (see [`crate::unload`]); fixed for the table object's life
    /// (unloading and loading replace the table).
    pub(crate) residency: Residency,
}

/// Access counters of a table, as PostgreSQL keeps them for heap tables
/// (`pg_stat_user_tables`). Shared by a table and the replacements TRUNCATE and ALTER
/// give it, so they survive both. The glue adds to them once per statement.
#[derive(Debug, Default)]
pub struct AccessStats {
    pub seq_scan: AtomicU64,
    pub seq_tup_read: AtomicU64,
    pub idx_scan: AtomicU64,
    pub idx_tup_fetch: AtomicU64,
    pub n_tup_ins: AtomicU64,
    pub n_tup_upd: AtomicU64,
    pub n_tup_del: AtomicU64,
    /// When the table was last analyzed (the caller's clock; 0: never), and how often.
    pub last_analyze: AtomicI64,
    pub analyze_count: AtomicU64,
    /// Rows inserted, updated, deleted or loaded since the last ANALYZE (automatic
    /// ANALYZE, see [`crate::stats`]), and when an automatic one last started on it.
    pub changed_since_analyze: AtomicU64,
    pub autoanalyze_tried: AtomicI64,
}

/// Figures about one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub rows: i64,
    pub data_bytes: i64,
    pub index_entries: usize,
}

impl Table {
    pub(crate) fn new(id: TableId, def: TableDef) -> Self {
        let layout = RowLayout::new(&def);
        Table {
            id,
            def,
            layout,
            rows: RowIdIndex::new(),
            indexes: SpinRwLock::new(Arc::from(Vec::new())),
            index_generation: AtomicU64::new(0),
            next_rowid: AtomicU64::new(1),
            live_rows: AtomicI64::new(0),
            data_bytes: AtomicI64::new(0),
            versions: AtomicI64::new(0),
            version_bytes: AtomicI64::new(0),
            access: Arc::new(AccessStats::default()),
            writers_in_flight: std::sync::atomic::AtomicU32::new(0),
            last_write_tid: AtomicU64::new(0),
            last_insert_tid: AtomicU64::new(0),
            key_commits: AtomicU64::new(0),
            residency: Residency::Loaded,
        }
    }

    /// Where the table's rows are.
    pub fn residency(&self) -> &Residency {
        &self.residency
    }

    pub(crate) fn next_rowid(&self) -> RowId {
        RowId(self.next_rowid.fetch_add(1, Ordering::Relaxed))
    }

    /// The row id the next insert will get (all row ids in use are below it).
    pub fn peek_next_rowid(&self) -> RowId {
        RowId(self.next_rowid.load(Ordering::Relaxed))
    }

    /// Makes sure new row ids are above `rowid` (recovery).
    pub(crate) fn observe_rowid(&self, rowid: RowId) {
        self.next_rowid
            .fetch_max(rowid.get() + 1, Ordering::Relaxed);
    }

    pub(crate) fn account(&self, rows: i64, bytes: i64) {
        if rows != 0 {
            self.live_rows.fetch_add(rows, Ordering::Relaxed);
        }
        if bytes != 0 {
            self.data_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn account_versions(&self, count: i64, bytes: i64) {
        self.versions.fetch_add(count, Ordering::Relaxed);
        self.version_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Older versions this table keeps for snapshots, and their bytes.
    pub fn versions(&self) -> (i64, i64) {
        (
            self.versions.load(Ordering::Relaxed),
            self.version_bytes.load(Ordering::Relaxed),
        )
    }

    /// The table's key indexes now. Call inside the engine scope.
    pub(crate) fn indexes(&self) -> Arc<[Arc<KeyIndex>]> {
        self.indexes.read().clone()
    }

    /// Replaces the index list (DDL; the caller serialises index DDL).
    pub(crate) fn set_indexes(&self, list: Vec<Arc<KeyIndex>>) {
        let mut l = self.indexes.write();
        *l = Arc::from(list);
        self.index_generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever the index list is replaced (read before the list, a copy of
    /// the list is current while the count is unchanged; see `Txn::with_indexes`).
    pub(crate) fn index_generation(&self) -> u64 {
        self.index_generation.load(Ordering::Acquire)
    }

    /// The definitions of the table's indexes, in private memory.
    pub fn index_defs(&self) -> Vec<crate::index::IndexDef> {
        let _s = crate::scope::enter();
        let list = self.indexes();
        // Copied straight into private memory (reading shared definitions needs no
        // scope; only their copies' allocations follow it).
        crate::scope::outside(|| list.iter().map(|i| i.def.clone()).collect())
    }

    /// The definitions of the indexes a planner of this backend may use: committed
    /// ones, and those `own` says this transaction created.
    pub fn plannable_index_defs(&self, own: impl Fn(u32) -> bool) -> Vec<crate::index::IndexDef> {
        let _s = crate::scope::enter();
        let list = self.indexes();
        crate::scope::outside(|| {
            list.iter()
                .filter(|i| i.is_committed() || own(i.def.id))
                .map(|i| i.def.clone())
                .collect()
        })
    }

    /// Its creating transaction commits: index `id` becomes visible to every
    /// planner (see [`crate::index::KeyIndex::is_committed`]).
    pub fn mark_index_committed(&self, id: u32) {
        let _s = crate::scope::enter();
        if let Some(i) = self.indexes().iter().find(|i| i.def.id == id) {
            i.mark_committed();
        }
    }

    /// Is `f` true of some key column of a unique index (without copying the index
    /// definitions: the per-statement check of UPDATE's lock mode)? `f` must not
    /// allocate through Rust's allocator (it runs inside the engine scope).
    pub fn any_unique_key_column(&self, mut f: impl FnMut(u16) -> bool) -> bool {
        let _s = crate::scope::enter();
        let list = self.indexes();
        let found = list
            .iter()
            .filter(|i| i.def.unique)
            .any(|i| i.def.columns.iter().any(|&c| f(c)));
        drop(list);
        found
    }

    /// Do rows `a` and `b` hold the same value in every column of a unique index? (An
    /// update from one to the other is not a "key update" in PostgreSQL's terms.) The
    /// same bytes, or for `character(n)` the same bytes once trailing blanks are
    /// dropped (rows written by older builds hold them, newer ones do not).
    pub fn unique_keys_equal(&self, a: &[u8], b: &[u8]) -> bool {
        let _s = crate::scope::enter();
        let list = self.indexes();
        let same = list.iter().filter(|i| i.def.unique).all(|i| {
            i.def.columns.iter().all(|&c| {
                let (x, y) = (
                    self.layout.get(a, c as usize),
                    self.layout.get(b, c as usize),
                );
                x == y
                    || matches!(self.def.columns[c as usize].ty, ColumnType::Char(_))
                        && x.map(crate::keys::trim_blanks) == y.map(crate::keys::trim_blanks)
            })
        });
        drop(list);
        same
    }

    /// The column types of index `id`'s key, in key order, if the table has it.
    pub fn index_key_types(&self, id: u32) -> Option<Vec<crate::catalog::ColumnType>> {
        let _s = crate::scope::enter();
        let list = self.indexes();
        let i = list.iter().find(|i| i.def.id == id)?;
        let types = crate::scope::outside(|| i.types.clone());
        Some(types)
    }

    /// Number of entries of index `id`, if the table has it.
    pub fn index_entries(&self, id: u32) -> Option<usize> {
        let _s = crate::scope::enter();
        self.indexes()
            .iter()
            .find(|i| i.def.id == id)
            .map(|i| i.len())
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            rows: self.live_rows.load(Ordering::Relaxed),
            data_bytes: self.data_bytes.load(Ordering::Relaxed),
            index_entries: self.rows.len(),
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the last reference is gone (we are in Drop of the last Arc), so no
        // transaction or scan can reach the records.
        unsafe { self.rows.free_all_records() };
    }
}

/// What a table takes in the engine's memory, by component (`Engine::table_memory`).
/// Block sizes are the arena's (size classes, whole pages); a key index's entries are
/// estimated as the engine accounts them (its skip-list nodes are not measured).
#[derive(Debug, Clone, Default)]
pub struct TableMemory {
    /// Row ids with a record (committed rows, and rows being inserted or deleted).
    pub records: u64,
    /// Bytes of the rows' current versions as packed.
    pub row_data: u64,
    /// The blocks holding them (header and size-class rounding included).
    pub row_buffers: u64,
    /// The records' blocks.
    pub record_blocks: u64,
    /// The row-id index's nodes.
    pub rowid_index: u64,
    /// Older versions kept for snapshots.
    pub old_versions: u64,
    pub indexes: Vec<IndexMemory>,
}

/// One key index's part of [`TableMemory`].
#[derive(Debug, Clone, Default)]
pub struct IndexMemory {
    pub name: String,
    pub entries: u64,
    /// A B+tree's nodes, or (`estimated`) a skip list's entries times the expected
    /// bytes of an entry's node and key.
    pub entry_bytes: u64,
    pub estimated: bool,
    /// The point cache's slot array (unique indexes).
    pub point_cache: u64,
}
