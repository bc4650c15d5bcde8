//! Helper threads inside a PostgreSQL process (recovery, index builds, loads): they
//! run engine code only, never PostgreSQL's, with every signal blocked (PostgreSQL's
//! handlers must run on the process's main thread), and give their allocator caches
//! back before they end.

use crate::error::{Error, Result};
use crate::scope;

/// Runs `f` on every part, one thread per part (the caller's thread takes the first,
/// and any part whose thread cannot be started), with every signal blocked in the
/// helper threads: PostgreSQL's signal handlers must run on the process's main thread.
/// Returns the first error.
pub(crate) fn parallel<T: Sync>(parts: Vec<T>, f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    if parts.len() < 2 {
        return parts.iter().try_for_each(&f);
    }
    /// Restores this thread's signal mask when dropped (also if spawning panics).
    struct Mask(libc::sigset_t);
    impl Drop for Mask {
        fn drop(&mut self) {
            // SAFETY: restores the mask saved below, on the thread that saved it.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    scope::outside(|| {
        std::thread::scope(|s| {
            // SAFETY: plain signal-mask calls on this thread; `Mask` restores the old
            // mask, and threads spawned meanwhile inherit the full one.
            let mask = unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                let mut old: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
                Mask(old)
            };
            let f = &f;
            let mut inline = vec![&parts[0]];
            let mut handles = Vec::new();
            for p in &parts[1..] {
                let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                    let r = f(p);
                    // Leave the collector (which may free blocks into this thread's
                    // cache), then give the cached blocks back, before the thread
                    // ends: a thread-local destructor would run too late for both.
                    crate::epoch::unregister_current();
                    crate::alloc::release_thread_cache();
                    r
                });
                match spawned {
                    Ok(h) => handles.push(h),
                    // No thread (a process limit): this thread does that part too.
                    Err(_) => inline.push(p),
                }
            }
            drop(mask);
            let mut res = inline.into_iter().try_for_each(f);
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(Error::Corrupt("a helper thread panicked".into())));
                if res.is_ok() {
                    res = r;
                }
            }
            res
        })
    })
}

/// How many threads a parallel step uses (the caller's included): the machine's
/// cores, at most 4.
pub(crate) fn helper_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
