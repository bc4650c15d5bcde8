//! ANALYZE on memory tables: a reservoir sample of the committed rows for
//! PostgreSQL's statistics (pg_statistic), so the planner estimates selectivities of
//! quals and joins on memory tables as well as on heap tables.

use crate::errors::OrRaise;
use crate::shmem::engine;
use crate::types::{self, Codec};
use memfdw_engine::{RowBatch, ScanCursor};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::Ordering::Relaxed;

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
pub unsafe extern "C-unwind" fn analyze_foreign_table(
    relation: pg_sys::Relation,
    func: *mut pg_sys::AcquireSampleRowsFunc,
    totalpages: *mut pg_sys::BlockNumber,
) -> bool {
    // SAFETY: out-parameters handed to us by PostgreSQL.
    unsafe {
        let id = crate::handler::table_id((*relation).rd_id);
        // As this transaction sees it (it may have loaded or unloaded it).
        let loaded = crate::xact::table_view((*relation).rd_id)
            .is_none_or(|t| *t.residency() == memfdw_engine::unload::Residency::Loaded);
        if !loaded {
            // Unloaded (memfdw.unload): PostgreSQL skips it with a warning, and keeps
            // the statistics it had.
            return false;
        }
        let rows = engine().table_stats(id).map_or(0, |s| s.rows.max(0) as u64);
        // No pages: a nominal count PostgreSQL uses in its progress report only.
        *totalpages = (rows / 100 + 1).min(u32::MAX as u64) as pg_sys::BlockNumber;
        *func = Some(acquire_sample_rows);
    }
    true
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn acquire_sample_rows(
    relation: pg_sys::Relation,
    _elevel: std::ffi::c_int,
    rows: *mut pg_sys::HeapTuple,
    targrows: std::ffi::c_int,
    totalrows: *mut f64,
    totaldeadrows: *mut f64,
) -> std::ffi::c_int {
    // SAFETY: PostgreSQL's relation and output arrays (room for `targrows` tuples);
    // tuples are built in the current memory context, as ANALYZE expects.
    unsafe {
        let relid = (*relation).rd_id;
        let Some(table) = crate::xact::table_view(relid) else {
            crate::errors::missing_table(relid)
        };
        let codecs: Vec<Codec> = table.def.columns.iter().map(|c| Codec::of(c.ty)).collect();
        let desc = (*relation).rd_att;
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual);
        let scratch = pg_sys::AllocSetContextCreateExtended(
            pg_sys::CurrentMemoryContext,
            c"memfdw analyze".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        // A transaction of its own: committed rows only, whatever this session holds.
        let mut txn = engine().begin();
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        // Distinct values per key prefix of each index, from every row (see
        // `memfdw_engine::stats`); the changes counted so far are covered by this run.
        let mut sketches = table.prefix_sketches();
        let changed = table.access.changed_since_analyze.load(Relaxed);
        let target = targrows.max(0) as usize;
        let mut kept = 0usize;
        let mut seen = 0u64;
        while !cursor.done() {
            pgrx::check_for_interrupts!();
            // A read-committed scan never conflicts.
            txn.scan(&table, &mut cursor, u32::MAX, &mut batch, 1024)
                .or_raise();
            while let Some(r) = batch.next() {
                seen += 1;
                sketches.add_row(&table.layout, r.data);
                // Algorithm R: the first `target` rows, then row `seen` replaces a
                // random kept one with probability target / seen.
                let pos = if kept < target {
                    kept += 1;
                    kept - 1
                } else {
                    let j = pg_sys::pg_prng_uint64_range(
                        &raw mut pg_sys::pg_global_prng_state,
                        0,
                        seen - 1,
                    ) as usize;
                    if j >= target {
                        continue;
                    }
                    pg_sys::heap_freetuple(*rows.add(j));
                    j
                };
                // Datums in a scratch context, the tuple in the caller's.
                let outer = pg_sys::MemoryContextSwitchTo(scratch);
                types::unpack(&codecs, None, &table.layout, r.data, slot);
                pg_sys::MemoryContextSwitchTo(outer);
                let t = pg_sys::heap_form_tuple(desc, (*slot).tts_values, (*slot).tts_isnull);
                pg_sys::MemoryContextReset(scratch);
                types::rowid_to_ctid(r.rowid, &mut (*t).t_self);
                *rows.add(pos) = t;
            }
        }
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::MemoryContextDelete(scratch);
        *totalrows = seen as f64;
        *totaldeadrows = 0.0;
        let now = pg_sys::GetCurrentTimestamp();
        sketches.publish(&table, now);
        let a = &table.access;
        a.last_analyze.store(now, Relaxed);
        a.analyze_count.fetch_add(1, Relaxed);
        let _ = a
            .changed_since_analyze
            .fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(changed)));
        kept as std::ffi::c_int
    }
}
