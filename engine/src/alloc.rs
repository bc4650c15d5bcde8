//! The routing global allocator.
//!
//! * `alloc` inside an engine scope ([`crate::scope`]) takes memory from the installed
//!   arena; outside a scope, or before an arena is installed, from the system.
//! * `dealloc` routes by address: a pointer inside the arena goes back to it, any other
//!   to the system. So shared objects can be dropped from anywhere.
//! * `realloc` keeps a block in the region it came from: a private `Vec` grown inside
//!   an engine scope stays private, a shared one stays shared.
//!
//! Binaries that use the engine over shared memory declare
//! `#[global_allocator] static A: memfdw_engine::alloc::RoutingAllocator = RoutingAllocator;`
//! and call [`install_arena`] once, before forking.

use crate::arena::Arena;
use crate::scope;
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The arena of this process (inherited by forked children).
static ARENA: AtomicPtr<Arena> = AtomicPtr::new(ptr::null_mut());

/// Makes `arena` the target of in-scope allocations of this process and of the
/// processes it forks afterwards. Replaces any earlier arena (PostgreSQL rebuilds
/// shared memory after a crash; nothing may keep pointing into the old one).
pub fn install_arena(arena: &'static Arena) {
    ARENA.store(arena as *const Arena as *mut Arena, Ordering::Release);
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
                return a.alloc(layout);
            }
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if scope::active() {
            if let Some(a) = arena() {
                let p = a.alloc(layout);
                if !p.is_null() {
                    // SAFETY: p is valid for layout.size() bytes; arena blocks are reused
                    // and so not necessarily zero.
                    unsafe { ptr::write_bytes(p, 0, layout.size()) };
                }
                return p;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if let Some(a) = arena() {
            if a.contains(p) {
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
