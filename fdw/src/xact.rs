//! One engine transaction per PostgreSQL transaction, begun lazily.
//!
//! * PRE_COMMIT prepares the engine transaction (locks, validation, unique keys; with
//!   an xid, its redo record tagged with the xid, made durable); a conflict raises
//!   40001 there and PostgreSQL aborts the whole transaction.
//! * COMMIT (PostgreSQL has committed) installs: the memory changes become visible
//!   only now, and only if PostgreSQL commits. A reader whose engine snapshot follows
//!   the commit's TID waits for the install; one whose PostgreSQL snapshot was taken
//!   before PostgreSQL's commit but whose engine snapshot after the TID sees the
//!   memory part without the heap part (see README, "Transactions").
//! * ABORT (also after PRE_COMMIT: PostgreSQL's serialization check, an ON COMMIT
//!   action or NOTIFY failed) releases everything the engine transaction holds and
//!   undoes engine DDL of the transaction; a tagged record already logged is skipped
//!   by recovery, since the commit log says its xid did not commit.
//! * Subtransaction abort rolls the write set back to the savepoint.
//! * Engine DDL is deferred or undone with the transaction: a CREATE made by an
//!   aborted transaction is dropped again, a DROP takes effect at COMMIT.
//!
//! Everything here is backend-private (the backend is single-threaded).

use crate::errors;
use crate::shmem::engine;
use memfdw_engine::{Error, Isolation, Stmt, TxnHandle};
use memfdw_engine::{RowId, TableId, Tid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default)]
struct Backend {
    txn: Option<TxnHandle>,
    /// Engine tables created by this transaction (also in another database: the copies
    /// CREATE DATABASE makes of a template's tables), with the subtransaction.
    creates: Vec<(TableId, u32)>,
    /// Engine tables dropped by this transaction, applied at commit.
    drops: Vec<(u32, u32)>,
    /// Engine indexes created by this transaction: (relation, index id, subtransaction).
    index_creates: Vec<(u32, u32, u32)>,
    /// Engine indexes dropped by this transaction, applied at commit.
    index_drops: Vec<(u32, u32, u32)>,
    /// Subtransactions holding this transaction's row-lock holder lock (see
    /// `ensure_holder_lock`).
    /// With the lock tag each took (the tag names the virtual transaction, whose id
    /// PostgreSQL clears before the COMMIT callbacks run).
    holder_locked: Vec<(u32, u64)>,
    /// (relation, row id) -> version, for rows that UPDATE/DELETE scans returned.
    fetched: HashMap<(u32, RowId), Tid>,
}

thread_local! {
    static BACKEND: RefCell<Backend> = RefCell::new(Backend::default());
}

/// # Safety
/// Called once per process from `_PG_init`.
pub unsafe fn register_callbacks() {
    // SAFETY: registering plain callbacks.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

/// The statement identity of the current command.
pub fn current_stmt(for_write: bool) -> Stmt {
    // SAFETY: plain reads of transaction state.
    unsafe {
        Stmt {
            cid: pg_sys::GetCurrentCommandId(for_write),
            sub: pg_sys::GetCurrentSubTransactionId(),
        }
    }
}

/// Runs `f` with this backend's engine transaction, starting it if needed.
/// The memory table `relid` as this transaction sees it (after its own TRUNCATEs),
/// for reading and writing its rows.
/// Raises 55000 if the table is unloaded (see [`crate::unload`]).
pub fn table(relid: pg_sys::Oid) -> Option<memfdw_engine::TableHandle> {
    let t = with_txn(|t| t.table(crate::handler::table_id(relid)));
    if let Some(t) = &t {
        crate::unload::check_loaded(t, relid);
    }
    t
}

/// The memory table `relid` as this transaction sees it if it has begun its engine
/// transaction (a TRUNCATE or ALTER replacement can only exist then), else the
/// catalog's: for lookups (names, introspection) that must not begin one (it would
/// take a snapshot, and make PREPARE TRANSACTION refuse the transaction).
pub fn table_view(relid: pg_sys::Oid) -> Option<memfdw_engine::TableHandle> {
    let id = crate::handler::table_id(relid);
    let seen = BACKEND.with(|b| b.borrow_mut().txn.as_mut().map(|t| t.table(id)));
    match seen {
        Some(t) => t,
        None => engine().table(id),
    }
}

/// This transaction waited for another one's row or key: what it does next depends on
/// that transaction's commit, which may not be durable yet (it released its rows at
/// its install, before its log sync). Its own commit then waits for it.
pub fn depend_on_waited() {
    with_existing_txn(|t| t.depend_on_log());
}

pub fn with_txn<R>(f: impl FnOnce(&mut TxnHandle) -> R) -> R {
    let engine = engine();
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        if b.txn.is_none() {
            let mut t = engine.begin();
            t.set_lock_tag(my_vxid_tag());
            if let Err(e) = t.set_isolation(isolation()) {
                drop(b);
                errors::raise(e);
            }
            b.txn = Some(t);
        }
        f(b.txn.as_mut().expect("begun above"))
    })
}

/// Runs `f` with this backend's engine transaction if it has one.
pub fn with_existing_txn(f: impl FnOnce(&mut TxnHandle)) {
    BACKEND.with(|b| {
        if let Some(t) = b.borrow_mut().txn.as_mut() {
            f(t)
        }
    })
}

/// Has this transaction begun its engine transaction?
pub fn has_txn() -> bool {
    BACKEND.with(|b| b.borrow().txn.is_some())
}

/// The engine isolation level for PostgreSQL's current one (READ UNCOMMITTED is
/// READ COMMITTED, as in PostgreSQL).
pub fn isolation() -> Isolation {
    // SAFETY: reading a GUC variable.
    match unsafe { pg_sys::XactIsoLevel } as u32 {
        pg_sys::XACT_SERIALIZABLE => Isolation::Serializable,
        pg_sys::XACT_REPEATABLE_READ => Isolation::RepeatableRead,
        _ => Isolation::ReadCommitted,
    }
}

/// This backend's virtual transaction id, packed as the engine's row-lock tag (the
/// engine adds the subtransaction of each lock): a waiter unpacks it and waits on
/// PostgreSQL's lock of that (sub)transaction.
fn my_vxid_tag() -> u64 {
    // SAFETY: this backend's PGPROC and id, valid inside a transaction.
    let (backend, lxid) = unsafe { (pg_sys::MyBackendId, (*pg_sys::MyProc).lxid) };
    memfdw_engine::rowlock::pack_tag(backend as u32, lxid)
}

/// PostgreSQL lock standing for "(sub)transaction `tag` holds memory-table row locks":
/// an advisory-class lock (field 4 = 3, a class user advisory locks never use; field
/// 1 = the subtransaction's low bits, fields 2 and 3 = the virtual transaction id).
/// The holder takes it exclusively in every subtransaction that locks rows, so a
/// rolled back subtransaction releases it with its row locks (a committed one hands
/// it to its parent, as its row locks); a waiter takes it shared and lets it go,
/// which waits exactly as long as the holder may hold the row. Waiting in
/// PostgreSQL's lock manager shows in pg_locks and isolationtester, joins
/// PostgreSQL's deadlock detection (also across heap-table locks), and ends on
/// lock_timeout, statement_timeout and cancel.
fn holder_locktag(tag: u64) -> pg_sys::LOCKTAG {
    let (backend, lxid, sub) = memfdw_engine::rowlock::unpack_tag(tag);
    pg_sys::LOCKTAG {
        locktag_field1: sub,
        locktag_field2: backend,
        locktag_field3: lxid,
        locktag_field4: 3,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::DEFAULT_LOCKMETHOD as u8,
    }
}

/// Takes this transaction's holder lock in the current subtransaction (once).
pub fn ensure_holder_lock() {
    let sub = current_stmt(false).sub;
    let needed = BACKEND.with(|b| !b.borrow().holder_locked.iter().any(|&(s, _)| s == sub));
    if needed {
        let lock_tag = memfdw_engine::rowlock::tag_of(my_vxid_tag(), sub);
        let tag = holder_locktag(lock_tag);
        // Owned by the top-level resource owner, so that COMMIT can release it early
        // (`release_holder_locks`) whatever portal took it; a subtransaction's is
        // released by its abort (`release_sub_holder_locks`).
        // SAFETY: a lock-manager call under the transaction's own resource owner.
        unsafe {
            let saved = pg_sys::CurrentResourceOwner;
            pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
            pgrx::PgTryBuilder::new(|| {
                pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as _, false, false);
            })
            .finally(|| pg_sys::CurrentResourceOwner = saved)
            .execute();
        }
        BACKEND.with(|b| b.borrow_mut().holder_locked.push((sub, lock_tag)));
    }
}

/// Releases the holder locks of subtransactions `subs` (held by the top-level
/// resource owner: see `ensure_holder_lock`).
fn release_holder_locks_of(held: &[(u32, u64)]) {
    for &(_, lock_tag) in held {
        let tag = holder_locktag(lock_tag);
        // SAFETY: a lock this transaction holds under its top-level resource owner.
        unsafe {
            let saved = pg_sys::CurrentResourceOwner;
            pg_sys::CurrentResourceOwner = pg_sys::TopTransactionResourceOwner;
            pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as _, false);
            pg_sys::CurrentResourceOwner = saved;
        }
    }
}

/// Releases this transaction's holder locks at COMMIT, once its row locks are gone
/// (PostgreSQL would release them only at the end of its commit).
fn release_holder_locks() {
    let subs = BACKEND.with(|b| std::mem::take(&mut b.borrow_mut().holder_locked));
    release_holder_locks_of(&subs);
}

/// Waits until row-lock holder `holder` may no longer hold the row (its holder lock
/// is free). With `nowait`, returns false instead of waiting.
pub fn wait_for_holder(holder: u64, nowait: bool) -> bool {
    let tag = holder_locktag(holder);
    // SAFETY: lock-manager calls; errors (deadlock, timeouts, cancel) are raised by
    // PostgreSQL.
    unsafe {
        let r = pg_sys::LockAcquire(&tag, pg_sys::ShareLock as _, false, nowait);
        if r == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            return false;
        }
        pg_sys::LockRelease(&tag, pg_sys::ShareLock as _, false);
    }
    true
}

/// Does the current transaction run at REPEATABLE READ or SERIALIZABLE?
pub fn snapshot_isolation() -> bool {
    isolation() != Isolation::ReadCommitted
}

pub fn note_fetched(relid: u32, rowid: RowId, tid: Tid) {
    BACKEND.with(|b| {
        b.borrow_mut().fetched.insert((relid, rowid), tid);
    })
}

pub fn fetched_tid(relid: u32, rowid: RowId) -> Option<Tid> {
    BACKEND.with(|b| b.borrow().fetched.get(&(relid, rowid)).copied())
}

pub fn clear_fetched() {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.fetched.clear();
        b.fetched.shrink_to(1024);
    })
}

pub fn note_create(table: TableId) {
    let sub = current_stmt(false).sub;
    BACKEND.with(|b| b.borrow_mut().creates.push((table, sub)));
}

pub fn note_drop(relid: u32) {
    let sub = current_stmt(false).sub;
    BACKEND.with(|b| b.borrow_mut().drops.push((relid, sub)));
}

pub fn note_index_create(relid: u32, id: u32) {
    let sub = current_stmt(false).sub;
    BACKEND.with(|b| b.borrow_mut().index_creates.push((relid, id, sub)));
}

pub fn note_index_drop(relid: u32, id: u32) {
    let sub = current_stmt(false).sub;
    let table = crate::handler::table_id(pg_sys::Oid::from(relid));
    let mut resided = false;
    with_existing_txn(|t| resided = t.resided(table));
    if resided {
        crate::errors::raise(memfdw_engine::Error::ChangedInTransaction { table });
    }
    BACKEND.with(|b| b.borrow_mut().index_drops.push((relid, id, sub)));
}

/// Did this transaction load or unload memory table `relid`?
pub fn resided(relid: pg_sys::Oid) -> bool {
    let id = crate::handler::table_id(relid);
    let mut r = false;
    with_existing_txn(|t| r = t.resided(id));
    r
}

/// Has this transaction created or dropped an index of `relid`?
pub fn index_ddl_pending(relid: u32) -> bool {
    BACKEND.with(|b| {
        let b = b.borrow();
        b.index_drops.iter().any(|&(r, _, _)| r == relid)
            || b.index_creates.iter().any(|&(r, _, _)| r == relid)
    })
}

/// Is index `id` of `relid` in one of this transaction's index lists?
fn index_listed(list: &[(u32, u32, u32)], relid: u32, id: u32) -> bool {
    list.iter().any(|&(r, i, _)| r == relid && i == id)
}

/// Has this transaction created index `id` of `relid` (not committed yet)?
pub fn index_created_here(relid: u32, id: u32) -> bool {
    BACKEND.with(|b| index_listed(&b.borrow().index_creates, relid, id))
}

/// Has this transaction dropped index `id` of `relid` (effective at commit)?
pub fn index_drop_pending(relid: u32, id: u32) -> bool {
    BACKEND.with(|b| index_listed(&b.borrow().index_drops, relid, id))
}

fn take_txn() -> Option<TxnHandle> {
    BACKEND.with(|b| b.borrow_mut().txn.take())
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT => {
            // Indexes this transaction created become visible to other planners: now,
            // before PostgreSQL's commit sends the invalidation that makes them
            // replan (should the commit fail after this, the abort drops them, and a
            // plan that chose one falls back to reading the table).
            // (The table as this transaction sees it: an index created after a
            // TRUNCATE or ALTER of the table is the replacement's, which the commit
            // installs.)
            let index_creates = BACKEND.with(|b| b.borrow().index_creates.clone());
            for (oid, id, _) in index_creates {
                if let Some(t) = table_view(pg_sys::Oid::from(oid)) {
                    t.mark_index_committed(id);
                }
            }
            // Tables created by this transaction: nobody else could write them.
            let created: Vec<_> =
                BACKEND.with(|b| b.borrow().creates.iter().map(|&(t, _)| t).collect());
            with_existing_txn(|t| {
                for id in created {
                    t.note_private(id);
                }
            });
            // Indexes dropped from a table this transaction replaced (TRUNCATE, ALTER)
            // go now, from the replacement: the commit logs it with its indexes.
            let drops = BACKEND.with(|b| b.borrow().index_drops.clone());
            let kept: Vec<_> = drops
                .into_iter()
                .filter(|&(oid, id, _)| !drop_index_of_replacement(oid, id))
                .collect();
            BACKEND.with(|b| b.borrow_mut().index_drops = kept);
            // Everything that can fail; nothing visible yet. A transaction with an xid
            // writes its tagged redo record now, durably, before PostgreSQL's commit
            // record: recovery applies it only if the commit log says it committed.
            // SAFETY: reading transaction state.
            let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() };
            let xid = (xid != pg_sys::InvalidTransactionId).then(|| u32::from(xid));
            let r = BACKEND.with(|b| {
                b.borrow_mut()
                    .txn
                    .as_mut()
                    .map(|t| t.prepare(xid, durable()))
            });
            match r {
                Some(Err(e)) => {
                    drop(take_txn());
                    errors::raise(e);
                }
                Some(Ok(())) => {
                    let pause = crate::settings::DEBUG_PAUSE_AFTER_PREPARE_MS.get();
                    if pause > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(pause as u64));
                    }
                }
                None => {}
            }
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            crate::snapshots::forget_all();
            // PostgreSQL has committed: install (cannot fail but for the log, which
            // then needs a restart and recovery, as PostgreSQL's own fsync failures).
            if let Some(mut txn) = take_txn() {
                // Once installed (row locks released), the holder locks go too: a
                // transaction waiting for one of this commit's rows goes on at once,
                // not after this commit's log sync and the rest of PostgreSQL's commit
                // (its own commit then waits for this record: it read its versions).
                let r: Result<Tid, Error> = txn.finish_then(durable(), &mut release_holder_locks);
                drop(txn);
                if let Err(e) = r {
                    errors::raise(e);
                }
            }
            let (drops, index_drops) = BACKEND.with(|b| {
                let mut b = b.borrow_mut();
                b.creates.clear();
                b.index_creates.clear();
                b.holder_locked.clear();
                b.fetched.clear();
                (
                    std::mem::take(&mut b.drops),
                    std::mem::take(&mut b.index_drops),
                )
            });
            if !drops.is_empty() || !index_drops.is_empty() {
                let e = engine();
                for (oid, id, _) in index_drops {
                    must_drop_index(e, oid, id);
                }
                for (oid, _) in drops {
                    must_drop(e, crate::handler::table_id(pg_sys::Oid::from(oid)));
                }
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            crate::error_fields::done();
            release()
        }
        XACT_EVENT_PRE_PREPARE => {
            let busy = BACKEND.with(|b| {
                let b = b.borrow();
                b.txn.is_some()
                    || !b.creates.is_empty()
                    || !b.drops.is_empty()
                    || !b.index_creates.is_empty()
                    || !b.index_drops.is_empty()
            });
            if busy {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "cannot PREPARE a transaction that has used memory tables"
                );
            }
        }
        _ => {}
    }
}

/// Should commits wait until durable? Not with synchronous_commit = off: then they are
/// acknowledged before the log is synced (the background worker syncs it within
/// memfdw's writer delay).
fn durable() -> bool {
    // SAFETY: reading a GUC variable.
    let level = unsafe { pg_sys::synchronous_commit };
    level != pg_sys::SyncCommitLevel::SYNCHRONOUS_COMMIT_OFF as i32
}

/// Drops an engine table where no error may be raised (commit, abort): if the redo
/// log cannot record it, the server must restart and recover.
fn must_drop(e: &'static memfdw_engine::Engine, table: TableId) {
    if let Err(err) = e.drop_table(table) {
        errors::raise(memfdw_engine::Error::NotDurable(err.to_string()));
    }
}

/// Drops an engine index where no error may be raised (see `must_drop`).
fn must_drop_index(e: &'static memfdw_engine::Engine, oid: u32, id: u32) {
    if let Err(err) = e.drop_index(crate::handler::table_id(pg_sys::Oid::from(oid)), id) {
        errors::raise(memfdw_engine::Error::NotDurable(err.to_string()));
    }
}

/// Aborts the engine transaction and undoes this transaction's engine DDL.
fn release() {
    crate::snapshots::forget_all();
    crate::alter::forget_column_drops();
    let (txn, creates, index_creates) = BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.drops.clear();
        b.index_drops.clear();
        b.holder_locked.clear();
        b.fetched.clear();
        (
            b.txn.take(),
            std::mem::take(&mut b.creates),
            std::mem::take(&mut b.index_creates),
        )
    });
    drop(txn); // aborts
    if (!creates.is_empty() || !index_creates.is_empty()) && crate::shmem::preloaded() {
        let e = engine();
        for (oid, id, _) in index_creates {
            must_drop_index(e, oid, id);
        }
        for (oid, _) in creates {
            must_drop(e, oid);
        }
    }
}

/// At process exit: abort whatever is still open.
pub fn release_at_exit() {
    release();
}

/// # Safety
/// Called by PostgreSQL only, with the arguments its callback contract promises.
#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB {
        // Its holder lock (named by its own id; held by the top-level resource owner)
        // stays held: its entry stays as it is. The parent takes its own tag's lock
        // when it locks rows itself.
        return;
    }
    if event != pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        return;
    }
    crate::error_fields::done();
    crate::alter::forget_column_drops();
    crate::snapshots::forget_from(my_subid);
    // Subtransaction ids grow; every subtransaction started after `my_subid` is
    // nested in it, so "sub >= my_subid" is exactly what this abort undoes.
    let (creates, index_creates) = BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        if let Some(txn) = b.txn.as_mut() {
            txn.rollback_to(my_subid);
        }
        b.drops.retain(|&(_, s)| s < my_subid);
        b.index_drops.retain(|&(_, _, s)| s < my_subid);
        let (undo, keep): (Vec<_>, Vec<_>) = b.creates.iter().partition(|&&(_, s)| s >= my_subid);
        b.creates = keep;
        let (iundo, ikeep): (Vec<_>, Vec<_>) = b
            .index_creates
            .iter()
            .partition(|&&(_, _, s)| s >= my_subid);
        b.index_creates = ikeep;
        (undo, iundo)
    });
    // Its holder locks (and its children's), held by the top-level resource owner:
    // released after its row locks (above), as PostgreSQL would release them.
    let gone: Vec<(u32, u64)> = BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let gone = b
            .holder_locked
            .iter()
            .copied()
            .filter(|&(s, _)| s >= my_subid)
            .collect();
        b.holder_locked.retain(|&(s, _)| s < my_subid);
        gone
    });
    release_holder_locks_of(&gone);
    if !creates.is_empty() || !index_creates.is_empty() {
        let e = engine();
        for (oid, id, _) in index_creates {
            if !drop_index_of_replacement(oid, id) {
                must_drop_index(e, oid, id);
            }
        }
        for (oid, _) in creates {
            must_drop(e, oid);
        }
    }
}

/// Drops index `id` of memory table `oid` from this transaction's replacement of the
/// table (after its TRUNCATE or ALTER), if it has one; false if not.
fn drop_index_of_replacement(oid: u32, id: u32) -> bool {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let Some(txn) = b.txn.as_mut() else {
            return false;
        };
        let Some(t) = txn.table(crate::handler::table_id(pg_sys::Oid::from(oid))) else {
            return false;
        };
        txn.drop_index_of_replacement(&t, id)
    })
}
