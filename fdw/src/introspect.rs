//! SQL functions that show the engine's state.
//!
//! Privileges: `tables()` and `indexes()` list the memory tables of the current
//! database on which the caller holds some privilege (as `information_schema` does);
//! `memory()`, `snapshots()`, `redo_segments()` and `redo_stats()` show server-wide
//! figures without table names or data; `checkpoint()` is an action: superusers and members of
//! `pg_checkpoint` only, unless granted (as for PostgreSQL's `CHECKPOINT`).

use crate::shmem::engine;
use memfdw_engine::TableHandle;
use pgrx::prelude::*;

/// May the current user see that memory table `t` exists: is it in the current
/// database, and does the user hold some privilege on it?
fn visible(t: &TableHandle, relid: pg_sys::Oid) -> bool {
    // SAFETY: reading this backend's database id; catalog lookups.
    unsafe {
        t.id.database == crate::handler::current_database()
            && !pg_sys::get_rel_name(relid).is_null()
            && pg_sys::pg_class_aclcheck(
                relid,
                pg_sys::GetUserId(),
                pg_sys::ACL_ALL_RIGHTS_RELATION as _,
            ) == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// The memory tables the current user may see (see [`visible`]), with their relation.
fn visible_tables() -> Vec<(pg_sys::Oid, TableHandle)> {
    let e = engine();
    e.table_ids()
        .into_iter()
        .filter_map(|id| {
            let t = e.table(id)?;
            let relid = pg_sys::Oid::from(id.relation);
            visible(&t, relid).then_some((relid, t))
        })
        .collect()
}

/// Every memory table the engine holds: relation, name, committed rows, bytes of row
/// data in memory, state (`loaded`, `spilled` or `discarded`, see `memfdw.unload`)
/// and the bytes of its spill file.
#[pg_extern]
fn tables() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(table_name, String),
        name!(rows, i64),
        name!(data_bytes, i64),
        name!(state, String),
        name!(spill_bytes, Option<i64>),
    ),
> {
    let rows: Vec<_> = visible_tables()
        .into_iter()
        .map(|(relid, t)| {
            let s = t.stats();
            // The current name (the engine keeps the one given at creation).
            let r = t.residency();
            (
                relid,
                crate::types::relation_name(relid),
                s.rows,
                s.data_bytes,
                r.state().to_owned(),
                r.spill_file().map(|f| f.bytes as i64),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// What each memory table takes in memory, by component, one row per component:
/// row data, the blocks holding it, records, the row-id index, old versions kept for
/// snapshots, and per key index its entries (estimated) and its point cache; with
/// bytes per record. Walks every row and index entry (seconds for tens of millions):
/// for introspection, not monitoring loops.
#[pg_extern]
fn table_memory() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(table_name, String),
        name!(component, String),
        name!(bytes, i64),
        name!(bytes_per_row, Option<f64>),
    ),
> {
    let e = engine();
    let mut out = Vec::new();
    for (relid, t) in visible_tables() {
        let Some(m) = e.table_memory(t.id) else {
            continue;
        };
        let name = crate::types::relation_name(relid);
        let per_row = |b: u64| (m.records > 0).then(|| b as f64 / m.records as f64);
        let mut push = |component: String, b: u64| {
            out.push((relid, name.clone(), component, b as i64, per_row(b)));
        };
        push("row data".into(), m.row_data);
        push(
            "row buffers (blocks holding the row data)".into(),
            m.row_buffers,
        );
        push("records".into(), m.record_blocks);
        push("row-id index".into(), m.rowid_index);
        push("old versions".into(), m.old_versions);
        for ix in &m.indexes {
            let kind = if ix.estimated {
                "skip list, estimated"
            } else {
                "B+tree nodes"
            };
            push(format!("index {} ({kind})", ix.name), ix.entry_bytes);
            if ix.point_cache > 0 {
                push(format!("index {} point cache", ix.name), ix.point_cache);
            }
        }
    }
    TableIterator::new(out)
}

/// What the last ANALYZE found in each key index: for each key prefix (the first 1,
/// 2, ... key columns) its columns and distinct values (estimated, within about 1%),
/// with the rows read and when. The planner uses them to estimate index scans with
/// equality on a key prefix. One row per index and prefix; none for an index no
/// ANALYZE has read yet.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn index_stats() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(table_name, String),
        name!(index_name, String),
        name!(prefix_columns, i32),
        name!(columns, String),
        name!(n_distinct, i64),
        name!(rows, i64),
        name!(analyzed_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    let mut out = Vec::new();
    for (relid, t) in visible_tables() {
        let table_name = crate::types::relation_name(relid);
        for def in t.index_defs() {
            let Some(st) = t.index_stats(def.id) else {
                continue;
            };
            let at = pgrx::datum::TimestampWithTimeZone::try_from(st.analyzed_at).ok();
            let names: Vec<String> = def
                .columns
                .iter()
                .map(|&c| crate::types::column_name(relid, c))
                .collect();
            for (k, &d) in st.distinct.iter().enumerate() {
                out.push((
                    relid,
                    table_name.clone(),
                    def.name.clone(),
                    k as i32 + 1,
                    names[..=k].join(", "),
                    d as i64,
                    st.rows as i64,
                    at,
                ));
            }
        }
    }
    TableIterator::new(out)
}

/// Access statistics of the memory tables, with the columns of PostgreSQL's
/// `pg_stat_user_tables` that apply (foreign tables have none there): scans and rows
/// read by full and by index scans, rows inserted, updated and deleted (also by
/// statements that later rolled back, as PostgreSQL counts them), live rows, and the
/// last ANALYZE, and the rows changed since it (which start automatic ANALYZE, see
/// `autoanalyze.rs`). Counters start at zero when the server starts; they survive TRUNCATE
/// and ALTER. Also as the view `memfdw.stat_user_tables`.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn stat_user_tables() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(schemaname, String),
        name!(relname, String),
        name!(seq_scan, i64),
        name!(seq_tup_read, i64),
        name!(idx_scan, i64),
        name!(idx_tup_fetch, i64),
        name!(n_tup_ins, i64),
        name!(n_tup_upd, i64),
        name!(n_tup_del, i64),
        name!(n_live_tup, i64),
        name!(last_analyze, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(analyze_count, i64),
        name!(n_mod_since_analyze, i64),
    ),
> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut rows: Vec<_> = visible_tables()
        .into_iter()
        .map(|(relid, t)| {
            let a = &t.access;
            let n = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed) as i64;
            let analyzed = a.last_analyze.load(Relaxed);
            // SAFETY: catalog lookups of a visible relation.
            let schema = unsafe {
                let p = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            (
                relid,
                schema,
                crate::types::relation_name(relid),
                n(&a.seq_scan),
                n(&a.seq_tup_read),
                n(&a.idx_scan),
                n(&a.idx_tup_fetch),
                n(&a.n_tup_ins),
                n(&a.n_tup_upd),
                n(&a.n_tup_del),
                t.stats().rows,
                (analyzed != 0)
                    .then(|| pgrx::datum::TimestampWithTimeZone::try_from(analyzed).ok())
                    .flatten(),
                n(&a.analyze_count),
                n(&a.changed_since_analyze),
            )
        })
        .collect();
    rows.sort_by(|a, b| (a.1.as_str(), a.2.as_str()).cmp(&(b.1.as_str(), b.2.as_str())));
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE VIEW memfdw.stat_user_tables AS SELECT * FROM memfdw.stat_user_tables();
GRANT SELECT ON memfdw.stat_user_tables TO PUBLIC;
"#,
    name = "stat_user_tables_view",
    requires = [stat_user_tables],
);

/// The engine's memory: the limit for data, bytes in use, and the arena's size and
/// high-water mark.
#[pg_extern]
fn memory() -> TableIterator<
    'static,
    (
        name!(limit_bytes, i64),
        name!(in_use_bytes, i64),
        name!(arena_bytes, i64),
        name!(arena_reserved_bytes, i64),
    ),
> {
    // Garbage whose readers are gone (a table just dropped, truncated or unloaded)
    // counts as free, as it is for the next allocation.
    engine().reclaim();
    let m = engine().memory();
    TableIterator::once((
        m.limit as i64,
        m.in_use as i64,
        m.arena_capacity as i64,
        m.arena_reserved as i64,
    ))
}

/// Older row versions kept for snapshots: the oldest registered snapshot (its TID
/// and the virtual transaction id holding it, as in `pg_locks.virtualtransaction`),
/// the versions kept and their bytes, and the commits whose cleanup waits for that
/// snapshot to go. A long-running reader shows here; it delays reclamation but never
/// blocks writers.
#[pg_extern]
#[allow(clippy::type_complexity)]
fn snapshots() -> TableIterator<
    'static,
    (
        name!(oldest_snapshot, Option<i64>),
        name!(oldest_holder, Option<String>),
        name!(versions, i64),
        name!(version_bytes, i64),
        name!(queued_commits, i64),
    ),
> {
    let s = engine().version_stats();
    TableIterator::once((
        s.oldest.map(|o| o.tid.get() as i64),
        s.oldest.map(|o| {
            let (backend, lxid, _) = memfdw_engine::rowlock::unpack_tag(o.holder);
            format!("{backend}/{lxid}")
        }),
        s.versions,
        s.bytes,
        s.queued as i64,
    ))
}

/// Takes a checkpoint now: writes every table to `checkpoint` in the log directory and
/// deletes the log segments it covers. Returns what it wrote.
#[pg_extern]
fn checkpoint() -> TableIterator<
    'static,
    (
        name!(start_lsn, String),
        name!(tables, i64),
        name!(rows, i64),
        name!(bytes, i64),
        name!(segments_removed, i64),
        name!(seconds, f64),
    ),
> {
    let e = engine();
    match crate::progress::write_checkpoint(e, crate::shmem::log()) {
        Ok(i) => TableIterator::once((
            format!("{:X}", i.start_lsn),
            i.tables as i64,
            i.rows as i64,
            i.bytes as i64,
            i.segments_removed as i64,
            i.seconds,
        )),
        Err(err) => {
            let code = match err {
                memfdw_engine::redo::checkpoint::CheckpointError::Busy => {
                    PgSqlErrorCode::ERRCODE_OBJECT_IN_USE
                }
                _ => PgSqlErrorCode::ERRCODE_IO_ERROR,
            };
            ereport!(ERROR, code, format!("memfdw: checkpoint failed: {err}"));
        }
    }
}

/// The redo log's segments in LSN order: name, size, whether it is the growing one,
/// and the LSN it starts at.
#[pg_extern]
fn redo_segments() -> TableIterator<
    'static,
    (
        name!(segment, String),
        name!(bytes, i64),
        name!(growing, bool),
        name!(start_lsn, String),
    ),
> {
    engine();
    let dir = crate::shmem::log().directory().to_owned();
    let segs = memfdw_engine::redo::files::segments(&dir).unwrap_or_default();
    let last = segs.len().saturating_sub(1);
    let rows: Vec<_> = segs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let len = std::fs::metadata(std::path::Path::new(&dir).join(&s))
                .map(|m| m.len() as i64)
                .unwrap_or(0);
            let start = memfdw_engine::redo::files::parse_segment_name(&s).unwrap_or_default();
            (s, len, i == last, format!("{start:X}"))
        })
        .collect();
    TableIterator::new(rows)
}

/// The redo log's activity since the server started: LSNs, records appended, syncs
/// (so syncs per commit can be read off), bytes since the last checkpoint, the
/// last checkpoint taken since the start (LSN, time as Unix epoch, size, duration),
/// and the committers' waits for a sync that ended by their 20 ms timeout instead of
/// a wake-up (a sync slower than that, or a lost wake-up).
#[allow(clippy::type_complexity)]
#[pg_extern]
fn redo_stats() -> TableIterator<
    'static,
    (
        name!(written_lsn, String),
        name!(flushed_lsn, String),
        name!(records, i64),
        name!(syncs, i64),
        name!(bytes_since_checkpoint, i64),
        name!(last_checkpoint_lsn, Option<String>),
        name!(last_checkpoint_epoch, Option<f64>),
        name!(last_checkpoint_bytes, Option<i64>),
        name!(last_checkpoint_seconds, Option<f64>),
        name!(sync_wait_timeouts, i64),
    ),
> {
    engine();
    let log = crate::shmem::log();
    let (records, syncs) = log.counters();
    let last = log.last_checkpoint();
    TableIterator::once((
        format!("{:X}", log.written_lsn()),
        format!("{:X}", log.flushed_lsn()),
        records as i64,
        syncs as i64,
        log.bytes_since_checkpoint() as i64,
        last.map(|c| format!("{:X}", c.start_lsn)),
        last.map(|c| c.unix_ms as f64 / 1000.0),
        last.map(|c| c.bytes as i64),
        last.map(|c| c.duration_ms as f64 / 1000.0),
        log.sleep_timeouts() as i64,
    ))
}

/// Every index of the memory tables: table, name, key columns, whether it is unique
/// or the primary key, its entries (one per row version in the index), and the key
/// columns' attribute numbers (for DDL built from it, e.g. `memfdw.convert_to_heap`).
#[pg_extern]
#[allow(clippy::type_complexity)]
pub(crate) fn indexes() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(table_name, String),
        name!(index_name, String),
        name!(columns, String),
        name!(is_unique, bool),
        name!(is_primary, bool),
        name!(entries, i64),
        name!(column_numbers, Vec<i16>),
    ),
> {
    let e = engine();
    let mut rows = Vec::new();
    let here = crate::handler::current_database();
    for id in e.table_ids() {
        // This transaction's own index DDL after its TRUNCATE or ALTER is on the
        // table's replacement: show the table as the transaction sees it.
        let t = if id.database == here {
            crate::xact::table_view(pg_sys::Oid::from(id.relation))
        } else {
            e.table(id)
        };
        let Some(t) = t else { continue };
        let relid = pg_sys::Oid::from(id.relation);
        if !visible(&t, relid) {
            continue;
        }
        for d in t.index_defs() {
            let cols: Vec<_> = d
                .columns
                .iter()
                .map(|&c| crate::types::column_name(relid, c))
                .collect();
            rows.push((
                relid,
                crate::types::relation_name(relid),
                d.name.clone(),
                cols.join(", "),
                d.unique,
                d.primary,
                t.index_entries(d.id).unwrap_or(0) as i64,
                // Engine column p is attribute p + 1.
                d.columns.iter().map(|&c| c as i16 + 1).collect(),
            ));
        }
    }
    rows.sort_by(|a, b| (a.1.as_str(), a.2.as_str()).cmp(&(b.1.as_str(), b.2.as_str())));
    TableIterator::new(rows)
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION memfdw."checkpoint"() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION memfdw."checkpoint"() TO pg_checkpoint;
"#,
    name = "checkpoint_privileges",
    requires = [checkpoint],
);
