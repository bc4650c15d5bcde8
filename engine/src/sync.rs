//! Process-safe locks: plain atomics that may live in a shared mapping.
//!
//! They never park a thread through a process-local queue (as `std::sync::Mutex` or
//! `parking_lot` do); a waiter spins with backoff and then yields the CPU. They are
//! meant for short critical sections only. A process killed while holding one leaves
//! it held; PostgreSQL answers such a crash by reinitialising shared memory.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};

/// Bounded exponential spinning, then `sched_yield`, then short sleeps: a wait that
/// outlasts some 64 yields (a lock held across a long write, a checkpoint waiting
/// for a big commit to install) stops taking a core from the holder.
pub struct Backoff {
    step: u32,
}

const SPIN_STEPS: u32 = 7;
const YIELDS: u32 = 64;

impl Backoff {
    pub fn new() -> Self {
        Backoff { step: 0 }
    }

    pub fn snooze(&mut self) {
        if self.step < SPIN_STEPS {
            for _ in 0..(1u32 << self.step) {
                std::hint::spin_loop();
            }
        } else if self.step < SPIN_STEPS + YIELDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
            return;
        }
        self.step += 1;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A test-and-test-and-set spin lock protecting a `T`.
pub struct SpinLock<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `value`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; no thread-affine state.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let mut backoff = Backoff::new();
        loop {
            if self.state.load(Ordering::Relaxed) == 0
                && self
                    .state
                    .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return SpinLockGuard { lock: self };
            }
            backoff.snooze();
        }
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        self.state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(SpinLockGuard { lock: self })
    }
}

pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.state.store(0, Ordering::Release);
    }
}

/// A reader-writer spin lock: many readers or one writer. Writers announce
/// themselves so a stream of readers cannot starve them.
pub struct SpinRwLock<T> {
    /// bit 31: writer holds; bit 30: writer waiting; bits 0..30: reader count.
    state: AtomicU32,
    value: UnsafeCell<T>,
}

const WRITER: u32 = 1 << 31;
const WRITER_WAITING: u32 = 1 << 30;
const READERS: u32 = WRITER_WAITING - 1;

// SAFETY: readers get `&T` only (needs `T: Sync`), the writer is exclusive.
unsafe impl<T: Send + Sync> Sync for SpinRwLock<T> {}
// SAFETY: as for `SpinLock`.
unsafe impl<T: Send> Send for SpinRwLock<T> {}

impl<T> SpinRwLock<T> {
    pub const fn new(value: T) -> Self {
        SpinRwLock {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    pub fn read(&self) -> ReadGuard<'_, T> {
        let mut backoff = Backoff::new();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & (WRITER | WRITER_WAITING) == 0
                && s & READERS < READERS
                && self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return ReadGuard { lock: self };
            }
            backoff.snooze();
        }
    }

    pub fn write(&self) -> WriteGuard<'_, T> {
        let mut backoff = Backoff::new();
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & (WRITER | READERS) == 0 {
                if self
                    .state
                    .compare_exchange_weak(s, WRITER, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return WriteGuard { lock: self };
                }
            } else if s & WRITER_WAITING == 0 {
                self.state.fetch_or(WRITER_WAITING, Ordering::Relaxed);
            }
            backoff.snooze();
        }
    }
}

pub struct ReadGuard<'a, T> {
    lock: &'a SpinRwLock<T>,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read guard excludes writers.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.state.fetch_sub(1, Ordering::Release);
    }
}

pub struct WriteGuard<'a, T> {
    lock: &'a SpinRwLock<T>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write guard is exclusive.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the write guard is exclusive.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // Clears WRITER and any WRITER_WAITING flag (waiting writers set it again).
        self.lock.state.store(0, Ordering::Release);
    }
}

/// Sleeps until `word` no longer holds `expected`, a wake-up, or `timeout`. A futex
/// *without* FUTEX_PRIVATE_FLAG: it works across processes on a shared mapping.
pub fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: std::time::Duration,
) {
    // (Every bit: any wake-up of `word` ends it, as a plain FUTEX_WAIT.)
    futex_wait_bits(word, expected, timeout, u32::MAX);
}

/// Wakes every process sleeping in [`futex_wait`] or [`futex_wait_bits`] on `word`.
pub fn futex_wake_all(word: &std::sync::atomic::AtomicU32) {
    futex_wake_bits(word, i32::MAX, u32::MAX);
}

/// Like [`futex_wait`], but only a wake naming one of `bits` ([`futex_wake_bits`];
/// [`futex_wake_all`] names them all) ends the sleep early. Returns false if it slept
/// until `timeout`.
pub fn futex_wait_bits(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: std::time::Duration,
    bits: u32,
) -> bool {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
    let deadline = libc::timespec {
        tv_sec: now.tv_sec
            + timeout.as_secs() as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT_BITSET on a live, aligned u32; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &deadline as *const libc::timespec,
            std::ptr::null::<u32>(),
            bits,
        )
    };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

/// Wakes up to `n` processes sleeping in [`futex_wait_bits`] on `word` with one of
/// `bits`.
pub fn futex_wake_bits(word: &std::sync::atomic::AtomicU32, n: i32, bits: u32) {
    // SAFETY: FUTEX_WAKE_BITSET on a live, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE_BITSET,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            bits,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spinlock_counts_exactly() {
        let l = Arc::new(SpinLock::new(0u64));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*l.lock(), 40_000);
    }

    #[test]
    fn rwlock_readers_and_writers() {
        let l = Arc::new(SpinRwLock::new((0u64, 0u64)));
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        if i % 2 == 0 {
                            let mut w = l.write();
                            w.0 += 1;
                            w.1 += 1;
                        } else {
                            let r = l.read();
                            assert_eq!(r.0, r.1);
                        }
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(l.read().0, 10_000);
    }
}
