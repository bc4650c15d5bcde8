//! The `memfdw.*` settings (GUCs).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `memfdw.max_memory`, in MB: the size of the engine's shared memory arena.
pub static MAX_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);

/// `memfdw.data_directory`: where the redo log lives (relative to the data directory).
pub static DATA_DIRECTORY: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"memfdw"));

/// Size of one redo log segment, in MB.
pub static SEGMENT_SIZE_MB: GucSetting<i32> = GucSetting::<i32>::new(64);

/// `memfdw.max_log_size`, in MB: a commit that finds more log than this written since
/// the last checkpoint takes one.
pub static MAX_LOG_SIZE_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);

/// `memfdw.checkpoint_timeout`, in seconds.
pub static CHECKPOINT_TIMEOUT_S: GucSetting<i32> = GucSetting::<i32>::new(300);

/// Developer setting for tests: the background worker waits this long (ms) before
/// recovering, so that sessions demonstrably wait for recovery.
pub static DEBUG_RECOVERY_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Developer option: every sync of the redo log waits this long first (tests of
/// durable reads).
pub static DEBUG_LOG_SYNC_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Developer option: a transaction that wrote memory tables waits this long (ms)
/// after memfdw's PRE_COMMIT (its redo record written, PostgreSQL's commit record not
/// yet), so that tests can crash the server there.
pub static DEBUG_PAUSE_AFTER_PREPARE_MS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `memfdw.autoanalyze`: the background worker analyzes memory tables whose rows
/// changed enough (see `autoanalyze.rs`).
pub static AUTOANALYZE: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `memfdw.autoanalyze_naptime`, in seconds: how often it looks.
pub static AUTOANALYZE_NAPTIME_S: GucSetting<i32> = GucSetting::<i32>::new(15);

/// `memfdw.autoanalyze_threshold`: rows changed that trigger an ANALYZE, beyond the
/// scale factor's share.
pub static AUTOANALYZE_THRESHOLD: GucSetting<i32> = GucSetting::<i32>::new(50);

/// `memfdw.autoanalyze_scale_factor`: the share of a table's rows that must change.
pub static AUTOANALYZE_SCALE_FACTOR: GucSetting<f64> = GucSetting::<f64>::new(0.1);

/// `memfdw.enable_index_statistics`: the planner uses the key-prefix statistics of
/// memory-table indexes (as PostgreSQL's `enable_*` settings, for comparisons).
pub static ENABLE_INDEX_STATISTICS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `memfdw.enable_aggregate_pushdown`: aggregates of one memory table, ungrouped or
/// grouped by plain columns, are computed by the engine (see `aggregates`).
pub static ENABLE_AGGREGATE_PUSHDOWN: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `memfdw.enable_row_filters`: full scans and aggregates check simple quals on each
/// row in the engine (see `row_filters`).
pub static ENABLE_ROW_FILTERS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Rows fetched from the engine per batch by a scan.
pub static SCAN_BATCH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(256);

/// Defines the settings. `memfdw.max_memory` is a server-start setting, which
/// PostgreSQL accepts only while shared_preload_libraries is processed.
pub fn register(preloading: bool) {
    if preloading {
        define_max_memory();
        GucRegistry::define_string_guc(
            c"memfdw.data_directory",
            c"Directory of memfdw's redo log.",
            c"Relative paths are relative to the server's data directory. Takes effect at server start.",
            &DATA_DIRECTORY,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_int_guc(
            c"memfdw.segment_size",
            c"Size of one redo log segment.",
            c"",
            &SEGMENT_SIZE_MB,
            1,
            1024,
            GucContext::Postmaster,
            GucFlags::UNIT_MB,
        );
        GucRegistry::define_int_guc(
            c"memfdw.debug_recovery_delay",
            c"Developer option: delay before recovery starts, to test sessions waiting for it.",
            c"",
            &DEBUG_RECOVERY_DELAY_MS,
            0,
            600_000,
            GucContext::Postmaster,
            GucFlags::UNIT_MS | GucFlags::NO_SHOW_ALL,
        );
        GucRegistry::define_int_guc(
            c"memfdw.debug_log_sync_delay",
            c"Developer option: delay before every sync of the redo log, to test readers waiting for durability.",
            c"",
            &DEBUG_LOG_SYNC_DELAY_MS,
            0,
            60_000,
            GucContext::Postmaster,
            GucFlags::UNIT_MS | GucFlags::NO_SHOW_ALL,
        );
    }
    GucRegistry::define_int_guc(
        c"memfdw.debug_pause_after_prepare",
        c"Developer option: pause between memfdw's commit preparation and PostgreSQL's commit record, to test crashes there.",
        c"",
        &DEBUG_PAUSE_AFTER_PREPARE_MS,
        0,
        600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"memfdw.max_log_size",
        c"Redo log written since the last checkpoint that triggers the next one.",
        c"memfdw's background worker takes a checkpoint when the log has grown past this.",
        &MAX_LOG_SIZE_MB,
        1,
        i32::MAX / 2,
        GucContext::Sighup,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"memfdw.checkpoint_timeout",
        c"Longest time between automatic checkpoints of memory tables.",
        c"",
        &CHECKPOINT_TIMEOUT_S,
        1,
        86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"memfdw.autoanalyze",
        c"Analyzes memory tables automatically once enough of their rows changed.",
        c"PostgreSQL's autovacuum does not analyze foreign tables; memfdw's background worker does, for memory tables.",
        &AUTOANALYZE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memfdw.autoanalyze_naptime",
        c"Time between looks for memory tables to analyze.",
        c"",
        &AUTOANALYZE_NAPTIME_S,
        1,
        86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"memfdw.autoanalyze_threshold",
        c"Rows changed that make a memory table due for ANALYZE, beyond memfdw.autoanalyze_scale_factor's share.",
        c"",
        &AUTOANALYZE_THRESHOLD,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memfdw.autoanalyze_scale_factor",
        c"Share of a memory table's rows that must change before it is analyzed automatically.",
        c"",
        &AUTOANALYZE_SCALE_FACTOR,
        0.0,
        100.0,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"memfdw.enable_index_statistics",
        c"Lets the planner estimate memory-table index scans from the distinct values of key prefixes that ANALYZE found.",
        c"",
        &ENABLE_INDEX_STATISTICS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"memfdw.enable_aggregate_pushdown",
        c"Lets the engine compute count, sum, avg, min and max of one memory table, ungrouped or grouped by plain columns, over the rows that pass the query's conditions, in one pass.",
        c"",
        &ENABLE_AGGREGATE_PUSHDOWN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"memfdw.enable_row_filters",
        c"Lets memory-table full scans and aggregates check comparisons of a column with a value (=, <, <=, >, >=, IN, IS [NOT] NULL) on each row before copying it out.",
        c"",
        &ENABLE_ROW_FILTERS,
        GucContext::Userset,
        GucFlags::default(),
    );
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
