//! Statement snapshots of memory tables, tied to PostgreSQL's.
//!
//! Under READ COMMITTED every statement reads one engine snapshot: the one belonging
//! to the PostgreSQL snapshot its executor runs with (`es_snapshot`). Queries sharing
//! a PostgreSQL snapshot (a STABLE function's queries run with their caller's) share
//! the engine snapshot; a new PostgreSQL snapshot (the next statement, a VOLATILE
//! function's query) gets a new one. REPEATABLE READ and SERIALIZABLE read their
//! transaction's snapshot (the engine's, taken at the first statement that runs while
//! memfdw is ready).
//!
//! `ExecutorStart` records each running query with its PostgreSQL snapshot; a query
//! whose range table has a memory table takes its engine snapshot right there, others
//! when a nested query first reads a memory table. `ExecutorEnd` forgets the query and
//! lets the engine reclaim versions only older snapshots needed. Queries ended by an
//! error are forgotten when their subtransaction or transaction aborts. A PostgreSQL
//! snapshot is matched by address only while a query using it runs (its executor holds
//! a registration on it, so the address cannot be reused meanwhile).

use crate::xact;
use memfdw_engine::{Isolation, Tid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;

/// A running query.
struct Query {
    desc: usize,
    /// Its PostgreSQL snapshot (address).
    pg: usize,
    /// Its engine snapshot, once taken.
    at: Option<Tid>,
    /// The subtransaction it started in.
    sub: u32,
}

thread_local! {
    static QUERIES: RefCell<Vec<Query>> = const { RefCell::new(Vec::new()) };
}

static mut PREV_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_END: pg_sys::ExecutorEnd_hook_type = None;

/// # Safety
/// Called once per process from `_PG_init`.
pub unsafe fn install_hooks() {
    // SAFETY: hook chaining at load time, single-threaded.
    unsafe {
        PREV_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(qd: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: PostgreSQL's executor entry point and its query descriptor.
    unsafe {
        // Recorded before the executor starts: it begins the foreign scans, which
        // look their snapshot up (the executor registers `snapshot` as `es_snapshot`,
        // the same object unless it has to copy it).
        let sub = pg_sys::GetCurrentSubTransactionId();
        QUERIES.with(|q| {
            q.borrow_mut().push(Query {
                desc: qd as usize,
                pg: (*qd).snapshot as usize,
                at: None,
                sub,
            })
        });
        // A parallel worker reads at the leader's snapshot (see `parallel_scan`).
        let in_worker = pg_sys::ParallelWorkerNumber >= 0;
        if eflags as u32 & pg_sys::EXEC_FLAG_EXPLAIN_ONLY == 0 && !in_worker {
            if xact::isolation() != Isolation::ReadCommitted {
                // The transaction snapshot: at its first statement, like PostgreSQL's,
                // unless memfdw is still recovering (then at its first memory read).
                if !xact::has_txn() && crate::startup::ready() && crate::shmem::preloaded() {
                    xact::with_txn(|_| ());
                }
            } else if reads_memory_tables((*qd).plannedstmt) {
                statement_snapshot((*qd).snapshot);
            }
        }
        match PREV_START {
            Some(prev) => prev(qd, eflags),
            None => pg_sys::standard_ExecutorStart(qd, eflags),
        }
        let estate = (*qd).estate;
        if !estate.is_null() {
            let pg = (*estate).es_snapshot as usize;
            QUERIES.with(|q| {
                if let Some(x) = q
                    .borrow_mut()
                    .iter_mut()
                    .rev()
                    .find(|x| x.desc == qd as usize)
                {
                    x.pg = pg;
                }
            });
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(qd: *mut pg_sys::QueryDesc) {
    let forgot = QUERIES.with(|q| {
        let mut q = q.borrow_mut();
        match q.iter().rposition(|x| x.desc == qd as usize) {
            Some(i) => q.remove(i).at.is_some(),
            None => false,
        }
    });
    if forgot {
        retain();
    }
    // SAFETY: PostgreSQL's executor entry point.
    unsafe {
        match PREV_END {
            Some(prev) => prev(qd),
            None => pg_sys::standard_ExecutorEnd(qd),
        }
    }
}

/// Does the plan's range table name a memory table?
///
/// # Safety
/// `stmt` is a planned statement of a running query.
unsafe fn reads_memory_tables(stmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: forwarded contract; a List of RangeTblEntry.
    unsafe {
        if stmt.is_null() {
            return false;
        }
        let rtable = (*stmt).rtable;
        for i in 0..crate::pglist::len(rtable) {
            let rte = crate::pglist::nth(rtable, i) as *mut pg_sys::RangeTblEntry;
            if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION
                && (*rte).relkind == pg_sys::RELKIND_FOREIGN_TABLE as std::ffi::c_char
                && crate::handler::is_memory_table((*rte).relid)
            {
                return true;
            }
        }
        false
    }
}

/// The engine snapshot for reads under PostgreSQL snapshot `snap` (the running
/// query's `es_snapshot`), taken now if the queries sharing `snap` have none yet.
/// None outside any query (ANALYZE, say): such reads see the newest versions.
pub fn statement_snapshot(snap: pg_sys::Snapshot) -> Option<Tid> {
    if xact::isolation() != Isolation::ReadCommitted {
        return None;
    }
    let pg = snap as usize;
    // The outermost query with this snapshot; else the query being started (its
    // executor copied the snapshot).
    let slot = QUERIES.with(|q| {
        let q = q.borrow();
        q.iter()
            .position(|x| x.pg == pg)
            .or_else(|| q.len().checked_sub(1))
    })?;
    let known = QUERIES.with(|q| q.borrow()[slot].at);
    if known.is_some() {
        return known;
    }
    let at = xact::with_txn(|t| t.snapshot()).unwrap_or_else(|e| crate::errors::raise(e));
    QUERIES.with(|q| q.borrow_mut()[slot].at = Some(at));
    Some(at)
}

/// Tells the engine the oldest snapshot still read at.
fn retain() {
    let oldest = QUERIES.with(|q| q.borrow().iter().filter_map(|x| x.at).min());
    xact::with_existing_txn(|t| t.retain_snapshots(oldest));
}

/// At a subtransaction abort: forgets the queries it started (their executors are
/// gone without `ExecutorEnd`).
pub fn forget_from(sub: u32) {
    QUERIES.with(|q| q.borrow_mut().retain(|x| x.sub < sub));
    retain();
}

/// At transaction end.
pub fn forget_all() {
    QUERIES.with(|q| q.borrow_mut().clear());
}
