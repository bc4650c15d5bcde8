//! Row locks: how UPDATE, DELETE and SELECT ... FOR UPDATE/SHARE behave like
//! PostgreSQL's under READ COMMITTED.
//!
//! A scan feeding such a statement locks each row it returns: the record's `owner`
//! word takes the transaction's id. A transaction that finds the row locked waits for
//! the holder to end, then reads the newest committed version (the caller rechecks
//! its quals on it, like PostgreSQL's EvalPlanQual), so concurrent `n = n + 1`
//! updates queue up instead of failing. Locks are released when the transaction ends
//! (after its commit is installed) or when the subtransaction that took them rolls
//! back.
//!
//! Waiting is process-safe and interruptible: a waiter marks the owner word
//! [`WAITING`] and sleeps on a shared futex stripe with a timeout; a releaser that sees
//! the mark bumps the stripe and wakes it. The caller bounds the wait (lock timeout,
//! cancel) between sleeps, and asks [`Engine::deadlocked`] after PostgreSQL's
//! `deadlock_timeout`: every waiter publishes whom it waits for in a slot, and a cycle
//! through the waits-for chains is a deadlock.
//!
//! Invariants:
//! * only the holder (or an abort of the holder) clears the holder bits;
//! * a row-locked record is deleted only by its lock holder, which releases the lock
//!   under the epoch guard of that commit, so the record is still allocated then;
//! * the commit protocol's record lock (version word) is separate and short: row locks
//!   are held across statements, record locks only inside a commit.

use crate::engine::Engine;
use crate::record::Record;
use crate::sync;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Set in a record's owner word while a transaction waits for its row lock.
pub const WAITING: u64 = 1 << 63;

/// Futex stripes waiters sleep on.
pub(crate) const WAKE_STRIPES: usize = 256;
/// Waits-for slots (concurrent waiters; PostgreSQL's max_connections rarely exceeds it).
pub(crate) const WAIT_SLOTS: usize = 1024;

/// One waiter: its transaction id and the holder it waits for (0 = free slot).
#[derive(Default)]
pub(crate) struct WaitSlot {
    txn: AtomicU64,
    on: AtomicU64,
}

/// What trying a row lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryLock {
    /// Now held by us; `fresh` if this call took it.
    Held { fresh: bool },
    /// Held by transaction `holder`.
    Busy { holder: u64 },
}

impl Record {
    pub(crate) fn try_lock_row(&self, me: u64) -> TryLock {
        loop {
            let cur = self.owner.load(Ordering::Acquire);
            let holder = cur & !WAITING;
            if holder == me {
                return TryLock::Held { fresh: false };
            }
            if holder != 0 {
                return TryLock::Busy { holder };
            }
            if self
                .owner
                .compare_exchange(
                    cur,
                    me | (cur & WAITING),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return TryLock::Held { fresh: true };
            }
        }
    }

    /// Releases the row lock held by `me` and wakes its waiters.
    pub(crate) fn unlock_row(&self, me: u64, engine: &Engine) {
        let old = self.owner.load(Ordering::Acquire);
        if old & !WAITING != me {
            return;
        }
        let old = self.owner.swap(0, Ordering::AcqRel);
        if old & WAITING != 0 {
            engine.wake_row_waiters(self);
        }
    }
}

fn stripe_of(rec: &Record) -> usize {
    stripe_of_addr(rec as *const Record as usize)
}

fn stripe_of_addr(addr: usize) -> usize {
    (addr >> 6) % WAKE_STRIPES
}

impl Engine {
    fn wake_row_waiters(&self, rec: &Record) {
        let w = &self.row_wakeups()[stripe_of(rec)];
        w.fetch_add(1, Ordering::AcqRel);
        sync::futex_wake_all(w);
    }

    /// The wake-up counter of the record at `addr`: read it before marking the record
    /// WAITING, then sleep with [`Engine::sleep_on_row_addr`], so a release between the
    /// two is not missed.
    pub(crate) fn wake_seq(&self, addr: usize) -> u32 {
        self.row_wakeups()[stripe_of_addr(addr)].load(Ordering::Acquire)
    }

    /// Sleeps on the futex stripe of the record at `addr` until a release on that
    /// stripe after `seq` was read, a signal, or `timeout`.
    pub(crate) fn sleep_on_row_addr(&self, addr: usize, seq: u32, timeout: Duration) {
        sync::futex_wait(&self.row_wakeups()[stripe_of_addr(addr)], seq, timeout);
    }

    /// Publishes that transaction `me` waits for `on` (0: no longer waits).
    pub(crate) fn set_waiting(&self, me: u64, on: u64) {
        let slots = self.wait_slots();
        if let Some(s) = slots.iter().find(|s| s.txn.load(Ordering::Acquire) == me) {
            if on == 0 {
                s.on.store(0, Ordering::Release);
                s.txn.store(0, Ordering::Release);
            } else {
                s.on.store(on, Ordering::Release);
            }
            return;
        }
        if on == 0 {
            return;
        }
        for s in slots.iter() {
            if s.txn
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.on.store(on, Ordering::Release);
                return;
            }
        }
        // No free slot: this wait is not visible to deadlock detection; lock_timeout
        // and cancel still bound it.
    }

    /// Does the waits-for chain starting at `me` come back to `me`? If so, `me` is the
    /// victim: its wait is withdrawn before any other member of the cycle can look.
    pub fn deadlocked(&self, me: u64) -> bool {
        let _one_at_a_time = self.deadlock_check.lock();
        let found = self.find_cycle(me);
        if found {
            self.set_waiting(me, 0);
        }
        found
    }

    fn find_cycle(&self, me: u64) -> bool {
        let slots = self.wait_slots();
        let on_of = |t: u64| {
            slots
                .iter()
                .find(|s| s.txn.load(Ordering::Acquire) == t)
                .map(|s| s.on.load(Ordering::Acquire))
                .filter(|&o| o != 0)
        };
        let mut cur = me;
        for _ in 0..WAIT_SLOTS {
            match on_of(cur) {
                Some(next) if next == me => return true,
                Some(next) => cur = next,
                None => return false,
            }
        }
        false
    }
}

pub(crate) fn new_wakeups() -> Box<[AtomicU32]> {
    (0..WAKE_STRIPES).map(|_| AtomicU32::new(0)).collect()
}

pub(crate) fn new_wait_slots() -> Box<[WaitSlot]> {
    (0..WAIT_SLOTS).map(|_| WaitSlot::default()).collect()
}
