//! Helper threads inside a PostgreSQL process (recovery, index builds, loads): they
//! run engine code only, never PostgreSQL's, with every signal blocked (PostgreSQL's
//! handlers must run on the process's main thread), and give their allocator caches
//! back before they end.

use crate::error::{Error, Result};
use crate::scope;

/// Runs `f` on every part, one thread per part (the caller's thread takes the first),
/// with every signal blocked in the helper threads: PostgreSQL's signal handlers must
/// run on the process's main thread. Returns the first error.
pub(crate) fn parallel<T: Sync>(parts: Vec<T>, f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    if parts.len() < 2 {
        return parts.iter().try_for_each(&f);
    }
    scope::outside(|| {
        // SAFETY: plain signal-mask calls on this thread; the old mask is restored
        // below, and threads spawned meanwhile inherit the full mask.
        let old = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            old
        };
        let res = std::thread::scope(|s| {
            let handles: Vec<_> = parts[1..]
                .iter()
                .map(|p| {
                    s.spawn(|| {
                        let r = f(p);
                        // Leave the collector (which may free blocks into this thread's
                        // cache), then give the cached blocks back, before the thread
                        // ends: a thread-local destructor would run too late for both.
                        crate::epoch::unregister_current();
                        crate::alloc::release_thread_cache();
                        r
                    })
                })
                .collect();
            // SAFETY: restores this thread's mask (helpers keep theirs).
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            let mut res = f(&parts[0]);
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(Error::Corrupt("a helper thread panicked".into())));
                if res.is_ok() {
                    res = r;
                }
            }
            res
        });
        res
    })
}

/// How many threads a parallel step uses (the caller's included): the machine's
/// cores, at most 4.
pub(crate) fn helper_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
