//! Per-process (per-thread) registration with the engine's epoch collector.
//!
//! The engine owns its own `crossbeam_epoch::Collector` in the arena. Every process
//! registers its own `LocalHandle` the first time it pins, and drops it at exit
//! (PostgreSQL: [`unregister_current`] from `on_proc_exit`; threads: the thread-local
//! destructor). A handle inherited across `fork` belongs to the parent: the child
//! detects it by its fork generation (bumped by a pthread_atfork handler, which every
//! process that ever registered has installed) and forgets it without touching it
//! (dropping it would corrupt the parent's pin counters).
//!
//! Pinning, unpinning and dropping a handle allocate (bags, queue nodes), so all of it
//! happens inside an engine scope; [`with_guard`] enforces that ordering.

use crate::scope;
use crossbeam_epoch::{Collector, Guard, LocalHandle};
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Bumped in every child process right after `fork` (pthread_atfork), so a handle
/// inherited from the parent is recognised without a `getpid` system call per pin.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// The fork generation of this process (bumped by a pthread_atfork handler): differs in a child
/// from its parent's, without a system call.
pub fn fork_generation() -> u64 {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        assert_eq!(rc, 0, "pthread_atfork");
    });
    FORK_GENERATION.load(Ordering::Relaxed)
}

struct Registered {
    /// The fork generation of the process that registered.
    generation: u64,
    handle: ManuallyDrop<LocalHandle>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.generation == fork_generation() {
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
        let gen = fork_generation();
        let usable =
            matches!(&*slot, Some(r) if r.generation == gen && r.handle.collector() == collector);
        if !usable {
            if let Some(old) = slot.take() {
                drop(old); // no-op for an inherited handle, see `Registered::drop`
            }
            *slot = Some(Registered {
                generation: gen,
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

/// Like [`reclaim`], `rounds` times: after a big abort, whose garbage (row batches and
/// skip-list nodes, one deferred function each) fills many bags.
pub fn reclaim_rounds(collector: &Collector, rounds: usize) {
    for _ in 0..rounds {
        with_guard(collector, |g| g.flush());
    }
}

/// Drops this process's registration (PostgreSQL backends call this at exit).
pub fn unregister_current() {
    let old = HANDLE.with(|cell| cell.borrow_mut().take());
    drop(old);
}
