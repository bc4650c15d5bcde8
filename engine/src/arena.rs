//! The arena: a process-safe allocator over one contiguous region (PostgreSQL's main
//! shared memory segment, or a `MAP_SHARED` mapping in tests).
//!
//! Layout of the region: the [`Arena`] header, a page map (one word per page), then
//! the heap, cut in pages of [`PAGE`] bytes.
//! * **Page heap.** Runs of pages come from a bump pointer and return to one
//!   address-ordered free list in which neighbours coalesce, first fit splits, and a
//!   run that ends at the bump pointer is given back to it.
//! * **Large requests** (above [`SMALL_MAX`]) take whole pages.
//! * **Small requests** round up to a size class (4 classes per power of two, at most
//!   25% internal waste) and are served from *spans*: page runs cut into blocks of one
//!   class, with a header in front. A class keeps a list of its spans that have free
//!   blocks; a span whose last block is freed goes back to the page heap (unless it is
//!   the class's only one), so memory freed by one size is usable by every other.
//!
//! Invariants:
//! * every address stored in the region is absolute: the region is mapped at the same
//!   address in every process that uses it (inherited across `fork`);
//! * every lock is an atomic inside the region (see [`crate::sync`]); a class lock and
//!   the page-heap lock are never held together;
//! * `page map[p]` is the span header address for every page of a live span, 0
//!   otherwise; it is written before the span is published under its class lock;
//! * a span is in its class's list iff it has a free block (`used < nblocks`);
//! * a block handed out for a layout with `align > MIN_ALIGN` stores the address of
//!   its underlying block in the word just before the returned pointer.

use crate::sync::SpinLock;
use std::alloc::Layout;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Every block is aligned to this; class sizes are multiples of it.
pub const MIN_ALIGN: usize = 16;
/// Granule of the page heap.
pub const PAGE: usize = 16 << 10;

/// How far past its latest allocation from the bump pointer a process maps the heap
/// into its page tables (see [`Arena::map_ahead`]).
const MAP_AHEAD: usize = 1 << 20;
/// The range of the heap this process mapped last (see [`Arena::map_ahead`]),
/// `MAPPED_FROM..MAPPED_TO`, if `MAPPED_IN` is this process's fork generation. (A
/// stale or racing value only costs page faults.)
static MAPPED_FROM: AtomicUsize = AtomicUsize::new(0);
static MAPPED_TO: AtomicUsize = AtomicUsize::new(0);
static MAPPED_IN: AtomicU64 = AtomicU64::new(u64::MAX);
/// Set when `MADV_POPULATE_WRITE` failed: mapping ahead is off in this process.
static MAP_AHEAD_OFF: AtomicBool = AtomicBool::new(false);
/// Largest request served from spans.
pub const SMALL_MAX: usize = 32 << 10;
/// Smallest request that takes whole pages.
pub const LARGE_MIN: usize = SMALL_MAX + 1;
const NUM_CLASSES: usize = 4 + 4 * 9; // 16..=64 by 16, then 4 per power of two up to 32 KiB
const SPAN_HEADER: usize = 64;
/// A span holds at least this many blocks.
const MIN_BLOCKS: usize = 8;
const MAGIC: u64 = 0x6d65_6d66_6477_4152; // "memfdwAR"

/// Figures about the arena, all in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Size of the heap.
    pub capacity: usize,
    /// Bytes taken from the bump pointer (high-water mark of the page heap).
    pub reserved: usize,
    /// Bytes handed out (rounded to class sizes or pages).
    pub in_use: usize,
    /// Bytes in free page runs (part of `reserved`). The rest of `reserved - in_use` is
    /// free blocks in spans and span headers.
    pub large_free: usize,
}

#[repr(C)]
pub struct Arena {
    magic: u64,
    start: usize,
    end: usize,
    page_map: usize,
    bump: AtomicUsize,
    in_use: AtomicUsize,
    large_free: AtomicUsize,
    /// Pages below this address beyond the bump pointer are resident already
    /// ([`Arena::prefault_ahead`]).
    prefaulted: AtomicUsize,
    /// The address-ordered free run list; each run starts with a [`FreeRun`].
    runs: SpinLock<RunList>,
    /// Per class: head of the list of spans with free blocks (0 = empty).
    classes: [SpinLock<usize>; NUM_CLASSES],
}

/// Head of the free run list (0 = empty), and a hint: the run the last free ended in
/// (0 = none). Runs freed in address order (a big write set's spans, say) then find
/// their place from the hint instead of walking the list from its head.
#[derive(Default)]
struct RunList {
    head: usize,
    hint: usize,
}

#[repr(C)]
struct FreeRun {
    size: usize,
    next: usize,
}

/// Header of a span; all fields are protected by the span's class lock.
#[repr(C)]
struct Span {
    pages: usize,
    nblocks: usize,
    used: usize,
    /// Intrusive list of freed blocks.
    free: usize,
    /// Next never-used block (blocks are cut lazily) and the end of the blocks.
    carve: usize,
    end: usize,
    next: usize,
    prev: usize,
}

/// Returns (class index, class size) for a small request of `size` bytes.
const fn class_of(size: usize) -> (usize, usize) {
    let size = if size == 0 { 1 } else { size };
    if size <= 64 {
        let c = size.div_ceil(16);
        return (c - 1, c * 16);
    }
    let p = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize; // 2^p < size <= 2^(p+1)
    let step = 1usize << (p - 2);
    let k = (size - 1 - (1usize << p)) / step;
    (4 + (p - 6) * 4 + k, (1usize << p) + (k + 1) * step)
}

/// The bytes a block for a request of `size` bytes takes: its size class, or whole
/// pages for a large request (for reports of memory by component).
pub fn block_size(size: usize) -> usize {
    if size <= SMALL_MAX {
        class_of(size).1
    } else {
        size.next_multiple_of(PAGE)
    }
}

/// Largest request served through the per-thread caches of the routing allocator: an
/// engine transaction (752 bytes, one per statement) and a B+tree node (1 KiB) are
/// in it.
pub(crate) const CACHED_MAX: usize = 1024;
/// Size classes up to [`CACHED_MAX`].
pub(crate) const CACHED_CLASSES: usize = class_of(CACHED_MAX).0 + 1;
/// Most blocks one [`Arena::free_batch`] call takes.
pub(crate) const FREE_BATCH_MAX: usize = 64;

/// Class index and class size of a request of `size` bytes (alignment at most
/// [`MIN_ALIGN`]) if it is served through the per-thread caches.
#[inline]
pub(crate) fn cached_class(size: usize) -> Option<(usize, usize)> {
    (size <= CACHED_MAX).then(|| class_of(size))
}

/// Size of the blocks of class `class`.
pub(crate) fn class_size(class: usize) -> usize {
    if class < 4 {
        return (class + 1) * 16;
    }
    let p = (class - 4) / 4 + 6;
    let k = (class - 4) % 4;
    (1usize << p) + (k + 1) * (1usize << (p - 2))
}

/// Pages of a span of class size `csize`.
fn span_pages(csize: usize) -> usize {
    (MIN_BLOCKS * csize + SPAN_HEADER).div_ceil(PAGE)
}

impl Arena {
    /// Builds an empty arena over `len` bytes at `region`.
    ///
    /// # Safety
    /// `region` must be valid for reads and writes of `len` bytes for as long as the
    /// arena is used, aligned to `MIN_ALIGN`, not used for anything else, and mapped at
    /// the same address in every process that will use the arena.
    pub unsafe fn init(region: *mut u8, len: usize) -> &'static Arena {
        let header = std::mem::size_of::<Arena>().next_multiple_of(MIN_ALIGN);
        assert_eq!(region as usize % MIN_ALIGN, 0, "arena region misaligned");
        let end = region as usize + len;
        let map = region as usize + header;
        let max_pages = len / PAGE;
        let start = (map + max_pages * 8).next_multiple_of(PAGE);
        assert!(start + 4 * PAGE <= end, "arena region too small");
        let arena = region as *mut Arena;
        // SAFETY: the caller gives us the region; header and page map fit (checked).
        unsafe {
            ptr::write_bytes(map as *mut u8, 0, max_pages * 8);
            ptr::addr_of_mut!((*arena).magic).write(MAGIC);
            ptr::addr_of_mut!((*arena).start).write(start);
            ptr::addr_of_mut!((*arena).end).write(end);
            ptr::addr_of_mut!((*arena).page_map).write(map);
            ptr::addr_of_mut!((*arena).bump).write(AtomicUsize::new(start));
            ptr::addr_of_mut!((*arena).in_use).write(AtomicUsize::new(0));
            ptr::addr_of_mut!((*arena).large_free).write(AtomicUsize::new(0));
            ptr::addr_of_mut!((*arena).prefaulted).write(AtomicUsize::new(start));
            ptr::addr_of_mut!((*arena).runs).write(SpinLock::new(RunList::default()));
            let classes = ptr::addr_of_mut!((*arena).classes) as *mut SpinLock<usize>;
            for i in 0..NUM_CLASSES {
                classes.add(i).write(SpinLock::new(0));
            }
            &*arena
        }
    }

    /// Makes up to `step` more bytes of the pages just past the bump pointer resident
    /// (`MADV_POPULATE_WRITE`), keeping at most `ahead` bytes resident beyond it; returns
    /// the bytes made resident now. The pages' contents do not change (it is safe
    /// while other processes allocate and write them); what moves out of the writers'
    /// way is the kernel's allocation and zeroing of each page on its first write, a
    /// tenth of a large insert into new memory. (Each process still takes a light
    /// fault to map a page the first time it touches it.) The background worker calls
    /// it between its other duties. Errors (a kernel without `MADV_POPULATE_WRITE`,
    /// memory the kernel will not commit) are returned; nothing is changed then.
    pub fn prefault_ahead(&self, ahead: usize, step: usize) -> std::io::Result<usize> {
        let bump = self.bump.load(Ordering::Relaxed);
        let target = (bump + ahead).min(self.end) / PAGE * PAGE;
        let from = self.prefaulted.load(Ordering::Relaxed).max(bump);
        if from >= target {
            return Ok(0);
        }
        let to = (from + step)
            .min(target)
            .next_multiple_of(PAGE)
            .min(self.end);
        self.populate(from, to)?;
        self.prefaulted.fetch_max(to, Ordering::Relaxed);
        Ok(to - from)
    }

    /// Faults the pages of `[from, to)` into this process's page tables, allocating
    /// those not yet resident, with `MADV_POPULATE_WRITE`. `from` and `to` must be
    /// page-aligned bounds inside the heap (asserted).
    fn populate(&self, from: usize, to: usize) -> std::io::Result<()> {
        assert!(
            self.start <= from && from <= to && to <= self.end && from.is_multiple_of(4096),
            "populate outside the heap"
        );
        // SAFETY: [from, to) lies inside the arena's heap (asserted), which the region's
        // mapping covers (see `init`) writably, and is page-aligned.
        unsafe { crate::pages::populate(from, to) }
    }

    /// True if `p` points into this arena's heap.
    #[inline]
    pub fn contains(&self, p: *const u8) -> bool {
        let a = p as usize;
        a >= self.start && a < self.end
    }

    pub fn is_valid(&self) -> bool {
        self.magic == MAGIC
    }

    pub fn stats(&self) -> ArenaStats {
        ArenaStats {
            capacity: self.end - self.start,
            reserved: self.bump.load(Ordering::Relaxed) - self.start,
            in_use: self.in_use.load(Ordering::Relaxed),
            large_free: self.large_free.load(Ordering::Relaxed),
        }
    }

    /// Bytes still available from the bump pointer.
    pub fn unreserved(&self) -> usize {
        self.end - self.bump.load(Ordering::Relaxed)
    }

    fn map_slot(&self, addr: usize) -> &AtomicUsize {
        let page = (addr - self.start) / PAGE;
        // SAFETY: the page map has an entry for every heap page (see `init`).
        unsafe { &*((self.page_map + page * 8) as *const AtomicUsize) }
    }

    // ---- page heap ----

    fn bump(&self, size: usize) -> usize {
        let mut cur = self.bump.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(size).filter(|n| *n <= self.end) else {
                return 0;
            };
            match self
                .bump
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.map_ahead(cur, next, self.end);
                    return cur;
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// Makes this process's page tables map `[from, upto)` (a run just taken from the
    /// bump pointer or from a free run) and up to [`MAP_AHEAD`] bytes beyond, not past
    /// `limit` (the end of the heap, or of the free run), with one
    /// `MADV_POPULATE_WRITE`, unless the range it mapped last holds them already.
    ///
    /// Every process maps each page of the shared region itself, at its first touch:
    /// a page fault per 4 KiB (1.2 us each; 46,000 of them in a million-row insert).
    /// Populating pages that are resident already (the background worker makes the
    /// heap past the bump pointer so, see [`Arena::prefault_ahead`]; freed runs are)
    /// only fills page-table entries, a range at a time. Changes no byte.
    fn map_ahead(&self, from: usize, upto: usize, limit: usize) {
        if MAP_AHEAD_OFF.load(Ordering::Relaxed) {
            return;
        }
        let generation = crate::epoch::fork_generation();
        // A parent process's range counts as nothing mapped (a fork starts without the
        // parent's page tables of shared mappings).
        if MAPPED_IN.load(Ordering::Relaxed) != generation {
            MAPPED_IN.store(generation, Ordering::Relaxed);
            MAPPED_FROM.store(0, Ordering::Relaxed);
            MAPPED_TO.store(0, Ordering::Relaxed);
        }
        let (lo, hi) = (
            MAPPED_FROM.load(Ordering::Relaxed),
            MAPPED_TO.load(Ordering::Relaxed),
        );
        if lo <= from && upto <= hi {
            return;
        }
        // Extend the last range when the run starts inside it (runs taken one after
        // another); otherwise map a new one.
        let (lo, start) = if lo <= from && from < hi {
            (lo, hi)
        } else {
            let f = from / PAGE * PAGE;
            (f, f)
        };
        let end = (upto + MAP_AHEAD)
            .next_multiple_of(PAGE)
            .min(limit.max(upto));
        if start >= end {
            return;
        }
        if let Err(e) = self.populate(start, end) {
            // Pages are then mapped at their first touch, as without this. Not
            // supported (Linux before 5.14): off for good; otherwise (out of memory,
            // a signal) tried again at the next run.
            if e.raw_os_error() == Some(libc::EINVAL) {
                MAP_AHEAD_OFF.store(true, Ordering::Relaxed);
            }
            return;
        }
        // (Threads of one process racing here only cost page faults or a second call.)
        MAPPED_FROM.store(lo, Ordering::Relaxed);
        MAPPED_TO.store(end, Ordering::Relaxed);
    }

    /// A run of `size` bytes (a multiple of PAGE), or 0.
    fn alloc_pages(&self, size: usize) -> usize {
        let mut taken = None;
        {
            let mut runs = self.runs.lock();
            runs.hint = 0;
            let mut link: *mut usize = &mut runs.head;
            // SAFETY: the list holds free runs only, each with a header; we hold its lock.
            unsafe {
                while *link != 0 {
                    let run = *link as *mut FreeRun;
                    if (*run).size >= size {
                        let whole = (*run).size;
                        let rest = whole - size;
                        if rest > 0 {
                            let tail = (run as usize + size) as *mut FreeRun;
                            tail.write(FreeRun {
                                size: rest,
                                next: (*run).next,
                            });
                            *link = tail as usize;
                        } else {
                            *link = (*run).next;
                        }
                        self.large_free.fetch_sub(size, Ordering::Relaxed);
                        taken = Some((run as usize, whole));
                        break;
                    }
                    link = &mut (*run).next;
                }
            }
        }
        if let Some((run, whole)) = taken {
            // (Outside the lock: other processes may take runs meanwhile.)
            self.map_ahead(run, run + size, run + whole);
            return run;
        }
        self.bump(size)
    }

    /// # Safety
    /// `run` must be a run of `size` bytes from `alloc_pages` that is no longer used.
    unsafe fn free_pages(&self, run: usize, size: usize) {
        let mut runs = self.runs.lock();
        self.large_free.fetch_add(size, Ordering::Relaxed);
        let (mut start, mut len) = (run, size);
        // SAFETY: list invariants as in `alloc_pages`; the run is ours. The hint, when
        // set, is a node of the list (see `RunList`).
        unsafe {
            let mut prev: *mut FreeRun = ptr::null_mut();
            let mut link: *mut usize = &mut runs.head;
            if runs.hint != 0 && runs.hint < start {
                prev = runs.hint as *mut FreeRun;
                link = &mut (*prev).next;
            }
            while *link != 0 && *link < start {
                prev = *link as *mut FreeRun;
                link = &mut (*prev).next;
            }
            let mut next = *link;
            if next != 0 && start + len == next {
                len += (*(next as *mut FreeRun)).size;
                next = (*(next as *mut FreeRun)).next;
            }
            let merged_into_prev = !prev.is_null() && prev as usize + (*prev).size == start;
            if merged_into_prev {
                start = prev as usize;
                len += (*prev).size;
                (*prev).size = len;
                (*prev).next = next;
            } else {
                (start as *mut FreeRun).write(FreeRun { size: len, next });
                *link = start;
            }
            // The last run, if it ends at the bump pointer, goes back to it.
            if next == 0
                && self
                    .bump
                    .compare_exchange(start + len, start, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.large_free.fetch_sub(len, Ordering::Relaxed);
                if merged_into_prev {
                    let mut l: *mut usize = &mut runs.head;
                    while *l != start {
                        l = &mut (*(*l as *mut FreeRun)).next;
                    }
                    *l = 0;
                } else {
                    *link = 0;
                }
                runs.hint = 0;
            } else {
                runs.hint = start;
            }
        }
    }

    // ---- spans ----

    fn new_span(&self, csize: usize) -> usize {
        let pages = span_pages(csize);
        let s = self.alloc_pages(pages * PAGE);
        if s == 0 {
            return 0;
        }
        let nblocks = (pages * PAGE - SPAN_HEADER) / csize;
        // SAFETY: a fresh run of `pages` pages owned by us.
        unsafe {
            (s as *mut Span).write(Span {
                pages,
                nblocks,
                used: 0,
                free: 0,
                carve: s + SPAN_HEADER,
                end: s + SPAN_HEADER + nblocks * csize,
                next: 0,
                prev: 0,
            });
        }
        for p in 0..pages {
            self.map_slot(s + p * PAGE).store(s, Ordering::Relaxed);
        }
        s
    }

    /// # Safety
    /// The caller holds the class lock whose list head is `head`; `s` is not in a list.
    unsafe fn push_span(head: &mut usize, s: usize) {
        // SAFETY: span headers of this class, protected by the held lock.
        unsafe {
            let span = s as *mut Span;
            (*span).prev = 0;
            (*span).next = *head;
            if *head != 0 {
                (*(*head as *mut Span)).prev = s;
            }
            *head = s;
        }
    }

    /// # Safety
    /// As for `push_span`, with `s` in the list.
    unsafe fn unlink_span(head: &mut usize, s: usize) {
        // SAFETY: as above.
        unsafe {
            let span = s as *mut Span;
            let (prev, next) = ((*span).prev, (*span).next);
            if prev == 0 {
                *head = next;
            } else {
                (*(prev as *mut Span)).next = next;
            }
            if next != 0 {
                (*(next as *mut Span)).prev = prev;
            }
            (*span).next = 0;
            (*span).prev = 0;
        }
    }

    fn alloc_small(&self, size: usize) -> *mut u8 {
        let (class, csize) = class_of(size);
        let mut out = [0usize; 1];
        if self.alloc_batch(class, csize, &mut out) == 0 {
            return ptr::null_mut();
        }
        out[0] as *mut u8
    }

    /// Takes up to `out.len()` blocks of size class `class` (of size `csize`, from
    /// [`cached_class`]), holding the class lock once per span list visit instead of
    /// once per block; new spans are made outside it. Returns how many it took (fewer
    /// only when the arena is exhausted). The blocks count as in use.
    pub(crate) fn alloc_batch(&self, class: usize, csize: usize, out: &mut [usize]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let mut head = self.classes[class].lock();
            if *head == 0 {
                drop(head);
                let s = self.new_span(csize);
                if s == 0 {
                    break;
                }
                head = self.classes[class].lock();
                // SAFETY: our new span, not yet in any list.
                unsafe { Self::push_span(&mut head, s) };
            }
            while n < out.len() && *head != 0 {
                let s = *head;
                // SAFETY: the head span has a free block (list invariant); we hold its
                // lock.
                out[n] = unsafe {
                    let span = s as *mut Span;
                    let b = if (*span).free != 0 {
                        let b = (*span).free;
                        (*span).free = *(b as *const usize);
                        b
                    } else {
                        let b = (*span).carve;
                        (*span).carve += csize;
                        debug_assert!((*span).carve <= (*span).end);
                        b
                    };
                    (*span).used += 1;
                    if (*span).used == (*span).nblocks {
                        Self::unlink_span(&mut head, s);
                    }
                    b
                };
                n += 1;
            }
            drop(head);
        }
        self.in_use.fetch_add(n * csize, Ordering::Relaxed);
        n
    }

    /// # Safety
    /// `block` must come from `alloc_small(size)` and not be used again.
    unsafe fn free_small(&self, block: *mut u8, size: usize) {
        let (class, csize) = class_of(size);
        // SAFETY: forwarded contract.
        unsafe { self.free_batch(class, csize, &[block as usize]) }
    }

    /// Returns `blocks`, all of size class `class` (size `csize`), under one
    /// acquisition of the class lock. Spans left empty go back to the page heap after
    /// the lock is released (a class lock and the page-heap lock are never held
    /// together).
    ///
    /// # Safety
    /// Every block must come from this arena's class `class` (`alloc_small` or
    /// `alloc_batch`), and none may be used again. At most [`FREE_BATCH_MAX`] blocks.
    pub(crate) unsafe fn free_batch(&self, class: usize, csize: usize, blocks: &[usize]) {
        assert!(blocks.len() <= FREE_BATCH_MAX);
        let mut released = [(0usize, 0usize); FREE_BATCH_MAX];
        let mut nreleased = 0;
        let mut head = self.classes[class].lock();
        for &block in blocks {
            let s = self.map_slot(block).load(Ordering::Relaxed);
            debug_assert_ne!(s, 0, "small block outside any span");
            // SAFETY: the span owning the block, protected by its class lock.
            unsafe {
                let span = s as *mut Span;
                (block as *mut usize).write((*span).free);
                (*span).free = block;
                let was_full = (*span).used == (*span).nblocks;
                (*span).used -= 1;
                if was_full {
                    Self::push_span(&mut head, s);
                }
                // An empty span goes back to the page heap unless it is the only one
                // left.
                if (*span).used == 0 && !(*head == s && (*span).next == 0) {
                    Self::unlink_span(&mut head, s);
                    released[nreleased] = (s, (*span).pages);
                    nreleased += 1;
                }
            }
        }
        drop(head);
        self.in_use
            .fetch_sub(blocks.len() * csize, Ordering::Relaxed);
        for &(s, pages) in &released[..nreleased] {
            for p in 0..pages {
                self.map_slot(s + p * PAGE).store(0, Ordering::Relaxed);
            }
            // SAFETY: the span has no live block and is in no list.
            unsafe { self.free_pages(s, pages * PAGE) };
        }
    }

    // ---- blocks ----

    fn alloc_block(&self, size: usize) -> *mut u8 {
        if size <= SMALL_MAX {
            return self.alloc_small(size);
        }
        let bytes = size.next_multiple_of(PAGE);
        let p = self.alloc_pages(bytes);
        if p != 0 {
            self.in_use.fetch_add(bytes, Ordering::Relaxed);
        }
        p as *mut u8
    }

    /// # Safety
    /// `block` must come from `alloc_block(size)` on this arena and not be used again.
    unsafe fn free_block(&self, block: *mut u8, size: usize) {
        if size <= SMALL_MAX {
            // SAFETY: forwarded contract.
            return unsafe { self.free_small(block, size) };
        }
        let bytes = size.next_multiple_of(PAGE);
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { self.free_pages(block as usize, bytes) };
    }

    /// Allocates memory for `layout`; null if the arena is exhausted.
    pub fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            return self.alloc_block(layout.size());
        }
        let Some(total) = layout.size().checked_add(layout.align()) else {
            return ptr::null_mut();
        };
        let raw = self.alloc_block(total);
        if raw.is_null() {
            return raw;
        }
        // raw is MIN_ALIGN-aligned and align is a multiple of MIN_ALIGN, so the aligned
        // pointer lies in (raw, raw + align] and leaves room for the back pointer.
        let p = (raw as usize + MIN_ALIGN).next_multiple_of(layout.align());
        // SAFETY: p - 8 >= raw + 8 and p + size <= raw + total.
        unsafe { ((p - 8) as *mut usize).write(raw as usize) };
        p as *mut u8
    }

    /// # Safety
    /// `p` must come from `self.alloc(layout)` with the same layout.
    pub unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if layout.align() <= MIN_ALIGN {
            // SAFETY: forwarded contract.
            unsafe { self.free_block(p, layout.size()) };
        } else {
            // SAFETY: `alloc` stored the block address just before `p`.
            let raw = unsafe { *((p as usize - 8) as *const usize) } as *mut u8;
            // SAFETY: forwarded contract.
            unsafe { self.free_block(raw, layout.size() + layout.align()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(len: usize) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        (unsafe { std::alloc::alloc_zeroed(layout) }, layout)
    }

    fn lay(n: usize) -> Layout {
        Layout::from_size_align(n, 16).unwrap()
    }

    #[test]
    fn prefaulting_keeps_a_window_past_the_bump_pointer_and_changes_nothing() {
        let len = 64 << 20;
        let (p, layout) = region(len);
        // SAFETY: a fresh region, used by this arena only.
        let a = unsafe { Arena::init(p, len) };
        let block = a.alloc(lay(3 * PAGE));
        assert!(!block.is_null());
        // SAFETY: the block is ours, 3 pages long.
        unsafe { ptr::write_bytes(block, 0xAB, 3 * PAGE) };
        let bump = a.stats().reserved;
        // A window of 4 MB, 1 MB per call.
        let mut total = 0;
        loop {
            let n = a.prefault_ahead(4 << 20, 1 << 20).unwrap();
            assert!(n <= 1 << 20);
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 4 << 20);
        assert_eq!(a.stats().reserved, bump, "prefaulting allocates nothing");
        // SAFETY: as above.
        assert!(unsafe { std::slice::from_raw_parts(block, 3 * PAGE) }
            .iter()
            .all(|&b| b == 0xAB));
        // The window moves with the bump pointer.
        let big = a.alloc(lay(2 << 20));
        assert!(!big.is_null());
        assert_eq!(a.prefault_ahead(4 << 20, 8 << 20).unwrap(), 2 << 20);
        // SAFETY: the blocks came from this arena with these layouts.
        unsafe {
            a.dealloc(big, lay(2 << 20));
            a.dealloc(block, lay(3 * PAGE));
            std::alloc::dealloc(p, layout);
        }
    }

    /// Pages of `[p, p + len)` resident in this process (`mincore`).
    fn resident_pages(p: usize, len: usize) -> usize {
        let page = 4096;
        let start = p / page * page;
        let n = (p + len).div_ceil(page) - start / page;
        let mut vec = vec![0u8; n];
        // SAFETY: the range lies inside a mapping of this process; `vec` has one byte
        // per page.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, n * page, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    #[test]
    fn allocating_from_the_bump_pointer_maps_the_heap_ahead() {
        let len = 64 << 20;
        // A fresh anonymous mapping: no page is resident before it is touched.
        // SAFETY: a new private anonymous mapping; no other effect.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as *mut u8;
        // SAFETY: the first page of the new mapping; populating changes no byte.
        if unsafe { libc::madvise(p.cast(), 4096, libc::MADV_POPULATE_WRITE) } != 0 {
            // MADV_POPULATE_WRITE is Linux 5.14+; without it nothing is mapped ahead.
            // SAFETY: our mapping.
            unsafe { libc::munmap(p.cast(), len) };
            return;
        }
        // The process-wide record of the last range mapped may name a range of a
        // region another test unmapped, now reused by this one.
        MAPPED_FROM.store(0, Ordering::Relaxed);
        MAPPED_TO.store(0, Ordering::Relaxed);
        // SAFETY: a fresh region, used by this arena only.
        let a = unsafe { Arena::init(p, len) };
        let block = a.alloc(lay(3 * PAGE)) as usize;
        assert!(block != 0);
        // Without a touch, the block and the next MAP_AHEAD bytes are resident; far
        // beyond is not.
        assert_eq!(
            resident_pages(block, 3 * PAGE + MAP_AHEAD),
            (3 * PAGE + MAP_AHEAD) / 4096
        );
        assert_eq!(resident_pages(block + (16 << 20), 1 << 20), 0);
        // SAFETY: the block is ours.
        unsafe { ptr::write_bytes(block as *mut u8, 0xAB, 3 * PAGE) };
        // The next allocations within the mapped range map nothing more; one past it
        // maps further, and no byte of the earlier block changed.
        let big = a.alloc(lay(2 << 20)) as usize;
        assert_eq!(
            resident_pages(big, (2 << 20) + MAP_AHEAD),
            ((2 << 20) + MAP_AHEAD) / 4096
        );
        // SAFETY: as above.
        assert!(
            unsafe { std::slice::from_raw_parts(block as *const u8, 3 * PAGE) }
                .iter()
                .all(|&b| b == 0xAB)
        );
        // A free run: a process that has mapped nothing yet (as a new backend) maps
        // the run it takes and MAP_AHEAD bytes beyond, within the free run.
        let run = a.alloc(lay(8 << 20)) as usize;
        let _after = a.alloc(lay(PAGE));
        // SAFETY: the run came from this arena with this layout.
        unsafe { a.dealloc(run as *mut u8, lay(8 << 20)) };
        // Unmap all of the free run but its first page (its free-run header): its pages
        // are then not resident.
        // SAFETY: private anonymous memory of the free run, past its header.
        let r = unsafe {
            libc::madvise(
                (run + PAGE) as *mut libc::c_void,
                (8 << 20) - PAGE,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(resident_pages(run + PAGE, (8 << 20) - PAGE), 0);
        MAPPED_FROM.store(0, Ordering::Relaxed);
        MAPPED_TO.store(0, Ordering::Relaxed);
        let again = a.alloc(lay(1 << 20)) as usize;
        assert_eq!(again, run, "first fit");
        assert_eq!(resident_pages(run, 2 << 20), (2 << 20) / 4096);
        assert_eq!(resident_pages(run + (3 << 20), 5 << 20), 0);
        // SAFETY: the blocks came from this arena with these layouts.
        unsafe {
            a.dealloc(again as *mut u8, lay(1 << 20));
            a.dealloc(big as *mut u8, lay(2 << 20));
            a.dealloc(block as *mut u8, lay(3 * PAGE));
            libc::munmap(p as *mut libc::c_void, len);
        }
    }

    #[test]
    fn classes_are_monotonic_and_cover() {
        let mut last = class_of(1);
        for size in 1..=SMALL_MAX {
            let (c, s) = class_of(size);
            assert!(c < NUM_CLASSES);
            assert!(s >= size && s % MIN_ALIGN == 0, "size {size} -> {s}");
            assert!(s <= size + size / 4 + 16, "too much waste for {size}: {s}");
            assert!(c >= last.0 && s >= last.1);
            assert_eq!(class_size(c), s, "class {c}");
            if c == last.0 {
                assert_eq!(s, last.1);
            }
            last = (c, s);
        }
        assert_eq!(class_of(SMALL_MAX).0, NUM_CLASSES - 1);
    }

    #[test]
    fn alloc_free_reuse_alignment_and_exhaustion() {
        let len = 1 << 20;
        let (r, l) = region(len);
        // SAFETY: fresh region owned by this test.
        let arena = unsafe { Arena::init(r, len) };
        let a = arena.alloc(lay(100));
        assert!(arena.contains(a));
        let b = arena.alloc(Layout::from_size_align(100, 128).unwrap());
        assert_eq!(b as usize % 128, 0);
        // SAFETY: same layouts as allocated.
        unsafe {
            arena.dealloc(a, lay(100));
            arena.dealloc(b, Layout::from_size_align(100, 128).unwrap());
        }
        assert_eq!(arena.stats().in_use, 0);
        assert_eq!(arena.alloc(lay(100)), a, "freed block is reused");
        let mut n = 0;
        loop {
            let p = arena.alloc(lay(3000));
            if p.is_null() {
                break;
            }
            assert!(arena.contains(p));
            n += 1;
        }
        assert!(n > 200, "{n}");
        // SAFETY: the test owns the region.
        unsafe { std::alloc::dealloc(r, l) };
    }

    #[test]
    fn memory_freed_by_one_size_serves_every_other() {
        let len = 8 << 20;
        let (r, l) = region(len);
        // SAFETY: fresh region owned by this test.
        let arena = unsafe { Arena::init(r, len) };
        for (fill, other) in [(1000, 200), (200, 5000), (48, 100_000), (100_000, 48)] {
            let mut blocks = Vec::new();
            loop {
                let p = arena.alloc(lay(fill));
                if p.is_null() {
                    break;
                }
                blocks.push(p);
            }
            assert!(
                blocks.len() * fill > len / 2,
                "filled only {} x {fill}",
                blocks.len()
            );
            for p in blocks.drain(..) {
                // SAFETY: allocated above.
                unsafe { arena.dealloc(p, lay(fill)) };
            }
            assert_eq!(arena.stats().in_use, 0);
            loop {
                let p = arena.alloc(lay(other));
                if p.is_null() {
                    break;
                }
                blocks.push(p);
            }
            assert!(
                blocks.len() * other > len * 3 / 5,
                "after freeing {fill}-byte blocks only {} x {other} fit",
                blocks.len()
            );
            for p in blocks {
                // SAFETY: allocated above.
                unsafe { arena.dealloc(p, lay(other)) };
            }
            assert_eq!(arena.stats().in_use, 0);
        }
        // SAFETY: the test owns the region.
        unsafe { std::alloc::dealloc(r, l) };
    }

    #[test]
    fn page_runs_coalesce_split_and_return_to_bump() {
        let len = 8 << 20;
        let (r, l) = region(len);
        // SAFETY: fresh region owned by this test.
        let arena = unsafe { Arena::init(r, len) };
        let base = arena.stats().reserved;
        // A vector growing by doubling: each step frees the previous buffer.
        let mut prev: Option<(*mut u8, usize)> = None;
        let mut n = LARGE_MIN;
        while n <= 2 << 20 {
            let p = arena.alloc(lay(n));
            assert!(!p.is_null());
            if let Some((q, m)) = prev.take() {
                // SAFETY: allocated above with this layout.
                unsafe { arena.dealloc(q, lay(m)) };
            }
            prev = Some((p, n));
            n *= 2;
        }
        let (p, m) = prev.unwrap();
        // SAFETY: as above.
        unsafe { arena.dealloc(p, lay(m)) };
        assert_eq!(
            arena.stats().reserved,
            base,
            "everything returned to the bump pointer"
        );
        assert_eq!(arena.stats().large_free, 0);
        let big = 3 * PAGE;
        let a = arena.alloc(lay(big));
        let b = arena.alloc(lay(big));
        let c = arena.alloc(lay(big));
        let fence = arena.alloc(lay(big));
        // SAFETY: as above.
        unsafe {
            arena.dealloc(a, lay(big));
            arena.dealloc(c, lay(big));
            arena.dealloc(b, lay(big));
        }
        assert_eq!(arena.stats().large_free, 3 * big);
        let whole = arena.alloc(lay(3 * big));
        assert_eq!(whole, a, "coalesced run reused");
        // SAFETY: as above.
        unsafe {
            arena.dealloc(whole, lay(3 * big));
            let part = arena.alloc(lay(big));
            assert_eq!(part, a, "first fit splits");
            arena.dealloc(part, lay(big));
            arena.dealloc(fence, lay(big));
        }
        assert_eq!(arena.stats().in_use, 0);
        assert_eq!(arena.stats().reserved, base, "all pages back at the top");
        // SAFETY: the test owns the region.
        unsafe { std::alloc::dealloc(r, l) };
    }

    #[test]
    fn threads_allocating_and_freeing_keep_blocks_intact() {
        let len = 64 << 20;
        let (r, l) = region(len);
        // SAFETY: fresh region owned by this test.
        let arena = unsafe { Arena::init(r, len) };
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    let mut x = 0x1234_5678_9abc_def1u64 ^ t;
                    let mut live: Vec<(usize, usize, u8)> = Vec::new();
                    for i in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if live.len() > 200 || (x.is_multiple_of(3) && !live.is_empty()) {
                            let (p, n, tag) = live.swap_remove((x as usize / 3) % live.len());
                            // SAFETY: our live block of n bytes.
                            let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, n) };
                            assert!(bytes.iter().all(|b| *b == tag), "block overwritten");
                            // SAFETY: as above.
                            unsafe { arena.dealloc(p as *mut u8, lay(n)) };
                        } else {
                            let n = [16, 24, 100, 700, 3000, 20_000, 70_000][(x >> 8) as usize % 7];
                            let p = arena.alloc(lay(n));
                            assert!(!p.is_null());
                            let tag = (i % 251) as u8;
                            // SAFETY: fresh block of n bytes.
                            unsafe { ptr::write_bytes(p, tag, n) };
                            live.push((p as usize, n, tag));
                        }
                    }
                    for (p, n, _) in live {
                        // SAFETY: our live blocks.
                        unsafe { arena.dealloc(p as *mut u8, lay(n)) };
                    }
                });
            }
        });
        assert_eq!(arena.stats().in_use, 0);
        // SAFETY: the test owns the region.
        unsafe { std::alloc::dealloc(r, l) };
    }
}
