//! The engine scope: a per-thread (in PostgreSQL: per-process) flag that tells the
//! routing global allocator to take memory from the shared arena.
//!
//! Invariant: every piece of code that touches a shared structure (allocates,
//! frees, pins or unpins the epoch collector) runs inside [`enter`]. Code that builds
//! data private to the caller (result buffers) runs inside [`outside`], even when it
//! is nested in an engine call.

use std::cell::Cell;

thread_local! {
    // `const` initialisation: reading the flag never allocates, which matters because
    // the global allocator itself reads it.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// True while the current thread is inside an engine scope.
#[inline]
pub fn active() -> bool {
    DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// RAII marker of an engine scope; scopes nest.
#[must_use = "the scope ends when the guard is dropped"]
pub struct ScopeGuard {
    saved: u32,
}

/// Enters the engine scope until the returned guard is dropped.
#[inline]
pub fn enter() -> ScopeGuard {
    let saved = DEPTH.with(|d| {
        let v = d.get();
        d.set(v + 1);
        v
    });
    ScopeGuard { saved }
}

impl Drop for ScopeGuard {
    #[inline]
    fn drop(&mut self) {
        // Restores the depth seen at entry, so an unwinding panic (pgrx turns
        // PostgreSQL errors into panics) cannot leave the flag set.
        DEPTH.with(|d| d.set(self.saved));
    }
}

/// Runs `f` with the engine scope suspended: allocations made by `f` are private to
/// this process (used to fill caller-owned result buffers).
#[inline]
pub fn outside<R>(f: impl FnOnce() -> R) -> R {
    let saved = DEPTH.with(|d| d.replace(0));
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(saved);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_suspend() {
        assert!(!active());
        {
            let _a = enter();
            assert!(active());
            {
                let _b = enter();
                outside(|| assert!(!active()));
                assert!(active());
            }
            assert!(active());
        }
        assert!(!active());
    }

    #[test]
    fn panic_restores_scope() {
        let r = std::panic::catch_unwind(|| {
            let _g = enter();
            panic!("boom");
        });
        assert!(r.is_err());
        assert!(!active());
    }
}
