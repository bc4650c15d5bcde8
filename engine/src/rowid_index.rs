//! The row-id index: row id -> record, as a radix tree of slot arrays.
//!
//! Row ids are handed out by a counter per table (see `Table::next_rowid`), so they are
//! dense: an array indexed by row id finds a record in a few dependent loads, where a
//! skip list takes some 40 node hops, and costs 8 bytes per row id where a skip-list
//! node costs about 48. A full scan walks the arrays in order.
//!
//! Shape: leaves of [`LEAF_SLOTS`] record slots (leaf `n` holds row ids
//! `n * LEAF_SLOTS ..`); directories of [`FANOUT`] child pointers above them, indexed
//! by leaf number. The root is a leaf (height 1, leaf 0) or a directory of height `h`,
//! covering leaves below `FANOUT^(h-1)`; it grows by one level when a larger row id is
//! inserted (the old root becomes child 0 of a new root). Nodes are allocated on
//! demand. A leaf has one slot less than a power of two so that with its count it
//! fills a power-of-two size class exactly (8 KiB): with 1024 slots it took 8,200
//! bytes, a 10 KiB block, 2 bytes per row of slack.
//!
//! Concurrency (readers take no lock, writers only compare-and-swap):
//! * The root word is the root node's address plus its height in the low bits, so a
//!   reader sees a node and the height that goes with it in one load.
//! * A child or slot is published with a release store or CAS after the node or
//!   record is initialised; readers load with acquire.
//! * A leaf whose row ids are all handed out (below the largest row id inserted) and
//!   whose slots are all empty again is reclaimed: its `live` count (entries, plus
//!   inserters about to add one) drops to zero, the remover marks it [`DEAD`], unlinks
//!   it and retires it through the epoch collector, so readers that reached it under
//!   a guard can still read it (its slots are all empty). An inserter never adds to a
//!   dead leaf: it counts itself in `live` first, by CAS, which fails once `DEAD` is
//!   set, and then puts a new leaf in the dead one's place.
//! * Directories are freed only with the index.
//! * A slot holds a live record until it is emptied (the caller retires records
//!   through the epoch collector after unlinking them): scans read the records they
//!   are about to visit, to prefetch their row buffers.

use crate::ids::RowId;
use crate::record::{Record, RecordPtr};
use crossbeam_epoch::Guard;
use std::alloc::Layout;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Bits of a leaf number each directory level resolves.
const BITS: u32 = 10;
/// Children per directory.
pub const FANOUT: usize = 1 << BITS;
const MASK: u64 = FANOUT as u64 - 1;
/// Slots per leaf.
pub const LEAF_SLOTS: usize = FANOUT - 1;
/// The tallest tree: leaf numbers (below 2^64 / LEAF_SLOTS < 2^55) are all below
/// `FANOUT^(MAX_HEIGHT - 1)`.
const MAX_HEIGHT: u32 = 7;
/// Height bits in the root word (nodes are at least 8-byte aligned).
const HEIGHT_MASK: usize = 0b111;
/// Set in a leaf's `live` count once it is being reclaimed.
const DEAD: u32 = 1 << 31;

/// Bytes of the index per row id in use (its slot), for the engine's accounting.
pub const SLOT_BYTES: usize = std::mem::size_of::<usize>();

#[repr(C)]
struct Leaf {
    /// Entries in `slots`, plus inserters about to add one; [`DEAD`] once reclaimed.
    live: AtomicU32,
    slots: [AtomicPtr<Record>; LEAF_SLOTS],
}

const _: () = assert!(std::mem::size_of::<Leaf>() == 8 * FANOUT);

#[repr(C)]
struct Dir {
    /// Children: directories one level down, or leaves below height 2.
    children: [AtomicPtr<u8>; FANOUT],
}

/// A new node of type `T`, zeroed (empty slots and children, `live` 0).
fn new_node<T>() -> *mut T {
    let layout = Layout::new::<T>();
    // SAFETY: a non-zero-sized layout; an all-zero Leaf or Dir is valid (atomics).
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    p.cast()
}

/// # Safety
/// `p` came from [`new_node::<T>`] and nobody can reach it any more.
unsafe fn free_node<T>(p: *mut T) {
    // SAFETY: forwarded contract; same layout as allocated.
    unsafe { std::alloc::dealloc(p.cast(), Layout::new::<T>()) }
}

/// The number of the leaf holding `rowid`'s slot.
#[inline]
fn leaf_no(rowid: u64) -> u64 {
    rowid / LEAF_SLOTS as u64
}

/// Row ids a tree of height `h` covers: those of leaves below `FANOUT^(h-1)`.
fn covers(h: u32, rowid: u64) -> bool {
    BITS * (h - 1) >= 64 || leaf_no(rowid) >> (BITS * (h - 1)) == 0
}

/// The index of `rowid`'s entry at `level` (1: the leaf's slot; above: the child of a
/// directory of that height).
#[inline]
fn index_at(rowid: u64, level: u32) -> usize {
    if level == 1 {
        (rowid % LEAF_SLOTS as u64) as usize
    } else {
        ((leaf_no(rowid) >> (BITS * (level - 2))) & MASK) as usize
    }
}

/// The first row id of the leaf holding `rowid`'s slot.
fn leaf_base(rowid: u64) -> u64 {
    leaf_no(rowid) * LEAF_SLOTS as u64
}

/// The row-id index of one table.
pub struct RowIdIndex {
    /// The root node's address | its height (0 with a null address: empty).
    root: AtomicUsize,
    /// Entries (row ids with a record).
    len: AtomicUsize,
    /// The largest row id ever inserted: leaves wholly below it are complete.
    max_rowid: AtomicU64,
}

impl Default for RowIdIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl RowIdIndex {
    pub fn new() -> Self {
        RowIdIndex {
            root: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            max_rowid: AtomicU64::new(0),
        }
    }

    fn load_root(&self) -> (*mut u8, u32) {
        let w = self.root.load(Ordering::Acquire);
        ((w & !HEIGHT_MASK) as *mut u8, (w & HEIGHT_MASK) as u32)
    }

    /// The leaf holding `rowid`'s slot, if it exists.
    fn find_leaf(&self, rowid: u64) -> Option<&Leaf> {
        let (mut node, h) = self.load_root();
        if node.is_null() || !covers(h, rowid) {
            return None;
        }
        for level in (2..=h).rev() {
            // SAFETY: a published directory (the root or a child), alive while the
            // caller's guard is held (directories live as long as the index).
            let dir = unsafe { &*(node as *const Dir) };
            node = dir.children[index_at(rowid, level)].load(Ordering::Acquire);
            if node.is_null() {
                return None;
            }
        }
        // SAFETY: a published leaf, retired only through the epoch collector, so alive
        // while the caller's guard is held.
        Some(unsafe { &*(node as *const Leaf) })
    }

    /// Grows the tree until it covers `rowid`; returns the root and its height.
    fn grow_to(&self, rowid: u64) -> (*mut u8, u32) {
        loop {
            let (node, h) = self.load_root();
            if !node.is_null() && covers(h, rowid) {
                return (node, h);
            }
            let (new, nh) = if node.is_null() {
                // The smallest tree that covers it, with its path created below.
                let mut nh = 1;
                while !covers(nh, rowid) {
                    nh += 1;
                }
                let n: *mut u8 = if nh == 1 {
                    new_node::<Leaf>().cast()
                } else {
                    new_node::<Dir>().cast()
                };
                (n, nh)
            } else {
                let d = new_node::<Dir>();
                // SAFETY: our new directory, not yet published.
                unsafe { (*d).children[0].store(node, Ordering::Relaxed) };
                (d.cast::<u8>(), h + 1)
            };
            debug_assert!(nh <= MAX_HEIGHT);
            let old = node as usize | h as usize;
            if self
                .root
                .compare_exchange(
                    old,
                    new as usize | nh as usize,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                // SAFETY: never published.
                unsafe {
                    if nh == 1 {
                        free_node(new.cast::<Leaf>());
                    } else {
                        free_node(new.cast::<Dir>());
                    }
                }
            }
        }
    }

    /// The leaf for `rowid`, created if needed, with this inserter counted in its
    /// `live` (the caller adds an entry, or takes itself out of `live` again).
    fn leaf_for_insert(&self, rowid: u64) -> &Leaf {
        'retry: loop {
            let (mut node, h) = self.grow_to(rowid);
            let mut parent: Option<&AtomicPtr<u8>> = None;
            for level in (2..=h).rev() {
                // SAFETY: a published directory; directories live as long as the index.
                let dir = unsafe { &*(node as *const Dir) };
                let slot = &dir.children[index_at(rowid, level)];
                let mut child = slot.load(Ordering::Acquire);
                if child.is_null() {
                    let fresh: *mut u8 = if level == 2 {
                        new_node::<Leaf>().cast()
                    } else {
                        new_node::<Dir>().cast()
                    };
                    match slot.compare_exchange(
                        std::ptr::null_mut(),
                        fresh,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => child = fresh,
                        Err(winner) => {
                            // SAFETY: never published.
                            unsafe {
                                if level == 2 {
                                    free_node(fresh.cast::<Leaf>());
                                } else {
                                    free_node(fresh.cast::<Dir>());
                                }
                            }
                            child = winner;
                        }
                    }
                }
                parent = Some(slot);
                node = child;
            }
            // SAFETY: a published leaf, alive while the caller's guard is held.
            let leaf = unsafe { &*(node as *const Leaf) };
            let mut n = leaf.live.load(Ordering::Acquire);
            loop {
                if n & DEAD != 0 {
                    // Being reclaimed: put a new leaf in its place (the reclaimer
                    // retires the dead one whether or not it unlinked it itself).
                    let Some(slot) = parent else {
                        // It was the root when we loaded the root word; the tree has
                        // grown since (a root leaf is never reclaimed).
                        continue 'retry;
                    };
                    let fresh = new_node::<Leaf>();
                    if slot
                        .compare_exchange(node, fresh.cast(), Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        // SAFETY: never published.
                        unsafe { free_node(fresh) };
                    }
                    continue 'retry;
                }
                match leaf
                    .live
                    .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return leaf,
                    Err(cur) => n = cur,
                }
            }
        }
    }

    /// Links `rowid` -> `rec` (replacing an entry for `rowid`, which callers never
    /// have: row ids are inserted once).
    pub fn insert(&self, rowid: RowId, rec: RecordPtr, guard: &Guard) {
        let leaf = self.leaf_for_insert(rowid.0);
        let old = leaf.slots[index_at(rowid.0, 1)].swap(rec.0 as *mut Record, Ordering::AcqRel);
        if old.is_null() {
            self.len.fetch_add(1, Ordering::Relaxed);
        } else {
            leaf.live.fetch_sub(1, Ordering::AcqRel);
        }
        self.raise_max(rowid.0, guard);
    }

    /// Notes that `rowid` was inserted. When that moves the largest row id into a later
    /// leaf, the leaf it leaves is complete: reclaimed now if it is empty already (its
    /// last row was removed while row ids in it were still to come, and no removal
    /// would come back to it).
    fn raise_max(&self, rowid: u64, guard: &Guard) {
        let prev = self.max_rowid.fetch_max(rowid, Ordering::Relaxed);
        if prev != 0 && leaf_no(prev) < leaf_no(rowid) {
            if let Some(leaf) = self.find_leaf(prev) {
                if leaf.live.load(Ordering::Acquire) == 0 {
                    self.reclaim(prev, leaf, guard);
                }
            }
        }
    }

    pub fn get(&self, rowid: RowId, _guard: &Guard) -> Option<RecordPtr> {
        let leaf = self.find_leaf(rowid.0)?;
        let p = leaf.slots[index_at(rowid.0, 1)].load(Ordering::Acquire);
        (!p.is_null()).then_some(RecordPtr(p))
    }

    /// The record of `rowid`, linking `make()` first if there is none. Returns the
    /// record and the one `make` built, if it ran: the caller frees that one when it is
    /// not the record returned (another thread linked `rowid` first).
    pub fn get_or_insert_with(
        &self,
        rowid: RowId,
        make: impl FnOnce() -> RecordPtr,
        guard: &Guard,
    ) -> (RecordPtr, Option<RecordPtr>) {
        if let Some(r) = self.get(rowid, guard) {
            return (r, None);
        }
        let leaf = self.leaf_for_insert(rowid.0);
        let slot = &leaf.slots[index_at(rowid.0, 1)];
        let cur = slot.load(Ordering::Acquire);
        if !cur.is_null() {
            leaf.live.fetch_sub(1, Ordering::AcqRel);
            return (RecordPtr(cur), None);
        }
        let made = make();
        match slot.compare_exchange(
            std::ptr::null_mut(),
            made.0 as *mut Record,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.len.fetch_add(1, Ordering::Relaxed);
                self.raise_max(rowid.0, guard);
                (made, Some(made))
            }
            Err(winner) => {
                leaf.live.fetch_sub(1, Ordering::AcqRel);
                (RecordPtr(winner), Some(made))
            }
        }
    }

    /// Unlinks `rowid`; the caller retires the record through the collector.
    pub fn remove(&self, rowid: RowId, guard: &Guard) -> Option<RecordPtr> {
        let leaf = self.find_leaf(rowid.0)?;
        let p = leaf.slots[index_at(rowid.0, 1)].swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return None;
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        if leaf.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reclaim(rowid.0, leaf, guard);
        }
        Some(RecordPtr(p))
    }

    /// Reclaims `leaf` (holding `rowid`'s slot), found empty, if every row id it
    /// covers has been handed out and nobody counted in since.
    fn reclaim(&self, rowid: u64, leaf: &Leaf, guard: &Guard) {
        // (The last leaf is partial: 2^64 is not a multiple of LEAF_SLOTS.)
        let last = leaf_base(rowid).saturating_add(LEAF_SLOTS as u64 - 1);
        if last >= self.max_rowid.load(Ordering::Relaxed) {
            return; // row ids still to come: the leaf will be used again
        }
        let (root, h) = self.load_root();
        if h < 2 || !covers(h, rowid) {
            return; // the root leaf stays
        }
        if leaf
            .live
            .compare_exchange(0, DEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // an inserter counted in
        }
        // Find the parent slot and unlink the leaf, unless an inserter replaced it.
        let mut node = root;
        for level in (3..=h).rev() {
            // SAFETY: a published directory; directories live as long as the index.
            let dir = unsafe { &*(node as *const Dir) };
            node = dir.children[index_at(rowid, level)].load(Ordering::Acquire);
            if node.is_null() {
                break;
            }
        }
        let me = leaf as *const Leaf as *mut u8;
        if !node.is_null() {
            // SAFETY: the directory of height 2 on the leaf's path.
            let dir = unsafe { &*(node as *const Dir) };
            let _ = dir.children[index_at(rowid, 2)].compare_exchange(
                me,
                std::ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let dead = SendPtr(me.cast::<Leaf>());
        // SAFETY: the leaf is unlinked (by us or by an inserter that replaced it) and
        // nobody adds to it again (DEAD); readers that reached it hold guards older
        // than this deferral. The function runs inside an engine scope in some process
        // sharing the arena, where `dealloc` routes the block back to it.
        unsafe {
            guard.defer_unchecked(move || {
                let dead = dead;
                free_node(dead.0);
            })
        };
    }

    /// Visits entries with row id greater than `after` in order until `f` returns false.
    pub fn scan_after(
        &self,
        after: Option<RowId>,
        _guard: &Guard,
        mut f: impl FnMut(RowId, RecordPtr) -> bool,
    ) {
        let start = match after {
            Some(a) if a.0 == u64::MAX => return,
            Some(a) => a.0 + 1,
            None => 0,
        };
        let (root, h) = self.load_root();
        if root.is_null() || !covers(h, start) {
            return;
        }
        walk(root, h, 0, start, &mut f);
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees every record still linked. For the owner's `Drop` only.
    ///
    /// # Safety
    /// No other thread or process may reach this index or its records any more.
    pub unsafe fn free_all_records(&mut self) {
        // SAFETY: exclusive access (caller's contract), so no guard is needed.
        let guard = unsafe { crossbeam_epoch::unprotected() };
        // (Freed as visited: the walk reads only slots ahead of the one it hands over.)
        self.scan_after(None, guard, |_, r| {
            // SAFETY: the record is reachable only through this index (contract).
            unsafe { crate::record::record_free(r.0) };
            true
        });
        // The slots go empty (so nothing is freed twice); Drop frees the nodes.
        self.len.store(0, Ordering::Relaxed);
        let (root, h) = self.load_root();
        if !root.is_null() {
            // SAFETY: exclusive access.
            unsafe { clear_slots(root, h) };
        }
    }
}

/// Visits the entries of the subtree `node` (of height `h`, first row id `base`) from
/// row id `start` on; false once `f` asked to stop.
fn walk(
    node: *mut u8,
    h: u32,
    base: u64,
    start: u64,
    f: &mut impl FnMut(RowId, RecordPtr) -> bool,
) -> bool {
    if h == 1 {
        // SAFETY: a published leaf, alive while the caller's guard is held.
        let leaf = unsafe { &*(node as *const Leaf) };
        let from = start.saturating_sub(base).min(LEAF_SLOTS as u64) as usize;
        for i in from..LEAF_SLOTS {
            // Scans read the records and row buffers of consecutive slots: ask for
            // them ahead (a record PREFETCH_RECORD slots ahead, the buffer of the one
            // PREFETCH_BUFFER ahead, whose record has arrived by then).
            if let Some(s) = leaf.slots.get(i + PREFETCH_RECORD) {
                crate::prefetch::read(s.load(Ordering::Relaxed) as *const u8);
            }
            if let Some(s) = leaf.slots.get(i + PREFETCH_BUFFER) {
                // (Acquire: the record's fields are read.)
                let r = s.load(Ordering::Acquire);
                if !r.is_null() {
                    // SAFETY: a record linked in a leaf reached under the caller's
                    // guard, so not freed.
                    crate::prefetch::read(unsafe { (*r).data_ptr() });
                }
            }
            let p = leaf.slots[i].load(Ordering::Acquire);
            if !p.is_null() && !f(RowId(base + i as u64), RecordPtr(p)) {
                return false;
            }
        }
        return true;
    }
    // SAFETY: a published directory; directories live as long as the index.
    let dir = unsafe { &*(node as *const Dir) };
    // Row ids under each child: LEAF_SLOTS times FANOUT^(h-2) leaves (a directory's
    // subtree covers less than 2^64 row ids below the root's height).
    let span = (LEAF_SLOTS as u64).saturating_mul(1u64 << (BITS * (h - 2)).min(63));
    let from = if start > base {
        ((start - base) / span).min(FANOUT as u64) as usize
    } else {
        0
    };
    for (i, child) in dir.children.iter().enumerate().skip(from) {
        let c = child.load(Ordering::Acquire);
        if c.is_null() {
            continue;
        }
        let child_base = base.saturating_add((i as u64).saturating_mul(span));
        if !walk(c, h - 1, child_base, start, f) {
            return false;
        }
    }
    true
}

/// How far ahead of a scan records and row buffers are prefetched, in slots.
const PREFETCH_RECORD: usize = 8;
const PREFETCH_BUFFER: usize = 4;

/// Empties every slot of the subtree `node` of height `h`.
///
/// # Safety
/// Exclusive access to the index.
unsafe fn clear_slots(node: *mut u8, h: u32) {
    // SAFETY: forwarded contract; nodes of this tree.
    unsafe {
        if h == 1 {
            let leaf = &*(node as *const Leaf);
            for s in &leaf.slots {
                s.store(std::ptr::null_mut(), Ordering::Relaxed);
            }
            leaf.live.store(0, Ordering::Relaxed);
            return;
        }
        let dir = &*(node as *const Dir);
        for c in &dir.children {
            let c = c.load(Ordering::Relaxed);
            if !c.is_null() {
                clear_slots(c, h - 1);
            }
        }
    }
}

/// Frees the subtree `node` of height `h`.
///
/// # Safety
/// Nobody may reach the subtree any more.
unsafe fn free_tree(node: *mut u8, h: u32) {
    // SAFETY: forwarded contract.
    unsafe {
        if h == 1 {
            free_node(node.cast::<Leaf>());
            return;
        }
        let dir = node.cast::<Dir>();
        for c in &(*dir).children {
            let c = c.load(Ordering::Relaxed);
            if !c.is_null() {
                free_tree(c, h - 1);
            }
        }
        free_node(dir);
    }
}

impl Drop for RowIdIndex {
    fn drop(&mut self) {
        let (root, h) = self.load_root();
        if !root.is_null() {
            // SAFETY: `&mut self` in Drop: nobody else reaches the index. Records are
            // the owner's to free (see `free_all_records`); leaves retired earlier
            // are unlinked and freed by the collector.
            unsafe { free_tree(root, h) };
        }
    }
}

/// A pointer moved into a deferred function.
struct SendPtr(*mut Leaf);
// SAFETY: the leaf is in memory shared by all threads and processes of the engine.
unsafe impl Send for SendPtr {}

impl RowIdIndex {
    /// Bytes of the tree's nodes (directories and leaves, as arena blocks).
    pub fn node_bytes(&self) -> usize {
        fn bytes(node: *mut u8, h: u32) -> usize {
            if node.is_null() {
                return 0;
            }
            if h == 1 {
                return crate::arena::block_size(std::mem::size_of::<Leaf>());
            }
            // SAFETY: a published directory; directories live as long as the index.
            let dir = unsafe { &*(node as *const Dir) };
            crate::arena::block_size(std::mem::size_of::<Dir>())
                + dir
                    .children
                    .iter()
                    .map(|c| bytes(c.load(Ordering::Acquire), h - 1))
                    .sum::<usize>()
        }
        let (root, h) = self.load_root();
        bytes(root, h)
    }
}

#[cfg(test)]
impl RowIdIndex {
    /// Leaves linked in the tree.
    fn leaf_count(&self) -> usize {
        fn count(node: *mut u8, h: u32) -> usize {
            if node.is_null() {
                return 0;
            }
            if h == 1 {
                return 1;
            }
            // SAFETY: a published directory of a tree only the test uses.
            let dir = unsafe { &*(node as *const Dir) };
            dir.children
                .iter()
                .map(|c| count(c.load(Ordering::Acquire), h - 1))
                .sum()
        }
        let (root, h) = self.load_root();
        count(root, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows inserted and removed one at a time (each removed before the next row id
    /// is used, as in a queue table or inserts that roll back) leave no empty leaves
    /// behind.
    #[test]
    fn leaves_emptied_before_their_last_row_id_are_reclaimed() {
        let c = crossbeam_epoch::Collector::new();
        let h = c.register();
        let ix = RowIdIndex::new();
        for id in 1..=10 * FANOUT as u64 {
            let g = h.pin();
            ix.insert(RowId(id), rec(id), &g);
            assert_eq!(ix.remove(RowId(id), &g), Some(rec(id)));
        }
        assert!(ix.leaf_count() <= 2, "{} leaves", ix.leaf_count());
        assert!(ix.is_empty());
        // And the index still works across the reclaimed range.
        let g = h.pin();
        ix.insert(RowId(20_000), rec(20_000), &g);
        assert_eq!(ix.get(RowId(20_000), &g), Some(rec(20_000)));
    }
    use std::collections::BTreeMap;

    /// The record of row id `n`: one real record per row id, made on first use and
    /// kept for the whole test run (scans read the records they visit: prefetching).
    fn rec(n: u64) -> RecordPtr {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        static RECS: OnceLock<Mutex<HashMap<u64, usize>>> = OnceLock::new();
        let mut m = RECS.get_or_init(Default::default).lock().unwrap();
        let addr = *m
            .entry(n)
            .or_insert_with(|| Box::into_raw(Record::new_absent()) as usize);
        RecordPtr(addr as *const Record)
    }

    #[test]
    fn insert_get_remove_scan_across_levels() {
        let c = crossbeam_epoch::Collector::new();
        let h = c.register();
        let g = h.pin();
        let ix = RowIdIndex::new();
        let ids: Vec<u64> = vec![
            1,
            2,
            1023,
            1024,
            1025,
            5000,
            (LEAF_SLOTS * FANOUT) as u64 - 1,
            (LEAF_SLOTS * FANOUT) as u64,
            1 << 20,
            (1 << 20) + 7,
            1 << 30,
            1 << 40,
            u64::MAX - 1,
        ];
        for &i in &ids {
            ix.insert(RowId(i), rec(i), &g);
        }
        assert_eq!(ix.len(), ids.len());
        for &i in &ids {
            assert_eq!(ix.get(RowId(i), &g), Some(rec(i)));
        }
        assert_eq!(ix.get(RowId(3), &g), None);
        assert_eq!(ix.get(RowId(1 << 50), &g), None);
        let mut seen = Vec::new();
        ix.scan_after(None, &g, |r, p| {
            assert_eq!(p, rec(r.0));
            seen.push(r.0);
            true
        });
        assert_eq!(seen, ids);
        let mut seen = Vec::new();
        ix.scan_after(Some(RowId(1024)), &g, |r, _| {
            seen.push(r.0);
            seen.len() < 3
        });
        assert_eq!(seen, vec![1025, 5000, (LEAF_SLOTS * FANOUT) as u64 - 1]);
        let mut seen = Vec::new();
        ix.scan_after(Some(RowId(1 << 40)), &g, |r, _| {
            seen.push(r.0);
            true
        });
        assert_eq!(seen, vec![u64::MAX - 1]);
        assert_eq!(ix.remove(RowId(1024), &g), Some(rec(1024)));
        assert_eq!(ix.remove(RowId(1024), &g), None);
        assert_eq!(ix.get(RowId(1024), &g), None);
        assert_eq!(ix.len(), ids.len() - 1);
        let (r, made) = ix.get_or_insert_with(RowId(77), || rec(77), &g);
        assert_eq!((r, made), (rec(77), Some(rec(77))));
        let (r, made) = ix.get_or_insert_with(RowId(77), || rec(78), &g);
        assert_eq!((r, made), (rec(77), None));
    }

    /// A leaf and a directory each fill one size class exactly: dense row ids cost 8
    /// bytes each in the index (8,192 bytes per 1,023 row ids, and a directory per
    /// 1,024 leaves).
    #[test]
    fn dense_row_ids_take_a_slot_each_and_no_slack() {
        let c = crossbeam_epoch::Collector::new();
        let h = c.register();
        let g = h.pin();
        let ix = RowIdIndex::new();
        let n = 3 * LEAF_SLOTS as u64;
        for id in 0..n {
            ix.insert(RowId(id), rec(id), &g);
        }
        assert_eq!(ix.leaf_count(), 3);
        assert_eq!(crate::arena::block_size(std::mem::size_of::<Leaf>()), 8192);
        assert_eq!(ix.node_bytes(), 3 * 8192 + 8192);
        let mut seen = 0;
        ix.scan_after(None, &g, |r, _| {
            assert_eq!(r.0, seen);
            seen += 1;
            true
        });
        assert_eq!(seen, n);
    }

    /// Random inserts and removes against a model, with leaves emptied (and
    /// reclaimed) and filled again.
    #[test]
    fn matches_a_model() {
        let c = crossbeam_epoch::Collector::new();
        let h = c.register();
        let ix = RowIdIndex::new();
        let mut model = BTreeMap::new();
        let mut x = 12345u64;
        let mut next = 1u64;
        for round in 0..60_000u64 {
            let g = h.pin();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || model.is_empty() {
                let id = next;
                next += 1 + (x >> 40) % 3;
                ix.insert(RowId(id), rec(id), &g);
                model.insert(id, ());
            } else {
                // Remove mostly old rows, so whole leaves empty out.
                let k = *model
                    .keys()
                    .nth(((x >> 20) % 4) as usize % model.len())
                    .unwrap();
                assert_eq!(ix.remove(RowId(k), &g), Some(rec(k)));
                model.remove(&k);
            }
            if round % 5000 == 0 {
                let mut seen = Vec::new();
                ix.scan_after(None, &g, |r, _| {
                    seen.push(r.0);
                    true
                });
                assert_eq!(seen, model.keys().copied().collect::<Vec<_>>());
            }
        }
        let g = h.pin();
        assert_eq!(ix.len(), model.len());
        for &k in model.keys() {
            assert_eq!(ix.get(RowId(k), &g), Some(rec(k)));
        }
    }

    /// Threads insert fresh row ids while others remove old ones (emptying leaves)
    /// and readers scan: every row inserted and not removed is found.
    #[test]
    fn concurrent_inserts_removes_and_scans() {
        let c = crossbeam_epoch::Collector::new();
        let ix = RowIdIndex::new();
        let next = AtomicU64::new(1);
        let removed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let h = c.register();
                    for _ in 0..40_000 {
                        let g = h.pin();
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        ix.insert(RowId(id), rec(id), &g);
                    }
                });
            }
            s.spawn(|| {
                let h = c.register();
                // Remove row ids in order, behind the inserters.
                let mut id = 1;
                while id < 70_000 {
                    let g = h.pin();
                    if ix.remove(RowId(id), &g).is_some() {
                        id += 1;
                        removed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            s.spawn(|| {
                let h = c.register();
                for _ in 0..50 {
                    let g = h.pin();
                    let mut last = 0;
                    ix.scan_after(None, &g, |r, p| {
                        assert!(r.0 > last);
                        assert_eq!(p, rec(r.0));
                        last = r.0;
                        true
                    });
                }
            });
        });
        let h = c.register();
        let g = h.pin();
        assert_eq!(ix.len(), 80_000 - 69_999);
        for id in 70_000..80_001 {
            assert_eq!(ix.get(RowId(id), &g), Some(rec(id)), "{id}");
        }
        for id in [1, 1000, 50_000, 69_999] {
            assert_eq!(ix.get(RowId(id), &g), None);
        }
    }
}
