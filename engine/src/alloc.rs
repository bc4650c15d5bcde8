//! The routing global allocator.
//!
//! * `alloc` inside an engine scope ([`crate::scope`]) takes memory from the installed
//!   arena; outside a scope, or before an arena is installed, from the system.
//! * `dealloc` routes by address: a pointer inside the arena goes back to it, any other
//!   to the system. So shared objects can be dropped from anywhere.
//! * `realloc` keeps a block in the region it came from: a private `Vec` grown inside
//!   an engine scope stays private, a shared one stays shared.
//!
//! * Small arena blocks (up to `arena::CACHED_MAX` bytes) go through a per-thread cache
//!   (in PostgreSQL: per process): a magazine of free blocks per size class, refilled
//!   from and spilled to the arena `REFILL` blocks at a time, so concurrent processes
//!   do not take a class lock (and bounce its cache line) on every allocation. A cache
//!   holds at most `MAGAZINE` blocks per class up to 512 bytes (about 190 KB in all)
//!   and `BIG_MAGAZINE` of the larger classes (about 30 KB), moved `BIG_REFILL` at a
//!   time; they count as in use in the arena's figures. Blocks freed by one process
//!   may serve another's next allocation only after they spill, which is fine:
//!   classes are interchangeable.
//!
//! Binaries that use the engine over shared memory declare
//! `#[global_allocator] static A: memfdw_engine::alloc::RoutingAllocator = RoutingAllocator;`
//! and call [`install_arena`] once, before forking.

use crate::arena::{cached_class, Arena, CACHED_CLASSES, FREE_BATCH_MAX, MIN_ALIGN};
use crate::scope;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Blocks a thread may cache per size class.
const MAGAZINE: usize = 64;
/// Blocks moved between a magazine and the arena at a time.
const REFILL: usize = 32;
const _: () = assert!(REFILL <= FREE_BATCH_MAX && REFILL <= MAGAZINE);
/// The same for classes above 512 bytes (transactions, B+tree nodes): a process needs
/// a few at a time, and should not hold dozens of kilobytes it does not use.
const BIG_MAGAZINE: usize = 8;
const BIG_REFILL: usize = 4;
const _: () = assert!(BIG_REFILL <= BIG_MAGAZINE && BIG_MAGAZINE <= MAGAZINE);

/// How many blocks of `csize` bytes a magazine holds, and moves at a time.
#[inline]
fn magazine_of(csize: usize) -> (usize, usize) {
    if csize > 512 {
        (BIG_MAGAZINE, BIG_REFILL)
    } else {
        (MAGAZINE, REFILL)
    }
}

#[derive(Clone, Copy)]
struct Magazine {
    n: usize,
    blocks: [usize; MAGAZINE],
}

/// This thread's free blocks of `arena`, per cached size class.
///
/// Invariants: every block in a magazine is a block of `arena` of that magazine's class
/// that nobody uses, counted as in use by the arena, owned by this thread of the process
/// whose fork generation is `generation`. A process forked from the owner inherits a
/// copy of the cache: it must forget it, not use it (the blocks are the parent's), and
/// so must a process whose arena was replaced (they are the old arena's).
struct ThreadCache {
    arena: usize,
    generation: u64,
    mags: [Magazine; CACHED_CLASSES],
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = const {
        RefCell::new(ThreadCache {
            arena: 0,
            generation: 0,
            mags: [Magazine { n: 0, blocks: [0; MAGAZINE] }; CACHED_CLASSES],
        })
    };
}

impl ThreadCache {
    /// Makes the cache this thread's cache of `a`, forgetting (not freeing) blocks that
    /// belong to another arena or to the parent process.
    #[inline]
    fn bind(&mut self, a: &'static Arena) {
        let generation = crate::epoch::fork_generation();
        let at = a as *const Arena as usize;
        if self.arena != at || self.generation != generation {
            for m in &mut self.mags {
                m.n = 0;
            }
            self.arena = at;
            self.generation = generation;
        }
    }
}

/// A block of `size` bytes from this thread's cache (refilled from `a` if empty); None
/// if the cache cannot be used here (thread exiting, re-entered).
#[inline]
fn cache_alloc(a: &'static Arena, class: usize, csize: usize) -> Option<*mut u8> {
    CACHE
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            c.bind(a);
            let m = &mut c.mags[class];
            if m.n == 0 {
                let (_, refill) = magazine_of(csize);
                m.n = a.alloc_batch(class, csize, &mut m.blocks[..refill]);
                if m.n == 0 {
                    return Some(ptr::null_mut());
                }
            }
            m.n -= 1;
            if m.n > 0 {
                prefetch_for_write(m.blocks[m.n - 1], csize);
            }
            Some(m.blocks[m.n] as *mut u8)
        })
        .ok()
        .flatten()
}

/// Asks the CPU to bring the first and last cache lines of the block of `csize` bytes
/// at `addr` (the block this thread's next allocation of its class returns) into its
/// cache for writing. A thread that fills fresh blocks one after another (rows of an
/// insert, their records) then finds them there, instead of stalling its next atomic
/// instruction until the previous block's stores have fetched their lines.
#[inline(always)]
fn prefetch_for_write(addr: usize, csize: usize) {
    crate::prefetch::write(addr as *const u8);
    crate::prefetch::write((addr + csize.min(512) - 1) as *const u8);
}

/// Puts block `p` of class `class` into this thread's cache (spilling the older half to
/// `a` if full); false if the cache cannot be used here.
#[inline]
fn cache_free(a: &'static Arena, p: *mut u8, class: usize, csize: usize) -> bool {
    CACHE
        .try_with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return false;
            };
            c.bind(a);
            let m = &mut c.mags[class];
            let (cap, refill) = magazine_of(csize);
            if m.n == cap {
                // SAFETY: cached blocks are free blocks of this class of `a` (invariant).
                unsafe { a.free_batch(class, csize, &m.blocks[..refill]) };
                m.blocks.copy_within(refill..cap, 0);
                m.n -= refill;
            }
            m.blocks[m.n] = p as usize;
            m.n += 1;
            true
        })
        .unwrap_or(false)
}

/// Returns this thread's cached blocks to the arena. PostgreSQL processes call it at
/// exit (with [`crate::epoch::unregister_current`]), helper threads before they end;
/// cached blocks not returned stay unusable until the arena is rebuilt.
pub fn release_thread_cache() {
    let Some(a) = arena() else {
        return;
    };
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.bind(a);
            for (class, m) in c.mags.iter_mut().enumerate() {
                let csize = crate::arena::class_size(class);
                for chunk in m.blocks[..m.n].chunks(FREE_BATCH_MAX) {
                    // SAFETY: cached blocks are free blocks of this class of `a`.
                    unsafe { a.free_batch(class, csize, chunk) };
                }
                m.n = 0;
            }
        }
    });
}

/// The arena of this process (inherited by forked children).
static ARENA: AtomicPtr<Arena> = AtomicPtr::new(ptr::null_mut());

/// Makes `arena` the target of in-scope allocations of this process and of the
/// processes it forks afterwards. Replaces any earlier arena (PostgreSQL rebuilds
/// shared memory after a crash; nothing may keep pointing into the old one).
pub fn install_arena(arena: &'static Arena) {
    ARENA.store(arena as *const Arena as *mut Arena, Ordering::Release);
    // Blocks cached for an earlier arena at the same address must not be handed out.
    let _ = CACHE.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.arena = 0;
            c.bind(arena);
        }
    });
}

/// The installed arena, if any.
#[inline]
pub fn arena() -> Option<&'static Arena> {
    let p = ARENA.load(Ordering::Acquire);
    // SAFETY: only `install_arena` stores here, with a `'static` arena.
    unsafe { p.as_ref() }
}

pub struct RoutingAllocator;

// SAFETY: every block is freed by the allocator that produced it: the arena hands out
// addresses inside its region only, and the system allocator never returns one there
// (the region is a separate mapping).
unsafe impl GlobalAlloc for RoutingAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if scope::active() {
            if let Some(a) = arena() {
                if layout.align() <= MIN_ALIGN {
                    if let Some((class, csize)) = cached_class(layout.size()) {
                        if let Some(p) = cache_alloc(a, class, csize) {
                            return p;
                        }
                    }
                }
                return a.alloc(layout);
            }
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if scope::active() && arena().is_some() {
            // SAFETY: forwarded contract.
            let p = unsafe { self.alloc(layout) };
            if !p.is_null() {
                // SAFETY: p is valid for layout.size() bytes; arena blocks are reused
                // and so not necessarily zero.
                unsafe { ptr::write_bytes(p, 0, layout.size()) };
            }
            return p;
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if let Some(a) = arena() {
            if a.contains(p) {
                if layout.align() <= MIN_ALIGN {
                    if let Some((class, csize)) = cached_class(layout.size()) {
                        if cache_free(a, p, class, csize) {
                            return;
                        }
                    }
                }
                // SAFETY: addresses inside the region come only from the arena.
                return unsafe { a.dealloc(p, layout) };
            }
        }
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(a) = arena() {
            if a.contains(p) {
                // SAFETY: the caller guarantees new_size fits the layout rules.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let q = a.alloc(new_layout);
                if !q.is_null() {
                    // SAFETY: both blocks are valid for the copied length and distinct.
                    unsafe {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        a.dealloc(p, layout);
                    }
                }
                return q;
            }
        }
        // SAFETY: forwarded contract; the block is a system block.
        unsafe { System.realloc(p, layout, new_size) }
    }
}
