//! SQL functions that show the engine's state.

use crate::shmem::engine;
use pgrx::prelude::*;

/// Every memory table the engine holds: relation, name, committed rows, bytes of row data.
#[pg_extern]
fn tables() -> TableIterator<
    'static,
    (
        name!(relid, pg_sys::Oid),
        name!(table_name, String),
        name!(rows, i64),
        name!(data_bytes, i64),
    ),
> {
    let e = engine();
    let rows: Vec<_> = e
        .table_oids()
        .into_iter()
        .filter_map(|oid| {
            let t = e.table(oid)?;
            let s = t.stats();
            // The current name (the engine keeps the one given at creation).
            let relid = pg_sys::Oid::from(oid);
            Some((
                relid,
                crate::types::relation_name(relid),
                s.rows,
                s.data_bytes,
            ))
        })
        .collect();
    TableIterator::new(rows)
}

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
    let m = engine().memory();
    TableIterator::once((
        m.limit as i64,
        m.in_use as i64,
        m.arena_capacity as i64,
        m.arena_reserved as i64,
    ))
}
