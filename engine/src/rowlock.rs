//! Row locks: how UPDATE, DELETE and SELECT ... FOR KEY SHARE / SHARE / NO KEY UPDATE /
//! UPDATE behave like PostgreSQL's.
//!
//! A scan feeding such a statement locks each row it returns in one of PostgreSQL's
//! four row-lock modes ([`LockMode`], with its conflict table). A transaction that
//! finds a conflicting lock waits for the holder to end, then reads the newest
//! committed version (the caller rechecks its quals on it, like PostgreSQL's
//! EvalPlanQual), so concurrent `n = n + 1` updates queue up instead of failing. Locks
//! are released when the transaction ends (after its commit is installed) or when the
//! subtransaction that took them rolls back.
//!
//! The lock word (a record's `owner`): [`WAITING`] while somebody waits; then either
//! one holder -- its lock tag (60 bits) and mode (2 bits) -- or [`MULTI`], and the
//! holders are listed in the engine's shared lock table (a striped list of
//! `(record, tag, mode)`, like PostgreSQL's MultiXacts). A lock tag names a
//! transaction and, in its low [`SUB_BITS`] bits, the subtransaction that took the
//! lock: a waiter waits for that subtransaction (its rollback releases the lock), and
//! a lock upgraded in a later subtransaction is a second entry, so rolling that one
//! back restores the weaker lock. Locks of one transaction never conflict with each
//! other.
//!
//! Waiting is process-safe and interruptible: a waiter marks the owner word
//! [`WAITING`] and sleeps on a shared futex stripe with a timeout; a releaser that sees
//! the mark bumps the stripe and wakes it. The caller bounds the wait (lock timeout,
//! cancel) between sleeps, and asks [`Engine::deadlocked`] after PostgreSQL's
//! `deadlock_timeout`: every waiter publishes whom it waits for in a slot, and a cycle
//! through the waits-for chains is a deadlock.
//!
//! Invariants:
//! * only a holder (or an abort of the holder) removes its own entry;
//! * the word changes from or to [`MULTI`], and the shared list of a record changes,
//!   only under the record's lock-table stripe; without it, the word only goes from
//!   free to one holder, from one holder to free (by that holder), or gains
//!   [`WAITING`];
//! * a row-locked record is deleted only by a transaction holding it in
//!   [`LockMode::Update`] (which excludes every other holder), and that holder
//!   releases it under the epoch guard of that commit, so the record is still
//!   allocated then;
//! * the commit protocol's record lock (version word) is separate and short: row locks
//!   are held across statements, record locks only inside a commit.

use crate::engine::Engine;
use crate::record::Record;
use crate::sync::{self, SpinLock};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Set in a record's owner word while a transaction waits for its row lock.
pub const WAITING: u64 = 1 << 63;
/// Set in a record's owner word while more than one lock entry holds the row.
pub const MULTI: u64 = 1 << 62;
const MODE_SHIFT: u32 = 60;
/// The lock-tag bits of an owner word.
pub const TAG_MASK: u64 = (1 << MODE_SHIFT) - 1;
/// Low bits of a lock tag that name the subtransaction (its id modulo 2^SUB_BITS).
pub const SUB_BITS: u32 = 12;
const SUB_MASK: u64 = (1 << SUB_BITS) - 1;

/// PostgreSQL's row-lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum LockMode {
    /// FOR KEY SHARE: blocks only changes of a key (UPDATE mode).
    KeyShare = 0,
    /// FOR SHARE: blocks every change.
    Share = 1,
    /// FOR NO KEY UPDATE, and an UPDATE that changes no column of a unique key.
    NoKeyUpdate = 2,
    /// FOR UPDATE, DELETE, and an UPDATE that changes a unique key column.
    Update = 3,
}

impl LockMode {
    /// The mode numbered `b` (its discriminant; only the low two bits count).
    pub fn from_bits(b: u64) -> LockMode {
        match b & 3 {
            0 => LockMode::KeyShare,
            1 => LockMode::Share,
            2 => LockMode::NoKeyUpdate,
            _ => LockMode::Update,
        }
    }

    /// PostgreSQL's row-lock conflict table (between different transactions).
    pub fn conflicts(self, other: LockMode) -> bool {
        use LockMode::*;
        match (self, other) {
            (KeyShare, Update) | (Update, KeyShare) => true,
            (KeyShare, _) | (_, KeyShare) => false,
            (Share, Share) => false,
            _ => true,
        }
    }

    /// Does holding `self` exclude every lock that holding `want` would?
    pub fn covers(self, want: LockMode) -> bool {
        self == want || self == LockMode::Update || want == LockMode::KeyShare
    }
}

/// The lock tag of transaction `base` (low [`SUB_BITS`] bits zero) in subtransaction
/// `sub`.
pub fn tag_of(base: u64, sub: u32) -> u64 {
    base | (sub as u64 & SUB_MASK)
}

/// The base lock tag of a transaction named by two numbers (PostgreSQL's virtual
/// transaction id: backend id `hi`, below 2^16, and local transaction id `lo`).
pub fn pack_tag(hi: u32, lo: u32) -> u64 {
    assert!(hi < 1 << 16, "backend id out of range for a lock tag");
    (((hi as u64) << 32) | lo as u64) << SUB_BITS
}

/// The `(hi, lo, subtransaction bits)` of a lock tag made with [`pack_tag`] and
/// [`tag_of`].
pub fn unpack_tag(tag: u64) -> (u32, u32, u32) {
    let t = tag >> SUB_BITS;
    ((t >> 32) as u32, t as u32, (tag & SUB_MASK) as u32)
}

/// The transaction part of a lock tag.
pub fn txn_of(tag: u64) -> u64 {
    tag & !SUB_MASK
}

/// Do two lock tags name the same transaction?
pub fn same_txn(a: u64, b: u64) -> bool {
    txn_of(a) == txn_of(b)
}

/// The owner word of a record held by `tag` alone in `mode`.
pub fn held_word(tag: u64, mode: LockMode) -> u64 {
    debug_assert!(tag & !TAG_MASK == 0);
    tag | ((mode as u64) << MODE_SHIFT)
}

/// One holder of a row held by several (the word is [`MULTI`]).
#[derive(Clone, Copy)]
pub(crate) struct SharedLock {
    rec: usize,
    tag: u64,
    mode: LockMode,
}

/// Stripes of the shared lock table.
pub(crate) const LOCK_TABLE_STRIPES: usize = 64;

/// The shared lock table: the holders of rows held by more than one lock entry.
pub(crate) type LockTable = Box<[SpinLock<Vec<SharedLock>>]>;

pub(crate) fn new_lock_table() -> LockTable {
    (0..LOCK_TABLE_STRIPES)
        .map(|_| SpinLock::new(Vec::new()))
        .collect()
}

/// Futex stripes waiters sleep on.
pub(crate) const WAKE_STRIPES: usize = 256;
/// Waits-for slots (concurrent waiters; PostgreSQL's max_connections rarely exceeds it).
pub(crate) const WAIT_SLOTS: usize = 1024;

/// One waiter: its transaction and the transaction it waits for (0 = free slot).
#[derive(Default)]
pub(crate) struct WaitSlot {
    txn: AtomicU64,
    on: AtomicU64,
}

/// What trying a row lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryLock {
    /// Now held by us; `fresh` if this call added a lock entry for the tag.
    Held { fresh: bool },
    /// Held in a conflicting mode by lock tag `holder`; `holding` if the requester's
    /// transaction holds a (weaker) lock on the row too.
    Busy { holder: u64, holding: bool },
}

impl Record {
    /// Locks this row in `mode` for lock tag `tag` (never waits).
    pub(crate) fn try_lock_row(&self, tag: u64, mode: LockMode, engine: &Engine) -> TryLock {
        // Fast path: a free row, or one held by this transaction alone.
        let cur = self.owner.load(Ordering::Acquire);
        let body = cur & !WAITING;
        if body == 0 {
            if self
                .owner
                .compare_exchange(
                    cur,
                    held_word(tag, mode) | (cur & WAITING),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return TryLock::Held { fresh: true };
            }
        } else if body & MULTI == 0 {
            let (holder, held) = (body & TAG_MASK, LockMode::from_bits(body >> MODE_SHIFT));
            if same_txn(holder, tag) && held.covers(mode) {
                return TryLock::Held { fresh: false };
            }
            if !same_txn(holder, tag) && held.conflicts(mode) {
                return TryLock::Busy {
                    holder,
                    holding: false,
                };
            }
        }
        self.lock_row_shared(tag, mode, engine)
    }

    /// The slow path of [`Record::try_lock_row`], under the lock-table stripe.
    fn lock_row_shared(&self, tag: u64, mode: LockMode, engine: &Engine) -> TryLock {
        let me = self as *const Record as usize;
        let mut list = engine.lock_table()[lock_stripe(me)].lock();
        loop {
            let cur = self.owner.load(Ordering::Acquire);
            let body = cur & !WAITING;
            let mut holders: Vec<(u64, LockMode)> = if body & MULTI != 0 {
                list.iter()
                    .filter(|l| l.rec == me)
                    .map(|l| (l.tag, l.mode))
                    .collect()
            } else if body != 0 {
                vec![(body & TAG_MASK, LockMode::from_bits(body >> MODE_SHIFT))]
            } else {
                Vec::new()
            };
            if let Some(&(h, _)) = holders
                .iter()
                .find(|&&(h, m)| !same_txn(h, tag) && m.conflicts(mode))
            {
                return TryLock::Busy {
                    holder: h,
                    holding: holders.iter().any(|&(x, _)| same_txn(x, tag)),
                };
            }
            if holders
                .iter()
                .any(|&(h, m)| same_txn(h, tag) && m.covers(mode))
            {
                return TryLock::Held { fresh: false };
            }
            // Our own entry for this tag, if any, gives way to the stronger one.
            let fresh = !holders.iter().any(|&(h, _)| h == tag);
            holders.retain(|&(h, m)| !(h == tag && mode.covers(m)));
            holders.push((tag, mode));
            let word = if let [(h, m)] = holders[..] {
                held_word(h, m)
            } else {
                MULTI
            };
            if self
                .owner
                .compare_exchange(
                    cur,
                    word | (cur & WAITING),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                // A waiter's mark, or a fast-path change: look again.
                continue;
            }
            list.retain(|l| l.rec != me);
            if word == MULTI {
                list.extend(
                    holders
                        .iter()
                        .map(|&(tag, mode)| SharedLock { rec: me, tag, mode }),
                );
            }
            return TryLock::Held { fresh };
        }
    }

    /// Releases every lock entry of `tag` on this row and wakes its waiters.
    pub(crate) fn unlock_row(&self, tag: u64, engine: &Engine) {
        loop {
            let cur = self.owner.load(Ordering::Acquire);
            let body = cur & !WAITING;
            if body & MULTI != 0 {
                if self.unlock_row_shared(tag, engine) {
                    return;
                }
                // No longer shared (another release made us the sole holder).
                continue;
            }
            if body == 0 || body & TAG_MASK != tag {
                return;
            }
            if self
                .owner
                .compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if cur & WAITING != 0 {
                    engine.wake_row_waiters(self);
                }
                return;
            }
        }
    }

    /// The shared path of [`Record::unlock_row`]; false if the word is no longer
    /// [`MULTI`] once the stripe is locked.
    fn unlock_row_shared(&self, tag: u64, engine: &Engine) -> bool {
        let me = self as *const Record as usize;
        let mut list = engine.lock_table()[lock_stripe(me)].lock();
        if self.owner.load(Ordering::Acquire) & MULTI == 0 {
            return false;
        }
        let before = list.len();
        list.retain(|l| !(l.rec == me && l.tag == tag));
        if list.len() == before {
            return true;
        }
        let left: Vec<(u64, LockMode)> = list
            .iter()
            .filter(|l| l.rec == me)
            .map(|l| (l.tag, l.mode))
            .collect();
        let word = match left[..] {
            [] => 0,
            [(h, m)] => held_word(h, m),
            _ => MULTI,
        };
        if word != MULTI {
            list.retain(|l| l.rec != me);
        }
        // Only waiters' marks change the word meanwhile (it is MULTI, see the
        // invariants); each release wakes them, and they mark again before sleeping.
        let old = self.owner.swap(word, Ordering::AcqRel);
        if old & WAITING != 0 {
            engine.wake_row_waiters(self);
        }
        true
    }

    /// Releases the lock an inserter of this (uncommitted) record holds since the
    /// insert; `base` is the inserting transaction's tag.
    pub(crate) fn release_insert_lock(&self, base: u64, engine: &Engine) {
        if let Some(tag) = self.sole_lock_holder().filter(|&h| same_txn(h, base)) {
            self.unlock_row(tag, engine);
        }
    }

    /// The single holder of this row's lock (an uncommitted insert's inserter), if
    /// one transaction alone holds it.
    pub(crate) fn sole_lock_holder(&self) -> Option<u64> {
        let body = self.owner.load(Ordering::Acquire) & !WAITING;
        (body != 0 && body & MULTI == 0).then_some(body & TAG_MASK)
    }
}

fn lock_stripe(addr: usize) -> usize {
    (addr >> 6) % LOCK_TABLE_STRIPES
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
