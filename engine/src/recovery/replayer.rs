//! Applying redo records to an engine during recovery: [`Replayer`] is the one way in
//! (encoded records, as read from the log or a checkpoint).
//!
//! Replay is last-writer-wins by commit TID per row, so applying a record twice, or a
//! record older than what a row already holds (a fuzzy checkpoint taken while writers
//! ran), changes nothing. Records of one row must still arrive in TID order when one
//! of them is a delete (a delete leaves no version behind to compare with).

use crate::btree::Probe;
use crate::engine::{Engine, Need, TableHandle};
use crate::epoch;
use crate::error::{Error, Result};
use crate::garbage::{Garbage, Retired, RECORD_BYTES};
use crate::ids::{RowId, TableId, Tid};
use crate::index::{IndexDef, KeyIndex};
use crate::record::{self, Record, RecordPtr, TID_MASK};
use crate::redo::payload::Emptying;
use crate::redo::payload::{
    commit_emptied, commit_tid, decode_rows, LogRecord, RowRef, COMMIT, COMMIT_PART, XACT,
};
use crate::scope;
use crate::threads::parallel;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Engine {
    /// Applies one decoded redo record (see [`Replayer::apply`]). Rows of tables the
    /// engine does not have (dropped later in the log) are skipped.
    fn apply_record(
        &'static self,
        rec: &LogRecord,
        threads: usize,
        spill_dir: Option<&Path>,
    ) -> Result<()> {
        match rec {
            LogRecord::CreateTable { table, def } => {
                if self.table(*table).is_none() {
                    self.create_table_inner(*table, def.clone(), false)?;
                }
            }
            LogRecord::DropTable { table } => {
                self.drop_table_inner(*table);
            }
            LogRecord::CreateIndex { table, def } => {
                self.observe_index_id(def.id);
                if let Some(t) = self.table(*table) {
                    if t.index_entries(def.id).is_none() {
                        self.build_index_parallel(&t, def.clone(), threads)?;
                    }
                }
            }
            LogRecord::DropIndex { table, id } => {
                self.drop_index_logged(*table, *id, false)?;
            }
            LogRecord::Commit {
                tid,
                emptied,
                writes,
            } => {
                self.observe_tid(*tid);
                for e in emptied {
                    self.empty_now(e, spill_dir)?;
                }
                for w in writes {
                    if let Some(t) = self.table(w.table) {
                        self.apply_row(&t, w.rowid, *tid, w.after.as_deref())?;
                    }
                }
            }
            // Handled by `Replayer::apply` (it decides whether the commit applies).
            LogRecord::Xact { .. } => {}
            LogRecord::Residency { table, residency } => {
                let e = Emptying::Reside {
                    table: *table,
                    to: residency.clone(),
                    from: None,
                };
                self.empty_now(&e, None)?;
            }
            LogRecord::Rows { table, rows } => {
                if let Some(t) = self.table(*table) {
                    for (rowid, tid, bytes) in rows {
                        self.observe_tid(*tid);
                        self.apply_row(&t, *rowid, *tid, Some(bytes))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Links the entries of the committed rows of `t` into `index` (empty; `t` is
    /// one nobody else writes: replay, or a load's twin), by `threads` threads over
    /// ranges of row ids for a skip list; a B+tree takes one writer at a time: one
    /// thread, with the keys sorted first (appended in order, they fill every leaf,
    /// whatever order the rows are in).
    pub(crate) fn fill_index(
        &'static self,
        t: &TableHandle,
        index: &KeyIndex,
        threads: usize,
    ) -> Result<()> {
        // Row ids are handed out densely from 1, so equal ranges hold similar counts.
        // A B+tree takes one writer at a time: one thread, with the keys sorted first
        // (appended in order, they fill every leaf).
        let tree = index.is_btree();
        let threads = if tree { 1 } else { threads };
        let end = t.peek_next_rowid().get();
        let per = end.div_ceil(threads.max(1) as u64).max(1);
        let ranges: Vec<(u64, u64)> = (0..end)
            .step_by(per as usize)
            .map(|lo| (lo, (lo + per).min(end)))
            .collect();
        let build = |&(lo, hi): &(u64, u64)| -> Result<()> {
            let mut bytes = 0isize;
            let res = epoch::with_guard(&self.collector, |g| {
                let mut key = Vec::new();
                let mut sorted: Vec<(Probe, crate::record::RecordPtr)> = Vec::new();
                let mut res = Ok(());
                t.rows
                    .scan_after(lo.checked_sub(1).map(RowId), g, |rowid, rec| {
                        if rowid.get() >= hi {
                            return false;
                        }
                        // SAFETY: reached through the row index under guard `g`.
                        let s = unsafe { rec.get() }.read(g);
                        if let (false, Some(d)) = (s.absent(), s.data) {
                            if let Err(e) = index.key_of(&t.layout, d, &mut key) {
                                res = Err(e);
                                return false;
                            }
                            bytes += index.entry_bytes(key.len()) as isize;
                            if tree {
                                let e = Probe::with_suffix(&key, rowid.get());
                                scope::outside(|| sorted.push((e, rec)));
                            } else {
                                index.insert(&key, rowid, rec, g);
                            }
                        }
                        true
                    });
                // (Records stay alive: the guard is held, and nothing else writes
                // during replay.)
                scope::outside(|| sorted.sort_unstable_by_key(|e| e.0));
                let mut buf = [0u8; crate::btree::MAX_WORDS * 8];
                for (e, rec) in &sorted {
                    let b = e.bytes(&mut buf);
                    let (key, rowid) = b.split_at(b.len() - crate::index::ROWID_SUFFIX);
                    let rowid = RowId(u64::from_be_bytes(rowid.try_into().expect("suffix")));
                    index.insert(key, rowid, *rec, g);
                }
                scope::outside(|| drop(sorted));
                res
            });
            self.account(bytes);
            res
        };
        parallel(ranges, build)
    }

    /// Builds index `def` over the committed rows of `t` and publishes it, unlogged,
    /// with `threads` threads, each over one range of row ids. Uniqueness is not
    /// checked: during replay it may hold only at the end (a fuzzy checkpoint can hold
    /// two rows with one key, one of them changed later in the log).
    fn build_index_parallel(
        &'static self,
        t: &TableHandle,
        def: IndexDef,
        threads: usize,
    ) -> Result<()> {
        let index = {
            let _s = scope::enter();
            let shared = def.clone();
            scope::outside(|| drop(def));
            Arc::new(KeyIndex::new(shared, &t.def, &self.collector))
        };
        let res = self.fill_index(t, &index, threads);
        let _s = scope::enter();
        match res {
            Ok(()) => self.publish_index(t, index, false),
            Err(e) => {
                drop(index);
                Err(e)
            }
        }
    }

    /// Installs version `tid` of row `rowid` (None = deleted) unless the row already
    /// holds a version at least as new.
    fn apply_row(
        &'static self,
        t: &TableHandle,
        rowid: RowId,
        tid: Tid,
        after: Option<&[u8]>,
    ) -> Result<()> {
        let row = RowRef {
            table: t.id,
            rowid,
            tid,
            after,
        };
        self.apply_rows_part(std::slice::from_ref(&row))
    }

    /// Applies `rows` (pairwise distinct, all of table `t`) to `t`, a table nobody
    /// else can reach (a load's twin), by `threads` threads; `replay`: a load the log
    /// replays (see `apply_rows_into`).
    pub(crate) fn fill_rows(
        &'static self,
        t: &TableHandle,
        rows: &[RowRef<'_>],
        threads: usize,
        replay: bool,
    ) -> Result<()> {
        if let Some(max) = rows.iter().map(|r| r.tid).max() {
            self.observe_tid(max);
        }
        if threads < 2 || rows.len() < PARALLEL_MIN_ROWS {
            return self.apply_rows_into(rows, Some(t), replay);
        }
        let per = rows.len().div_ceil(threads);
        parallel(rows.chunks(per).collect(), |part| {
            self.apply_rows_into(part, Some(t), replay)
        })
    }

    /// Applies `rows` in order to the catalog's tables (see `apply_rows_into`).
    fn apply_rows_part(&'static self, rows: &[RowRef<'_>]) -> Result<()> {
        self.apply_rows_into(rows, None, true)
    }

    /// Applies `rows` in order, CHUNK_ROWS at a time: one memory check, one epoch pin
    /// and one update of the shared counters per chunk. Rows go to table `into` if
    /// given (rows of other tables are skipped), else to the catalog's tables (rows of
    /// tables the engine does not have are skipped).
    fn apply_rows_into(
        &'static self,
        rows: &[RowRef<'_>],
        into: Option<&TableHandle>,
        replay: bool,
    ) -> Result<()> {
        let _s = scope::enter();
        let mut cur: Option<Current> = None;
        let mut keys = (Vec::new(), Vec::new());
        let mut res = Ok(());
        for chunk in rows.chunks(CHUNK_ROWS) {
            let mut need = Need::default();
            for r in chunk {
                if let Some(b) = r.after {
                    need = need + Need::of(record::rowbuf_size(b.len())) + Need::of(RECORD_BYTES);
                }
            }
            // Replayed rows may use part of the headroom (see
            // `check_memory_for_replay`); a table a user loads brings new data. A
            // chunk of deletes needs nothing.
            res = if need.total() == 0 {
                Ok(())
            } else if replay {
                self.check_memory_for_replay(need)
            } else {
                self.check_memory(need)
            };
            if res.is_err() {
                break;
            }
            let mut engine_bytes = 0isize;
            res = epoch::with_guard(&self.collector, |g| {
                let mut garbage = Garbage::default();
                let mut res = Ok(());
                for row in chunk {
                    if cur.as_ref().map(|c| c.id) != Some(row.table) {
                        if let Some(c) = cur.take() {
                            c.flush();
                        }
                        cur = Some(match into {
                            Some(t) if t.id == row.table => Current::of_handle(t),
                            Some(_) => Current::none(row.table),
                            None => Current::of(self, row.table),
                        });
                    }
                    let c = cur.as_mut().expect("set above");
                    if c.table.is_none() {
                        continue;
                    }
                    res = self.apply_row_in(c, row, g, &mut keys, &mut garbage, &mut engine_bytes);
                    if res.is_err() {
                        break;
                    }
                }
                garbage.retire(self, g);
                res
            });
            self.account(engine_bytes);
            if res.is_err() {
                break;
            }
        }
        if let Some(c) = cur.take() {
            c.flush();
        }
        res
    }

    fn apply_row_in(
        &'static self,
        c: &mut Current,
        row: &RowRef<'_>,
        g: &crossbeam_epoch::Guard,
        (ko, kn): &mut (Vec<u8>, Vec<u8>),
        garbage: &mut Garbage,
        engine_bytes: &mut isize,
    ) -> Result<()> {
        let t = c.table.as_ref().expect("caller checked");
        let (rowid, tid, after) = (row.rowid, row.tid, row.after);
        if let Some(bytes) = after {
            if !t.layout.check(bytes) {
                return Err(Error::Corrupt(format!(
                    "row {rowid} of table {} does not match the table's columns",
                    t.id
                )));
            }
        }
        c.max_rowid = c.max_rowid.max(rowid);
        let idx = &c.indexes;
        let existing = match after {
            None => match t.rows.get(rowid, g) {
                Some(r) => r,
                None => return Ok(()),
            },
            Some(bytes) => {
                let (r, made) = t.rows.get_or_insert_with(
                    rowid,
                    || {
                        let data = record::rowbuf_new(bytes);
                        RecordPtr(Box::into_raw(Record::new_present(tid, data)))
                    },
                    g,
                );
                match made {
                    Some(m) if m == r => {
                        // A new row: link its index entries.
                        let size = record::rowbuf_size(bytes.len());
                        for index in idx.iter() {
                            index.key_of(&t.layout, bytes, kn)?;
                            index.insert(kn, rowid, r, g);
                            *engine_bytes += index.entry_bytes(kn.len()) as isize;
                        }
                        c.rows += 1;
                        c.data_bytes += size as i64;
                        *engine_bytes += (size + RECORD_BYTES) as isize;
                        return Ok(());
                    }
                    Some(m) => {
                        // SAFETY: `m` was never linked; nobody else can reach it.
                        unsafe { record::record_free(m.0) };
                        r
                    }
                    None => r,
                }
            }
        };
        let r = existing;
        // SAFETY: reached through the index under guard `g`.
        let rec = unsafe { r.get() };
        let old_v = rec.lock();
        if old_v & TID_MASK >= tid.get() {
            rec.unlock();
            return Ok(());
        }
        let new = after
            .map(record::rowbuf_new)
            .unwrap_or(std::ptr::null_mut());
        let old_data = rec.data_ptr();
        let mut stale = Vec::new();
        for (n, index) in idx.iter().enumerate() {
            // SAFETY: the committed buffer is stable while we hold the lock.
            let old_row = (!old_data.is_null()).then(|| unsafe { record::rowbuf_slice(old_data) });
            if let Some(o) = old_row {
                index.key_of(&t.layout, o, ko)?;
            }
            if let Some(a) = after {
                index.key_of(&t.layout, a, kn)?;
                if old_row.is_none() || kn != ko {
                    index.insert(kn, rowid, r, g);
                    *engine_bytes += index.entry_bytes(kn.len()) as isize;
                }
            }
            if old_row.is_some() && (after.is_none() || kn != ko) {
                stale.push((n, std::mem::take(ko)));
            }
        }
        let old = rec.install_and_unlock(new, tid, None);
        for (n, key) in stale {
            idx[n].remove(&key, rowid, g);
            *engine_bytes -= idx[n].entry_bytes(key.len()) as isize;
        }
        let size = |p: *mut u8| {
            if p.is_null() {
                0
            } else {
                // SAFETY: live buffer (new, or old not yet retired).
                record::rowbuf_size(unsafe { record::rowbuf_slice(p) }.len()) as i64
            }
        };
        if new.is_null() {
            c.rows -= 1;
        }
        c.data_bytes += size(new) - size(old);
        *engine_bytes += size(new) as isize;
        garbage.push(Retired::Buffer(old));
        if new.is_null() {
            t.rows.remove(rowid, g);
            garbage.push(Retired::Record(r.0));
        }
        Ok(())
    }
}

/// Rows applied per epoch pin, memory check and counter update.
const CHUNK_ROWS: usize = 256;
/// Row batches at least this large are split between the replayer's threads.
const PARALLEL_MIN_ROWS: usize = 8192;
/// Rows of small commits collected before they are applied together.
const SMALL_BATCH_ROWS: usize = 32 * 1024;

/// The table a run of rows belongs to, and what applying them changed in its counters
/// (published by `flush`, once per run instead of once per row).
struct Current {
    id: TableId,
    table: Option<TableHandle>,
    indexes: Arc<[Arc<KeyIndex>]>,
    max_rowid: RowId,
    rows: i64,
    data_bytes: i64,
}

impl Current {
    fn of(engine: &Engine, id: TableId) -> Current {
        let table = engine.table(id);
        let indexes = match &table {
            Some(t) => t.indexes(),
            None => Arc::from(Vec::new()),
        };
        Current {
            id,
            table,
            indexes,
            max_rowid: RowId(0),
            rows: 0,
            data_bytes: 0,
        }
    }

    /// Table `t` itself (inside the engine scope).
    fn of_handle(t: &TableHandle) -> Current {
        Current {
            id: t.id,
            table: Some(TableHandle::of(t.arc().clone())),
            indexes: t.indexes(),
            max_rowid: RowId(0),
            rows: 0,
            data_bytes: 0,
        }
    }

    /// No table: rows of `id` are skipped.
    fn none(id: TableId) -> Current {
        Current {
            id,
            table: None,
            indexes: Arc::from(Vec::new()),
            max_rowid: RowId(0),
            rows: 0,
            data_bytes: 0,
        }
    }

    fn flush(self) {
        if let Some(t) = &self.table {
            if self.max_rowid > RowId(0) {
                t.observe_rowid(self.max_rowid);
            }
            t.account(self.rows, self.data_bytes);
        }
    }
}

/// Applies the records of a recovery (checkpoint frames, then log records) to an
/// engine, faster than [`Engine::replay`] one record at a time:
/// * rows are applied straight from the payload (no copy), and batches of at least
///   `PARALLEL_MIN_ROWS` rows are split between `threads` threads (the rows of one
///   record are distinct, and records still apply in order); indexes are maintained
///   as rows arrive (cheaper than building them afterwards: the row is in the cache);
/// * an index created over rows already there is built by `threads` threads;
/// * small commits are collected and applied together (by several threads when no row
///   appears twice among them);
/// * commit parts wait for their commit record;
/// * a commit named by an xact record applies only if its PostgreSQL transaction
///   committed (the commit oracle says so).
///
/// Nothing else may use the engine meanwhile (recovery runs before anybody can).
/// A commit part's payload kept until its commit record arrives.
enum PartBytes {
    Copied(Vec<u8>),
    /// A range of a segment's bytes as read (no copy; see
    /// [`crate::redo::segment::recover_frames`]).
    InSegment(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl std::ops::Deref for PartBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PartBytes::Copied(v) => v,
            PartBytes::InSegment(d, r) => &d[r.clone()],
        }
    }
}

pub struct Replayer {
    engine: &'static Engine,
    threads: usize,
    /// Commit parts waiting for their commit record (copies, or ranges of the
    /// segments' bytes read: they may span segments), and their TID.
    parts: Vec<PartBytes>,
    parts_tid: Tid,
    /// Small commit records waiting to be applied together: their payloads, one after
    /// the other (copies), where each ends, and how many rows they hold. A row that
    /// does not match its table is reported at the record whose arrival applied them.
    small: Vec<u8>,
    small_ends: Vec<usize>,
    small_rows: usize,
    /// Parts dropped because no commit record followed them.
    incomplete_commits: u64,
    /// The xact record just read: the TID and PostgreSQL xid of the commit after it.
    xact: Option<(Tid, u32)>,
    /// Did PostgreSQL transaction `xid` commit?
    committed: fn(u32) -> bool,
    /// Commits skipped because their PostgreSQL transaction did not commit.
    aborted_commits: u64,
    /// Where the spill files are that replayed loads read (see `crate::unload`).
    spill_dir: Option<PathBuf>,
}

impl Replayer {
    pub fn new(engine: &'static Engine, threads: usize) -> Replayer {
        Replayer {
            engine,
            threads: threads.max(1),
            parts: Vec::new(),
            parts_tid: Tid::NONE,
            small: Vec::new(),
            small_ends: Vec::new(),
            small_rows: 0,
            incomplete_commits: 0,
            xact: None,
            committed: |_| true,
            aborted_commits: 0,
            spill_dir: None,
        }
    }

    /// Sets the directory of spill files (that replayed loads read again).
    pub fn set_spill_dir(&mut self, dir: PathBuf) {
        self.spill_dir = Some(dir);
    }

    /// Sets what tells whether a PostgreSQL transaction committed (PostgreSQL's commit
    /// log); without one, every commit applies.
    pub fn set_commit_oracle(&mut self, committed: fn(u32) -> bool) {
        self.committed = committed;
    }

    /// Commits skipped so far because their PostgreSQL transaction did not commit.
    pub fn aborted_commits(&self) -> u64 {
        self.aborted_commits
    }

    /// Does the commit with TID `tid` (its record just read) belong to a PostgreSQL
    /// transaction that did not commit? Consumes the xact record before it.
    fn aborted(&mut self, tid: Tid) -> bool {
        match self.xact.take() {
            Some((t, xid)) if t == tid && !(self.committed)(xid) => {
                self.aborted_commits += 1;
                true
            }
            _ => false,
        }
    }

    /// Applies one encoded record. Commit parts wait for their commit record (see
    /// `redo::payload`): then all of them apply at once; parts followed by anything
    /// else are dropped.
    pub fn apply(&mut self, payload: &[u8]) -> Result<()> {
        self.apply_keeping(payload, || PartBytes::Copied(payload.to_vec()))
    }

    /// [`Replayer::apply`] of the payload at `range` of a segment's bytes `data`: a
    /// commit part waits for its commit record without a copy.
    pub fn apply_in_segment(
        &mut self,
        data: &Arc<Vec<u8>>,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        let payload = &data[range.clone()];
        self.apply_keeping(payload, || PartBytes::InSegment(data.clone(), range))
    }

    /// [`Replayer::apply`]; `keep` makes what a commit part keeps of `payload`.
    fn apply_keeping(&mut self, payload: &[u8], keep: impl FnOnce() -> PartBytes) -> Result<()> {
        let corrupt = |e: crate::redo::payload::DecodeError| Error::Corrupt(e.to_string());
        let kind = payload.first().copied();
        let tid = commit_tid(payload);
        if let Some((t, xid)) = crate::redo::payload::xact_of(payload) {
            self.engine.observe_tid(t);
            self.xact = Some((t, xid));
            return Ok(());
        }
        if kind == Some(XACT) {
            return Err(Error::Corrupt("malformed xact record".into()));
        }
        if let Some(t) = tid {
            // Also for parts that will be dropped, and commits without rows: their TID
            // was handed out, and must never be handed out again (a later commit with
            // the same TID would look like the missing end of those parts).
            self.engine.observe_tid(t);
        }
        if kind == Some(COMMIT) && self.aborted(tid.expect("a commit has a TID")) {
            // Checked like any record, then dropped with its parts.
            decode_rows(payload).map_err(corrupt)?;
            self.parts.clear();
            return Ok(());
        }
        if kind == Some(COMMIT_PART) {
            decode_rows(payload).map_err(corrupt)?;
            self.flush_small()?;
            let tid = tid.expect("decoded above");
            if !self.parts.is_empty() && self.parts_tid != tid {
                self.drop_parts();
            }
            self.parts_tid = tid;
            self.parts.push(keep());
            return Ok(());
        }
        if !self.parts.is_empty() {
            if kind == Some(COMMIT) && tid == Some(self.parts_tid) {
                let parts = std::mem::take(&mut self.parts);
                // Sized from the write counts of the part headers, at most one per
                // 17 bytes (the smallest write; the decoding below checks the counts).
                let (writes, bytes) = parts.iter().map(|p| &p[..]).chain([payload]).fold(
                    (0usize, 0usize),
                    |(w, b), p| {
                        let n = crate::redo::payload::commit_writes(p).unwrap_or(0) as usize;
                        (w + n, b + p.len())
                    },
                );
                let mut rows = Vec::with_capacity(writes.min(bytes / 17));
                self.flush_small()?;
                for p in parts.iter().map(|p| &p[..]).chain([payload]) {
                    for e in commit_emptied(p).map_err(corrupt)? {
                        self.engine.empty_now(&e, self.spill_dir.as_deref())?;
                    }
                }
                for p in parts.iter().map(|p| &p[..]).chain([payload]) {
                    rows.extend(decode_rows(p).map_err(corrupt)?.expect("commit rows"));
                }
                return self.apply_rows(&rows);
            }
            self.drop_parts();
        }
        if kind == Some(COMMIT) {
            let emptied = commit_emptied(payload).map_err(corrupt)?;
            if !emptied.is_empty() {
                // In log order: what came before is applied, the table emptied (and
                // redefined), then this commit's rows follow.
                self.flush_small()?;
                for e in &emptied {
                    self.engine.empty_now(e, self.spill_dir.as_deref())?;
                }
            }
        }
        match decode_rows(payload).map_err(corrupt)? {
            Some(rows) if kind == Some(COMMIT) && rows.len() < PARALLEL_MIN_ROWS => {
                // A small commit waits to be applied with the next ones.
                self.small.extend_from_slice(payload);
                self.small_ends.push(self.small.len());
                self.small_rows += rows.len();
                if self.small_rows >= SMALL_BATCH_ROWS {
                    self.flush_small()?;
                }
                Ok(())
            }
            Some(rows) => {
                self.flush_small()?;
                self.apply_rows(&rows)
            }
            None => {
                self.flush_small()?;
                self.engine.apply_record(
                    &LogRecord::decode(payload).map_err(corrupt)?,
                    self.threads,
                    self.spill_dir.as_deref(),
                )
            }
        }
    }

    /// Applies the small commits waiting, in log order: by several threads if no row
    /// appears twice among them (then order does not matter: replay is per row), else
    /// by this thread in order.
    fn flush_small(&mut self) -> Result<()> {
        if self.small_ends.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.small);
        let ends = std::mem::take(&mut self.small_ends);
        let mut rows = Vec::with_capacity(self.small_rows);
        self.small_rows = 0;
        let mut start = 0;
        for end in ends {
            let part = decode_rows(&buf[start..end])
                .map_err(|e| Error::Corrupt(e.to_string()))?
                .expect("a commit");
            rows.extend(part);
            start = end;
        }
        let distinct = self.threads > 1 && rows.len() >= PARALLEL_MIN_ROWS && {
            let mut seen = std::collections::HashSet::with_capacity(rows.len());
            rows.iter().all(|r| seen.insert((r.table, r.rowid)))
        };
        if distinct {
            self.apply_rows(&rows)
        } else {
            self.engine.apply_rows_part(&rows)
        }
    }

    /// Applies rows of one record, or of several records whose rows are pairwise
    /// distinct (the frames of one checkpoint).
    pub fn apply_distinct_rows(&mut self, rows: &[RowRef<'_>]) -> Result<()> {
        self.flush_small()?;
        self.apply_rows(rows)
    }

    fn apply_rows(&mut self, rows: &[RowRef<'_>]) -> Result<()> {
        let e = self.engine;
        if let Some(max) = rows.iter().map(|r| r.tid).max() {
            e.observe_tid(max);
        }
        if self.threads < 2 || rows.len() < PARALLEL_MIN_ROWS {
            return e.apply_rows_part(rows);
        }
        let per = rows.len().div_ceil(self.threads);
        parallel(rows.chunks(per).collect(), |part| e.apply_rows_part(part))
    }

    fn drop_parts(&mut self) {
        if !self.parts.is_empty() {
            self.incomplete_commits += 1;
            self.parts.clear();
        }
    }

    /// Ends the stream: drops parts still waiting (the log ended before their commit
    /// record). Returns how many incomplete big commits were dropped.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_small()?;
        self.drop_parts();
        Ok(self.incomplete_commits)
    }
}
