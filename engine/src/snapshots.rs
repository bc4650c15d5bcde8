//! Snapshots and the horizon (PostgreSQL's xmin for memory tables).
//!
//! A snapshot is a TID: it sees every commit with a TID at or below it. Taking one
//! is reading the TID counter: a committer locks its records before it takes its TID
//! and holds them until they are installed, and a reader waits for a locked record,
//! so every commit at or below the snapshot is seen whole and none above it.
//!
//! A transaction that reads at snapshots registers the oldest one it may still use
//! in a slot of the engine's table; the *horizon* is the oldest registered snapshot,
//! capped by the TID counter. Versions replaced at or below the horizon are garbage
//! (see [`crate::versions`]).
//!
//! Registration protocol (all four operations sequentially consistent):
//! * a reader reads the counter (`s0`), publishes `s0` in its slot, and reads the
//!   counter again: that second value is its snapshot;
//! * a committer takes its TID from the counter, then computes the horizon.
//!
//! Either the committer's horizon sees the slot (and keeps what the reader needs), or
//! the reader published after it, so its second read comes after the TID was taken
//! and its snapshot includes the commit. The horizon's cap (the counter read before
//! the slots) makes a horizon computed with no slot published safe the same way.

use crate::ids::Tid;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

/// A free slot.
const FREE: u64 = u64::MAX;

/// Number of slots: transactions holding snapshots at once.
pub(crate) const SNAPSHOT_SLOTS: usize = 4096;

/// One line per slot: slots are written at every statement by their transaction
/// only, and four to a line they were written by four backends at once.
#[repr(align(64))]
pub(crate) struct Slot {
    at: AtomicU64,
    /// Who holds it (the transaction's lock tag), for introspection.
    holder: AtomicU64,
}

thread_local! {
    /// The slot this thread claimed last (a hint only: any free slot will do). A
    /// child process inherits its parent's, and moves on from it at its first claim
    /// if the parent holds it.
    static LAST_SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The engine's snapshot slots.
pub(crate) struct Snapshots {
    slots: Box<[Slot]>,
    /// Slots at or above this index have never been used.
    high_water: AtomicUsize,
}

/// The oldest snapshot holding back the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestSnapshot {
    pub tid: Tid,
    /// The holding transaction's lock tag (the FDW: PostgreSQL's virtual transaction
    /// id, backend id in the high half).
    pub holder: u64,
}

impl Snapshots {
    pub(crate) fn new() -> Snapshots {
        Snapshots {
            slots: (0..SNAPSHOT_SLOTS)
                .map(|_| Slot {
                    at: AtomicU64::new(FREE),
                    holder: AtomicU64::new(0),
                })
                .collect(),
            high_water: AtomicUsize::new(0),
        }
    }

    /// Claims a free slot holding `at`; None if every slot is taken. The search starts
    /// at the slot this thread claimed last (see [`LAST_SLOT`]): a backend takes the
    /// same slot, its own line, transaction after transaction, where every backend
    /// used to race for the first free slots (and their lines).
    pub(crate) fn claim(&self, at: Tid, holder: u64) -> Option<usize> {
        let n = self.slots.len();
        let start = LAST_SLOT.with(|l| l.get()) % n;
        for i in (start..n).chain(0..start) {
            let s = &self.slots[i];
            if s.at.load(SeqCst) == FREE
                && s.at
                    .compare_exchange(FREE, at.get(), SeqCst, SeqCst)
                    .is_ok()
            {
                s.holder.store(holder, SeqCst);
                // (A read first: the maximum rarely moves, and an update is a write
                // to a line every claimer reads.)
                if self.high_water.load(SeqCst) < i + 1 {
                    self.high_water.fetch_max(i + 1, SeqCst);
                }
                LAST_SLOT.with(|l| l.set(i));
                return Some(i);
            }
        }
        None
    }

    /// Moves slot `i` (claimed by the caller) to `at`.
    pub(crate) fn set(&self, i: usize, at: Tid) {
        self.slots[i].at.store(at.get(), SeqCst);
    }

    pub(crate) fn get(&self, i: usize) -> Tid {
        Tid(self.slots[i].at.load(SeqCst))
    }

    pub(crate) fn release(&self, i: usize) {
        self.slots[i].at.store(FREE, SeqCst);
    }

    /// The oldest registered snapshot, if any.
    pub(crate) fn oldest(&self) -> Option<OldestSnapshot> {
        let n = self.high_water.load(SeqCst);
        let mut best: Option<OldestSnapshot> = None;
        for s in &self.slots[..n] {
            let at = s.at.load(SeqCst);
            if at != FREE && best.is_none_or(|b| at < b.tid.get()) {
                best = Some(OldestSnapshot {
                    tid: Tid(at),
                    holder: s.holder.load(SeqCst),
                });
            }
        }
        best
    }

    /// The horizon: no live or future snapshot is older. `counter` is the engine's
    /// TID counter.
    pub(crate) fn horizon(&self, counter: &AtomicU64) -> Tid {
        let cap = counter.load(SeqCst);
        let n = self.high_water.load(SeqCst);
        let mut h = cap;
        for s in &self.slots[..n] {
            h = h.min(s.at.load(SeqCst));
        }
        Tid(h)
    }
}
