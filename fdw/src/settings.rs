//! The `memfdw.*` settings (GUCs).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `memfdw.max_memory`, in MB: the size of the engine's shared memory arena.
pub static MAX_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);

/// Rows fetched from the engine per batch by a scan.
pub static SCAN_BATCH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(256);

/// Defines the settings. `memfdw.max_memory` is a server-start setting, which
/// PostgreSQL accepts only while shared_preload_libraries is processed.
pub fn register(preloading: bool) {
    if preloading {
        define_max_memory();
    }
    GucRegistry::define_int_guc(
        c"memfdw.scan_batch_rows",
        c"Rows a memory table scan copies out of the engine at a time.",
        c"",
        &SCAN_BATCH_ROWS,
        1,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: plain catalog call during _PG_init.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"memfdw".as_ptr()) };
}

fn define_max_memory() {
    GucRegistry::define_int_guc(
        c"memfdw.max_memory",
        c"Shared memory reserved for memory tables.",
        c"Size of the arena in PostgreSQL's main shared memory that holds every memory table, \
          index and transaction. New rows are refused (SQLSTATE 53200) when the data reaches \
          about 7/8 of it. Takes effect at server start.",
        &MAX_MEMORY_MB,
        16,
        i32::MAX / 2,
        GucContext::Postmaster,
        GucFlags::UNIT_MB,
    );
}
