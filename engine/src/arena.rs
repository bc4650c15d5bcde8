//! The arena: a process-safe allocator over one contiguous region (PostgreSQL's main
//! shared memory segment, or a `MAP_SHARED` mapping in tests).
//!
//! Layout: the [`Arena`] header sits at the start of the region; the rest is heap.
//! Memory comes from a bump pointer.
//! * Small blocks (below [`LARGE_MIN`]) return to segregated free lists, one per size
//!   class (4 classes per power of two, so at most 25% internal waste); a class's free
//!   blocks are reused only by that class.
//! * Large blocks (multiples of [`LARGE_UNIT`]) return to one address-ordered free list
//!   where neighbours coalesce, first fit splits, and a free block that ends at the
//!   bump pointer is given back to it. Growing vectors (write sets, hash tables) thus
//!   reuse the space of their earlier, smaller buffers.
//!
//! Invariants:
//! * every address stored in the header is absolute: the region is mapped at the same
//!   address in every process that uses it (inherited across `fork`);
//! * every lock is an atomic inside the region (see [`crate::sync`]);
//! * a block handed out for a layout with `align > MIN_ALIGN` stores the address of
//!   its underlying class block in the word just before the returned pointer.

use crate::sync::SpinLock;
use std::alloc::Layout;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every block is aligned to this; class sizes are multiples of it.
pub const MIN_ALIGN: usize = 16;
/// Smallest large block; smaller requests use size classes.
pub const LARGE_MIN: usize = 64 << 10;
/// Granule of large blocks.
pub const LARGE_UNIT: usize = 16 << 10;
const NUM_CLASSES: usize = 4 + 4 * 10; // classes up to LARGE_MIN
const MAGIC: u64 = 0x6d65_6d66_6477_4152; // "memfdwAR"

/// Figures about the arena, all in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// Size of the heap area.
    pub capacity: usize,
    /// Bytes taken from the bump pointer so far (high-water mark).
    pub reserved: usize,
    /// Bytes currently handed out (rounded to class sizes).
    pub in_use: usize,
}

#[repr(C)]
pub struct Arena {
    magic: u64,
    start: usize,
    end: usize,
    bump: AtomicUsize,
    in_use: AtomicUsize,
    /// Head of each class's intrusive free list (0 = empty).
    free: [SpinLock<usize>; NUM_CLASSES],
    /// Head of the address-ordered list of free large blocks (0 = empty). Each free
    /// large block starts with a [`LargeFree`] header.
    large: SpinLock<usize>,
}

#[repr(C)]
struct LargeFree {
    size: usize,
    next: usize,
}

/// Returns (class index, class size) for a request of `size` bytes.
fn class_of(size: usize) -> (usize, usize) {
    let size = size.max(1);
    if size <= 64 {
        let c = size.div_ceil(16);
        return (c - 1, c * 16);
    }
    let p = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize; // 2^p < size <= 2^(p+1)
    let step = 1usize << (p - 2);
    let k = (size - 1 - (1usize << p)) / step;
    (4 + (p - 6) * 4 + k, (1usize << p) + (k + 1) * step)
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
        assert!(len > header + 4096, "arena region too small");
        assert_eq!(region as usize % MIN_ALIGN, 0, "arena region misaligned");
        let start = region as usize + header;
        let arena = region as *mut Arena;
        // SAFETY: the caller gives us the region; the header fits (checked above).
        unsafe {
            ptr::addr_of_mut!((*arena).magic).write(MAGIC);
            ptr::addr_of_mut!((*arena).start).write(start);
            ptr::addr_of_mut!((*arena).end).write(region as usize + len);
            ptr::addr_of_mut!((*arena).bump).write(AtomicUsize::new(start));
            ptr::addr_of_mut!((*arena).in_use).write(AtomicUsize::new(0));
            let free = ptr::addr_of_mut!((*arena).free) as *mut SpinLock<usize>;
            for i in 0..NUM_CLASSES {
                free.add(i).write(SpinLock::new(0));
            }
            ptr::addr_of_mut!((*arena).large).write(SpinLock::new(0));
            &*arena
        }
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
        }
    }

    /// Bytes still available from the bump pointer.
    pub fn unreserved(&self) -> usize {
        self.end - self.bump.load(Ordering::Relaxed)
    }

    fn bump(&self, size: usize) -> *mut u8 {
        let mut cur = self.bump.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(size).filter(|n| *n <= self.end) else {
                return ptr::null_mut();
            };
            match self
                .bump
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return cur as *mut u8,
                Err(seen) => cur = seen,
            }
        }
    }

    fn alloc_block(&self, size: usize) -> *mut u8 {
        if size >= LARGE_MIN {
            return self.alloc_large(size.next_multiple_of(LARGE_UNIT));
        }
        let (class, csize) = class_of(size);
        {
            let mut head = self.free[class].lock();
            if *head != 0 {
                let block = *head;
                // SAFETY: a free block's first word holds the next free block (or 0).
                *head = unsafe { *(block as *const usize) };
                drop(head);
                self.in_use.fetch_add(csize, Ordering::Relaxed);
                return block as *mut u8;
            }
        }
        let p = self.bump(csize);
        if !p.is_null() {
            self.in_use.fetch_add(csize, Ordering::Relaxed);
        }
        p
    }

    fn alloc_large(&self, size: usize) -> *mut u8 {
        {
            let mut head = self.large.lock();
            let mut link: *mut usize = &mut *head;
            // SAFETY: the list holds free large blocks only, each with a header; we
            // hold the list lock.
            unsafe {
                while *link != 0 {
                    let block = *link as *mut LargeFree;
                    if (*block).size >= size {
                        let rest = (*block).size - size;
                        if rest >= LARGE_UNIT {
                            let tail = (block as usize + size) as *mut LargeFree;
                            tail.write(LargeFree {
                                size: rest,
                                next: (*block).next,
                            });
                            *link = tail as usize;
                        } else {
                            *link = (*block).next;
                        }
                        drop(head);
                        let got = size + if rest >= LARGE_UNIT { 0 } else { rest };
                        debug_assert_eq!(got, size, "large sizes are multiples of LARGE_UNIT");
                        self.in_use.fetch_add(size, Ordering::Relaxed);
                        return block as *mut u8;
                    }
                    link = &mut (*block).next;
                }
            }
        }
        let p = self.bump(size);
        if !p.is_null() {
            self.in_use.fetch_add(size, Ordering::Relaxed);
        }
        p
    }

    /// # Safety
    /// `block` must be a large block of `size` bytes that is no longer used.
    unsafe fn free_large(&self, block: *mut u8, size: usize) {
        self.in_use.fetch_sub(size, Ordering::Relaxed);
        let mut head = self.large.lock();
        let (mut start, mut len) = (block as usize, size);
        // SAFETY: list invariants as in `alloc_large`; the block is ours.
        unsafe {
            // Find the neighbours: prev < block < next.
            let mut prev: *mut LargeFree = ptr::null_mut();
            let mut link: *mut usize = &mut *head;
            while *link != 0 && *link < start {
                prev = *link as *mut LargeFree;
                link = &mut (*prev).next;
            }
            let mut next = *link;
            if next != 0 && start + len == next {
                len += (*(next as *mut LargeFree)).size;
                next = (*(next as *mut LargeFree)).next;
            }
            if !prev.is_null() && prev as usize + (*prev).size == start {
                start = prev as usize;
                len += (*prev).size;
                (*prev).size = len;
                (*prev).next = next;
            } else {
                (start as *mut LargeFree).write(LargeFree { size: len, next });
                *link = start;
            }
            // A free block at the top goes back to the bump pointer.
            if next == 0
                && self
                    .bump
                    .compare_exchange(start + len, start, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                if !prev.is_null() && prev as usize == start {
                    // `prev` was merged into this block: unlink it from its predecessor.
                    let mut l: *mut usize = &mut *head;
                    while *l != start {
                        l = &mut (*(*l as *mut LargeFree)).next;
                    }
                    *l = 0;
                } else {
                    *link = 0;
                }
            }
        }
    }

    /// # Safety
    /// `block` must come from `alloc_block(size)` on this arena and not be used again.
    unsafe fn free_block(&self, block: *mut u8, size: usize) {
        if size >= LARGE_MIN {
            // SAFETY: forwarded contract.
            return unsafe { self.free_large(block, size.next_multiple_of(LARGE_UNIT)) };
        }
        let (class, csize) = class_of(size);
        let mut head = self.free[class].lock();
        // SAFETY: the block is ours now and at least MIN_ALIGN bytes long.
        unsafe { (block as *mut usize).write(*head) };
        *head = block as usize;
        drop(head);
        self.in_use.fetch_sub(csize, Ordering::Relaxed);
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

    #[test]
    fn classes_are_monotonic_and_cover() {
        let mut last = class_of(1);
        for size in 1..LARGE_MIN {
            let (c, s) = class_of(size);
            assert!(s >= size && s % MIN_ALIGN == 0, "size {size} -> {s}");
            assert!(s <= size + size / 4 + 16, "too much waste for {size}: {s}");
            assert!(c >= last.0 && s >= last.1);
            if c == last.0 {
                assert_eq!(s, last.1);
            }
            last = (c, s);
        }
    }

    #[test]
    fn alloc_free_reuse_and_alignment() {
        let (r, l) = region(1 << 20);
        // SAFETY: fresh region owned by this test.
        let arena = unsafe { Arena::init(r, 1 << 20) };
        let a = arena.alloc(Layout::from_size_align(100, 8).unwrap());
        assert!(arena.contains(a));
        let b = arena.alloc(Layout::from_size_align(100, 128).unwrap());
        assert_eq!(b as usize % 128, 0);
        assert!(arena.contains(b));
        let used = arena.stats().in_use;
        // SAFETY: same layouts as allocated.
        unsafe {
            arena.dealloc(a, Layout::from_size_align(100, 8).unwrap());
            arena.dealloc(b, Layout::from_size_align(100, 128).unwrap());
        }
        assert_eq!(arena.stats().in_use, 0);
        let c = arena.alloc(Layout::from_size_align(100, 8).unwrap());
        assert_eq!(c, a, "freed block of the same class is reused");
        assert!(used > 0);
        // Exhaustion gives null, never a block outside the region.
        let mut n = 0;
        loop {
            let p = arena.alloc(Layout::from_size_align(4000, 16).unwrap());
            if p.is_null() {
                break;
            }
            assert!(arena.contains(p));
            n += 1;
        }
        assert!(n > 200);
        // SAFETY: the test owns the region.
        unsafe { std::alloc::dealloc(r, l) };
    }

    #[test]
    fn large_blocks_coalesce_split_and_return_to_bump() {
        let len = 8 << 20;
        let (r, l) = region(len);
        // SAFETY: fresh region owned by this test.
        let arena = unsafe { Arena::init(r, len) };
        let lay = |n: usize| Layout::from_size_align(n, 16).unwrap();
        let small = arena.alloc(lay(100));
        let base = arena.stats().reserved;
        // A vector growing by doubling: each step frees the previous buffer.
        let mut sizes = Vec::new();
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
            sizes.push(n);
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
        assert_eq!(arena.stats().in_use, class_of(100).1);
        // Split and coalesce: three neighbours freed out of order merge into one block.
        let a = arena.alloc(lay(LARGE_MIN));
        let b = arena.alloc(lay(LARGE_MIN));
        let c = arena.alloc(lay(LARGE_MIN));
        let guard = arena.alloc(lay(LARGE_MIN));
        // SAFETY: as above.
        unsafe {
            arena.dealloc(a, lay(LARGE_MIN));
            arena.dealloc(c, lay(LARGE_MIN));
            arena.dealloc(b, lay(LARGE_MIN));
        }
        let big = arena.alloc(lay(3 * LARGE_MIN));
        assert_eq!(big, a, "coalesced block reused");
        let reserved = arena.stats().reserved;
        let d = arena.alloc(lay(LARGE_MIN));
        assert_eq!(arena.stats().reserved, reserved + LARGE_MIN);
        // SAFETY: as above.
        unsafe {
            arena.dealloc(big, lay(3 * LARGE_MIN));
            let half = arena.alloc(lay(LARGE_MIN));
            assert_eq!(half, a, "first fit splits");
            arena.dealloc(half, lay(LARGE_MIN));
            arena.dealloc(d, lay(LARGE_MIN));
            arena.dealloc(guard, lay(LARGE_MIN));
            arena.dealloc(small, lay(100));
        }
        assert_eq!(arena.stats().in_use, 0);
        assert_eq!(
            arena.stats().reserved,
            base,
            "all large space back at the top"
        );
        // SAFETY: the test owns the region.
        unsafe { std::alloc::dealloc(r, l) };
    }
}
