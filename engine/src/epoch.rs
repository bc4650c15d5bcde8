//! Per-process (per-thread) registration with the engine's epoch collector.
//!
//! The engine owns its own `crossbeam_epoch::Collector` in the arena. Every process
//! registers its own `LocalHandle` the first time it pins, and drops it at exit
//! (PostgreSQL: [`unregister_current`] from `on_proc_exit`; threads: the thread-local
//! destructor). A handle inherited across `fork` belongs to the parent: the child
//! detects it by pid and forgets it without touching it (dropping it would corrupt
//! the parent's pin counters).
//!
//! Pinning, unpinning and dropping a handle allocate (bags, queue nodes), so all of it
//! happens inside an engine scope; [`with_guard`] enforces that ordering.

use crate::scope;
use crossbeam_epoch::{Collector, Guard, LocalHandle};
use std::cell::RefCell;
use std::mem::ManuallyDrop;

struct Registered {
    pid: u32,
    handle: ManuallyDrop<LocalHandle>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            let _s = scope::enter();
            // SAFETY: dropped once, here, by the process that registered it.
            unsafe { ManuallyDrop::drop(&mut self.handle) };
        }
        // Otherwise: inherited from a parent process; leave it alone.
    }
}

thread_local! {
    static HANDLE: RefCell<Option<Registered>> = const { RefCell::new(None) };
}

fn pin(collector: &Collector) -> Guard {
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let pid = std::process::id();
        let usable = matches!(&*slot, Some(r) if r.pid == pid && r.handle.collector() == collector);
        if !usable {
            if let Some(old) = slot.take() {
                drop(old); // no-op for an inherited handle, see `Registered::drop`
            }
            *slot = Some(Registered {
                pid,
                handle: ManuallyDrop::new(collector.register()),
            });
        }
        slot.as_ref().expect("registered above").handle.pin()
    })
}

/// Runs `f` inside an engine scope with a pinned guard of `collector`. The guard is
/// dropped (and may flush garbage) before the scope ends.
#[inline]
pub fn with_guard<R>(collector: &Collector, f: impl FnOnce(&Guard) -> R) -> R {
    let _s = scope::enter();
    let guard = pin(collector);
    let r = f(&guard);
    drop(guard);
    r
}

/// Pushes this process's deferred garbage to the collector and tries to advance the
/// epoch a few times, so freed memory becomes reusable soon.
pub fn reclaim(collector: &Collector) {
    for _ in 0..4 {
        with_guard(collector, |g| g.flush());
    }
}

/// Drops this process's registration (PostgreSQL backends call this at exit).
pub fn unregister_current() {
    let old = HANDLE.with(|cell| cell.borrow_mut().take());
    drop(old);
}
