//! memfdw: PostgreSQL glue over `memfdw-engine`.
//!
//! This crate is thin on purpose: it declares the routing global allocator, hands the
//! engine PostgreSQL's shared memory, translates datums to packed rows and back, maps
//! the FDW callbacks, DDL hooks and transaction callbacks to engine calls, and engine
//! errors to SQLSTATEs. It never holds an engine lock or epoch pin across a call into
//! PostgreSQL: every engine call returns before PostgreSQL is called again.

use pgrx::prelude::*;

mod aggregates;
mod alter;
mod analyze;
mod autoanalyze;
mod convert;
mod cross_type;
mod ddl;
mod direct_modify;
mod error_fields;
mod errors;
mod handler;
mod import;
mod index_ddl;
mod index_options;
mod index_paths;
mod introspect;
mod lock_table;
mod modify;
mod parallel_scan;
mod pglist;
mod plan_private;
mod progress;
mod row_filters;
mod scan;
mod scan_plans;
mod settings;
mod shmem;
mod snapshots;
mod startup;
mod types;
mod unload;
mod worker;
mod xact;

::pgrx::pg_module_magic!();

/// Shared objects are allocated in the engine's arena inside an engine scope; every
/// other Rust allocation of this library goes to the system allocator.
#[global_allocator]
static ALLOC: memfdw_engine::alloc::RoutingAllocator = memfdw_engine::alloc::RoutingAllocator;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: _PG_init runs once per process, before any other code of this library.
    unsafe {
        settings::register(pg_sys::process_shared_preload_libraries_in_progress);
        if pg_sys::process_shared_preload_libraries_in_progress {
            shmem::install_hooks();
            worker::register();
        }
        ddl::install_hooks();
        error_fields::install_hook();
        snapshots::install_hooks();
        handler::register_relcache_callback();
        xact::register_callbacks();
        shmem::set_before_exit(xact::release_at_exit);
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'memfdw'",
            "memfdw.max_memory = '256MB'",
            // Plans the tests check must not change under them.
            "memfdw.autoanalyze = off",
        ]
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;
