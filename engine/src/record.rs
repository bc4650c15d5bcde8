//! Records: one per row, with Silo's 64-bit version word and a pointer to the row's
//! immutable packed bytes.
//!
//! Version word: bit 63 = locked (a committer owns the record), bit 62 = absent (not
//! yet committed, or deleted), bits 0..62 = the commit TID of the last writer.
//!
//! Invariants:
//! * `data` changes only while the record is locked, and is null iff the record is
//!   absent;
//! * a committer stores `data` before it stores the new version word (Release), so a
//!   reader that sees the same unlocked version word before and after loading `data`
//!   has the pair a committer published;
//! * replaced row buffers and removed records are freed through the epoch collector,
//!   so a reader holding a guard may keep using what it loaded;
//! * `older` is the chain of older committed versions a live snapshot may still need
//!   (see [`crate::versions`]), newest first, each present and with a TID below its
//!   successor's. It changes only while the record is locked: an install pushes the
//!   replaced version, a prune cuts versions no snapshot can see. A snapshot at TID
//!   `s` sees the newest version (current or in the chain) with TID <= `s`, and no
//!   row if there is none (the row did not exist yet, or the chain was pruned below
//!   every live snapshot, which then sees a newer version).

use crate::ids::Tid;
use crate::sync::Backoff;
use crate::versions::OldVersion;
use crossbeam_epoch::Guard;
use std::alloc::Layout;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

pub const LOCK_BIT: u64 = 1 << 63;
pub const ABSENT_BIT: u64 = 1 << 62;
pub const TID_MASK: u64 = ABSENT_BIT - 1;

/// 32 bytes, one size class: a record does not repeat its row id (every path to it,
/// the row-id index or an index entry, carries the id).
pub struct Record {
    version: AtomicU64,
    data: AtomicPtr<u8>,
    /// Older committed versions still needed by snapshots (see the module invariants).
    older: AtomicPtr<OldVersion>,
    /// The row lock (see [`crate::rowlock`]): holder's transaction id, plus
    /// [`crate::rowlock::WAITING`] while somebody waits for it.
    pub(crate) owner: AtomicU64,
}

/// A raw pointer to a record in the arena, as stored in indexes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecordPtr(pub *const Record);

// SAFETY: records are shared between threads/processes by design; all mutable state
// in them is atomic.
unsafe impl Send for RecordPtr {}
// SAFETY: as above.
unsafe impl Sync for RecordPtr {}

const _: () = assert!(std::mem::size_of::<Record>() == 32);

impl RecordPtr {
    /// # Safety
    /// The record must not have been freed: the caller holds an epoch guard taken
    /// before the record could have been unlinked, or owns the record.
    #[inline]
    pub unsafe fn get<'a>(self) -> &'a Record {
        // SAFETY: forwarded contract.
        unsafe { &*self.0 }
    }

    pub fn addr(self) -> usize {
        self.0 as usize
    }
}

/// A consistent view of a record: its version (lock bit cleared) and its bytes.
pub struct Snapshot<'g> {
    pub version: u64,
    pub data: Option<&'g [u8]>,
}

impl<'g> Snapshot<'g> {
    pub fn tid(&self) -> Tid {
        Tid(self.version & TID_MASK)
    }
    pub fn absent(&self) -> bool {
        self.version & ABSENT_BIT != 0
    }
    /// The committed row's bytes and TID; None if the row is absent (deleted, or its
    /// inserter has not committed).
    pub fn live(&self) -> Option<(&'g [u8], Tid)> {
        match (self.absent(), self.data) {
            (false, Some(d)) => Some((d, self.tid())),
            _ => None,
        }
    }
}

impl Record {
    /// A new record that is absent (its inserter has not committed).
    pub fn new_absent() -> Box<Record> {
        Self::new_inserted(0)
    }

    /// A new absent record, row-locked by its inserter `owner` (a lock tag) until
    /// it commits or aborts: a transaction needing the same unique key waits for it.
    pub fn new_inserted(owner: u64) -> Box<Record> {
        Box::new(Record {
            version: AtomicU64::new(ABSENT_BIT),
            data: AtomicPtr::new(ptr::null_mut()),
            older: AtomicPtr::new(ptr::null_mut()),
            owner: AtomicU64::new(owner),
        })
    }

    /// A committed record (used when loading data).
    pub fn new_present(tid: Tid, data: *mut u8) -> Box<Record> {
        Box::new(Record {
            version: AtomicU64::new(tid.get() & TID_MASK),
            data: AtomicPtr::new(data),
            older: AtomicPtr::new(ptr::null_mut()),
            owner: AtomicU64::new(0),
        })
    }

    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Reads the latest committed state; waits while a committer installs.
    pub fn read<'g>(&self, _guard: &'g Guard) -> Snapshot<'g> {
        let mut backoff = Backoff::new();
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & LOCK_BIT != 0 {
                backoff.snooze();
                continue;
            }
            let d = self.data.load(Ordering::Acquire);
            let v2 = self.version.load(Ordering::Acquire);
            if v1 == v2 {
                let data = if d.is_null() {
                    None
                } else {
                    // SAFETY: buffers are freed only through the epoch collector and we
                    // hold a guard; `d` was published with this version.
                    Some(unsafe { rowbuf_slice(d) })
                };
                return Snapshot { version: v1, data };
            }
        }
    }

    /// The version a snapshot at `at` sees (its bytes and TID), or None if the row
    /// does not exist for it. Waits while a committer installs, like [`Record::read`].
    #[inline]
    pub fn read_at<'g>(&self, g: &'g Guard, at: Tid) -> Option<(&'g [u8], Tid)> {
        let mut backoff = Backoff::new();
        let (v, d, older) = loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & LOCK_BIT != 0 {
                backoff.snooze();
                continue;
            }
            let d = self.data.load(Ordering::Acquire);
            let o = self.older.load(Ordering::Acquire);
            if self.version.load(Ordering::Acquire) == v1 {
                break (v1, d, o);
            }
        };
        if v & TID_MASK <= at.get() {
            if v & ABSENT_BIT != 0 || d.is_null() {
                return None;
            }
            // SAFETY: published with this version; freed only through the collector
            // and we hold a guard.
            return Some((unsafe { rowbuf_slice(d) }, Tid(v & TID_MASK)));
        }
        crate::versions::visible_in_chain(older, at, g)
    }

    /// Like [`Record::read`], but gives up (None) if the record stays locked for
    /// `max_wait`: for committers, which must not wait without bound while they hold
    /// locks themselves.
    pub fn try_read<'g>(
        &self,
        _guard: &'g Guard,
        max_wait: std::time::Duration,
    ) -> Option<Snapshot<'g>> {
        let start = std::time::Instant::now();
        loop {
            let v1 = self.version.load(Ordering::Acquire);
            if v1 & LOCK_BIT == 0 {
                let d = self.data.load(Ordering::Acquire);
                if self.version.load(Ordering::Acquire) == v1 {
                    let data = if d.is_null() {
                        None
                    } else {
                        // SAFETY: as in `read`.
                        Some(unsafe { rowbuf_slice(d) })
                    };
                    return Some(Snapshot { version: v1, data });
                }
            }
            if start.elapsed() > max_wait {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Spins until this committer holds the lock bit; returns the version it replaced.
    pub fn lock(&self) -> u64 {
        let mut backoff = Backoff::new();
        loop {
            let v = self.version.load(Ordering::Relaxed);
            if v & LOCK_BIT == 0
                && self
                    .version
                    .compare_exchange_weak(v, v | LOCK_BIT, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return v;
            }
            backoff.snooze();
        }
    }

    /// Releases the lock without changing the record.
    pub fn unlock(&self) {
        self.version.fetch_and(!LOCK_BIT, Ordering::Release);
    }

    /// Installs `data` (null = absent) with commit `tid` and releases the lock.
    /// Returns the previous buffer, which the caller retires through the collector;
    /// with `keep` (a node the caller allocated), the previous version goes into the
    /// chain of older versions instead and null is returned (`keep` is freed if there
    /// was no previous present version).
    ///
    /// Must be called by the lock holder.
    pub fn install_and_unlock(
        &self,
        data: *mut u8,
        tid: Tid,
        keep: Option<*mut OldVersion>,
    ) -> *mut u8 {
        let v = self.version.load(Ordering::Relaxed);
        debug_assert!(v & LOCK_BIT != 0);
        // Only the lock holder stores `data` (see the invariants): a load and a
        // store, not an atomic swap.
        let mut old = self.data.load(Ordering::Relaxed);
        self.data.store(data, Ordering::Release);
        if let Some(node) = keep {
            if !old.is_null() && v & ABSENT_BIT == 0 {
                // SAFETY: the caller's node, not yet published; we hold the lock, so
                // the chain head is stable.
                unsafe {
                    (*node).fill(Tid(v & TID_MASK), old, self.older.load(Ordering::Relaxed));
                }
                self.older.store(node, Ordering::Release);
                old = ptr::null_mut();
            } else {
                // SAFETY: never published.
                unsafe { crate::versions::free_unused(node) };
            }
        }
        let absent = if data.is_null() { ABSENT_BIT } else { 0 };
        self.version
            .store((tid.get() & TID_MASK) | absent, Ordering::Release);
        old
    }

    /// The record's buffer pointer, for its owner (drop paths).
    pub fn data_ptr(&self) -> *mut u8 {
        self.data.load(Ordering::Acquire)
    }

    /// The head of the chain of older versions.
    pub(crate) fn older(&self) -> *mut OldVersion {
        self.older.load(Ordering::Acquire)
    }

    /// Detaches the versions no snapshot at `horizon` or later can see (those older
    /// than the newest version with TID <= `horizon`) and returns the detached
    /// chain (null if none), for the caller to retire through the collector.
    ///
    /// Must be called by the lock holder.
    ///
    /// A deleted record keeps at least its newest old version (its last present
    /// one): the unlink that removes the record takes the whole chain with
    /// [`Record::take_chain`] and removes the index entries of its keys.
    pub(crate) fn prune(&self, horizon: Tid) -> *mut OldVersion {
        let v = self.version.load(Ordering::Relaxed);
        debug_assert!(v & LOCK_BIT != 0);
        if v & TID_MASK <= horizon.get() && v & ABSENT_BIT == 0 {
            return self.older.swap(ptr::null_mut(), Ordering::AcqRel);
        }
        crate::versions::cut_below(self.older.load(Ordering::Acquire), horizon)
    }

    /// Detaches the whole chain (a deleted record being unlinked). Must be called by
    /// the lock holder.
    pub(crate) fn take_chain(&self) -> *mut OldVersion {
        debug_assert!(self.version.load(Ordering::Relaxed) & LOCK_BIT != 0);
        self.older.swap(ptr::null_mut(), Ordering::AcqRel)
    }
}

/// A row buffer is its length (u32, native order: rows are at most
/// [`crate::row::MAX_ROW_BYTES`]) followed by the row's bytes, unaligned (rows are
/// read as byte strings). Four bytes rather than eight: a 105-byte row then fits the
/// 112-byte size class instead of the 128-byte one.
const ROWBUF_HEADER: usize = 4;
const _: () = assert!(crate::row::MAX_ROW_BYTES <= u32::MAX as usize);

fn rowbuf_layout(len: usize) -> Layout {
    Layout::from_size_align(ROWBUF_HEADER + len, 8).expect("row size checked by the packer")
}

/// Allocates (in the current allocator: the arena inside an engine scope) an immutable
/// row buffer holding `bytes`. Returns null if the allocation fails.
pub fn rowbuf_new(bytes: &[u8]) -> *mut u8 {
    let layout = rowbuf_layout(bytes.len());
    // SAFETY: layout has non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    if !p.is_null() {
        // SAFETY: p is valid for header + len bytes.
        unsafe {
            (p as *mut u32).write(bytes.len() as u32);
            ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(ROWBUF_HEADER), bytes.len());
        }
    }
    p
}

/// Bytes accounted for a row buffer of `len` payload bytes.
pub fn rowbuf_size(len: usize) -> usize {
    ROWBUF_HEADER + len
}

/// # Safety
/// `p` must be a live buffer from `rowbuf_new`; the slice must not outlive it.
pub unsafe fn rowbuf_slice<'a>(p: *const u8) -> &'a [u8] {
    // SAFETY: forwarded contract; the header holds the length.
    unsafe {
        let len = (p as *const u32).read() as usize;
        std::slice::from_raw_parts(p.add(ROWBUF_HEADER), len)
    }
}

/// # Safety
/// `p` must be a buffer from `rowbuf_new` that nobody can reach any more.
pub unsafe fn rowbuf_free(p: *mut u8) {
    // SAFETY: forwarded contract.
    unsafe {
        let len = (p as *const u32).read() as usize;
        std::alloc::dealloc(p, rowbuf_layout(len));
    }
}

/// Frees a record, its buffer and its chain of older versions; returns the chain's
/// bytes.
///
/// # Safety
/// `r` must be a record from `Record::new_*` that nobody can reach any more.
pub unsafe fn record_free(r: *const Record) -> usize {
    // SAFETY: forwarded contract.
    unsafe {
        let rec = Box::from_raw(r as *mut Record);
        let d = rec.data.load(Ordering::Relaxed);
        if !d.is_null() {
            rowbuf_free(d);
        }
        crate::versions::free_chain(rec.older.load(Ordering::Relaxed))
    }
}
