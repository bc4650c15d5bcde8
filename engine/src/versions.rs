//! Older committed versions of rows, kept while a snapshot may need them, and the
//! work that waits for the snapshot horizon to pass (see [`crate::snapshots`]).
//!
//! A committer that replaces a version while some live snapshot is older than its
//! commit TID pushes the replaced version onto the record's chain (see
//! [`crate::record`]) instead of retiring it. What becomes garbage only once every
//! snapshot is past a TID waits in the engine's *horizon queue*, one [`Deferred`] per
//! commit, in the order commits pushed them:
//! * `prune`: cut the chain of a row a commit replaced (rows that are never written
//!   again would otherwise keep their old versions);
//! * `stale`: remove an index entry of a key a row no longer has, unless a version
//!   some snapshot may still read has it;
//! * `unlink`: remove a deleted row's keys and the row from the row index, and retire
//!   its record.
//!
//! Invariants:
//! * a commit pushes its [`Deferred`] while it holds the locks of every record it
//!   names, so the items of one record are queued in the order of its versions;
//! * items are taken from the front, and only while their TID is at or below the
//!   horizon; whoever processes items pins an epoch guard *before* taking them, so a
//!   record an item names cannot be freed while a helper that took an earlier item
//!   of the same record still works on it (the record's `Unlink` comes later in the
//!   queue and its retirement waits for that guard);
//! * every item holds its tables' `Arc`s: a dropped table keeps its records until
//!   the items naming them are done.

use crate::engine::Engine;
use crate::epoch;
use crate::garbage::{Garbage, Retired};
use crate::ids::{RowId, Tid};
use crate::index::KeyIndex;
use crate::record::{self, RecordPtr};
use crate::table::Table;
use crossbeam_epoch::Guard;
use std::collections::VecDeque;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

/// One older committed version of a row: present, with its commit TID. Immutable
/// once published, except `next`, which only the record's lock holder changes.
pub struct OldVersion {
    tid: Tid,
    data: *mut u8,
    next: AtomicPtr<OldVersion>,
}

/// Bytes accounted for one chain node (besides the row buffer it holds).
pub(crate) const NODE_BYTES: usize = std::mem::size_of::<OldVersion>();

impl OldVersion {
    /// A new, unpublished node (in the current allocator: the arena inside an engine
    /// scope). The caller checked the memory limit.
    pub(crate) fn alloc() -> *mut OldVersion {
        Box::into_raw(Box::new(OldVersion {
            tid: Tid::NONE,
            data: ptr::null_mut(),
            next: AtomicPtr::new(ptr::null_mut()),
        }))
    }

    /// Fills an unpublished node.
    pub(crate) fn fill(&mut self, tid: Tid, data: *mut u8, next: *mut OldVersion) {
        self.tid = tid;
        self.data = data;
        *self.next.get_mut() = next;
    }
}

/// The newest version in the chain starting at `head` that a snapshot at `at` sees.
pub(crate) fn visible_in_chain(head: *mut OldVersion, at: Tid, _g: &Guard) -> Option<(&[u8], Tid)> {
    let mut n = head;
    while !n.is_null() {
        // SAFETY: nodes are freed only through the collector after they were detached
        // from the chain, and the caller holds a guard taken before it loaded `head`.
        let node = unsafe { &*n };
        if node.tid <= at {
            // SAFETY: a chain node's buffer lives as long as the node.
            return Some((unsafe { record::rowbuf_slice(node.data) }, node.tid));
        }
        n = node.next.load(Ordering::Acquire);
    }
    None
}

/// Detaches, from the chain at `head`, the nodes after the first one with TID <=
/// `horizon` (the version every snapshot at the horizon or later sees instead of
/// them). The caller holds the record's lock.
pub(crate) fn cut_below(head: *mut OldVersion, horizon: Tid) -> *mut OldVersion {
    let mut n = head;
    while !n.is_null() {
        // SAFETY: the lock holder's chain: nodes stay allocated while linked.
        let node = unsafe { &*n };
        if node.tid <= horizon {
            return node.next.swap(ptr::null_mut(), Ordering::AcqRel);
        }
        n = node.next.load(Ordering::Acquire);
    }
    ptr::null_mut()
}

/// The number of versions and the bytes (nodes and buffers) of a chain.
///
/// # Safety
/// The chain is detached and owned by the caller, or the caller holds the record's
/// lock.
pub(crate) unsafe fn chain_size(head: *mut OldVersion) -> (i64, i64) {
    let (mut count, mut bytes) = (0i64, 0i64);
    let mut n = head;
    while !n.is_null() {
        // SAFETY: forwarded contract.
        let node = unsafe { &*n };
        count += 1;
        // SAFETY: as above.
        bytes += (NODE_BYTES
            + record::rowbuf_size(unsafe { record::rowbuf_slice(node.data) }.len()))
            as i64;
        n = node.next.load(Ordering::Relaxed);
    }
    (count, bytes)
}

/// Visits the bytes of each version of a chain, newest first, until `f` returns true.
///
/// # Safety
/// As for [`chain_size`].
unsafe fn any_version(head: *mut OldVersion, mut f: impl FnMut(&[u8]) -> bool) -> bool {
    let mut n = head;
    while !n.is_null() {
        // SAFETY: forwarded contract.
        let node = unsafe { &*n };
        // SAFETY: as above.
        if f(unsafe { record::rowbuf_slice(node.data) }) {
            return true;
        }
        n = node.next.load(Ordering::Relaxed);
    }
    false
}

/// Frees a node that was never published.
///
/// # Safety
/// `node` comes from [`OldVersion::alloc`] and nobody else has it.
pub(crate) unsafe fn free_unused(node: *mut OldVersion) {
    // SAFETY: forwarded contract.
    drop(unsafe { Box::from_raw(node) });
}

/// Frees a detached chain with its buffers; returns its bytes.
///
/// # Safety
/// Nobody can reach the chain any more.
pub(crate) unsafe fn free_chain(head: *mut OldVersion) -> usize {
    let mut bytes = 0;
    let mut n = head;
    while !n.is_null() {
        // SAFETY: forwarded contract: we own every node.
        let node = unsafe { Box::from_raw(n) };
        // SAFETY: as above.
        unsafe {
            bytes += NODE_BYTES + record::rowbuf_size(record::rowbuf_slice(node.data).len());
            record::rowbuf_free(node.data);
        }
        n = node.next.load(Ordering::Relaxed);
    }
    bytes
}

/// A row named by a [`Deferred`] item.
#[derive(Clone, Copy)]
pub(crate) struct RowRef {
    /// Slot of the row's table in [`Deferred::tables`].
    pub table: u32,
    pub rowid: RowId,
    pub rec: RecordPtr,
}

/// An index entry of a key a row no longer has.
pub(crate) struct StaleKey {
    pub row: RowRef,
    pub index: Arc<KeyIndex>,
    pub key: Box<[u8]>,
}

/// The work of one commit that waits until no snapshot older than its TID is left.
pub(crate) struct Deferred {
    pub tid: Tid,
    pub tables: Vec<Arc<Table>>,
    /// Updated rows whose replaced versions went into their chains: prune them.
    pub prune: Vec<RowRef>,
    /// Keys updated rows lost: remove their entries unless a version still needed
    /// has the key.
    pub stale: Vec<StaleKey>,
    /// Deleted rows: remove the entries of every key their versions had, unlink them
    /// from the row index and retire them.
    pub unlink: Vec<RowRef>,
}

/// Arena bytes queueing one row takes (for memory checks before install); a stale key
/// takes this plus its key.
pub(crate) const BYTES_PER_ROW: usize = std::mem::size_of::<RowRef>();
pub(crate) const BYTES_PER_STALE_KEY: usize = std::mem::size_of::<StaleKey>() + 16;

/// The horizon queue.
pub(crate) struct HorizonQueue {
    items: crate::sync::SpinLock<VecDeque<Deferred>>,
    /// Items queued (a lock-free emptiness check for committers).
    len: AtomicUsize,
}

impl Default for HorizonQueue {
    fn default() -> Self {
        HorizonQueue {
            items: crate::sync::SpinLock::new(VecDeque::new()),
            len: AtomicUsize::new(0),
        }
    }
}

// SAFETY: items hold record pointers into shared memory, used only under the
// protocol in the module documentation.
unsafe impl Send for Deferred {}

impl HorizonQueue {
    pub(crate) fn push(&self, d: Deferred) {
        let mut q = self.items.lock();
        q.push_back(d);
        self.len.store(q.len(), Ordering::Release);
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The front item if its TID is at or below `horizon`.
    fn pop_ready(&self, horizon: Tid) -> Option<Deferred> {
        let mut q = self.items.lock();
        if q.front().is_some_and(|d| d.tid <= horizon) {
            let d = q.pop_front();
            self.len.store(q.len(), Ordering::Release);
            d
        } else {
            None
        }
    }
}

impl Engine {
    /// Processes up to `max_items` items of the horizon queue whose TID the horizon
    /// has passed; returns how many. Called by committers after their commit (a few
    /// items) and by the background worker (all of them).
    pub fn reclaim_versions(&'static self, max_items: usize) -> usize {
        if self.horizon_queue().len() == 0 {
            return 0;
        }
        let _s = crate::scope::enter();
        let mut done = 0;
        while done < max_items {
            let more = epoch::with_guard(&self.collector, |g| {
                // Pinned before taking the item: see the module invariants.
                let horizon = self.horizon();
                let Some(item) = self.horizon_queue().pop_ready(horizon) else {
                    return false;
                };
                self.process(item, horizon, g);
                true
            });
            if !more {
                break;
            }
            done += 1;
        }
        done
    }

    fn process(&'static self, item: Deferred, horizon: Tid, g: &Guard) {
        let mut garbage = Garbage::default();
        let mut key = Vec::new();
        // Every record an item names is alive: its table is held by the item, and its
        // retirement (this item's or a later one's `unlink`) waits for our guard.
        for r in &item.prune {
            // SAFETY: alive (see above).
            let rec = unsafe { r.rec.get() };
            if rec.older().is_null() {
                continue;
            }
            rec.lock();
            let cut = rec.prune(horizon);
            rec.unlock();
            retire_chain(&item.tables[r.table as usize], cut, &mut garbage);
        }
        for s in &item.stale {
            let table = &item.tables[s.row.table as usize];
            // SAFETY: alive (see above).
            let rec = unsafe { s.row.rec.get() };
            rec.lock();
            let cut = rec.prune(horizon);
            // Does a version some snapshot may still read have the key?
            let mut has = |d: &[u8]| {
                s.index.key_of(&table.layout, d, &mut key).is_ok() && key[..] == s.key[..]
            };
            let cur = rec.data_ptr();
            let absent = rec.version() & record::ABSENT_BIT != 0;
            // SAFETY: we hold the lock: the buffer and chain are stable.
            let held = (!absent && !cur.is_null() && has(unsafe { record::rowbuf_slice(cur) }))
                // SAFETY: as above.
                || unsafe { any_version(rec.older(), &mut has) };
            if !held && s.index.remove(&s.key, s.row.rowid, g) {
                self.account(-(s.index.entry_bytes(s.key.len()) as isize));
            }
            rec.unlock();
            retire_chain(table, cut, &mut garbage);
        }
        for r in &item.unlink {
            let table = &item.tables[r.table as usize];
            // SAFETY: alive (see above); this unlink is what retires it, below.
            let rec = unsafe { r.rec.get() };
            rec.lock();
            // Every version is past the horizon (the row is deleted at or below it):
            // the whole chain goes, with the entries of its keys.
            let cut = rec.take_chain();
            rec.unlock();
            if !cut.is_null() {
                let indexes = table.indexes();
                // SAFETY: detached by us; nobody else can reach it.
                unsafe {
                    any_version(cut, |d| {
                        for index in indexes.iter() {
                            if index.key_of(&table.layout, d, &mut key).is_ok()
                                && index.remove(&key, r.rowid, g)
                            {
                                self.account(-(index.entry_bytes(key.len()) as isize));
                            }
                        }
                        false
                    })
                };
            }
            retire_chain(table, cut, &mut garbage);
            if table.rows.remove(r.rowid, g).is_some() {
                garbage.push(Retired::Record(r.rec.0));
            }
        }
        garbage.retire(self, g);
        drop(item);
    }
}

/// Retires a chain detached from a record of `table`, and takes it out of the
/// table's version figures.
pub(crate) fn retire_chain(table: &Table, cut: *mut OldVersion, garbage: &mut Garbage) {
    if cut.is_null() {
        return;
    }
    // SAFETY: detached by the caller under the record's lock; nobody can link it again.
    let (n, bytes) = unsafe { chain_size(cut) };
    table.account_versions(-n, -bytes);
    garbage.push(Retired::Chain(cut));
}
