//! Row locks taken for UPDATE, DELETE and SELECT FOR KEY SHARE/SHARE/NO KEY
//! UPDATE/UPDATE (see [`crate::rowlock`] for the lock word, modes and waits), held
//! until the transaction or the subtransaction that took them ends.

use super::{RowLock, Txn};
use crate::engine::TableHandle;
use crate::epoch;
use crate::error::Result;
use crate::ids::{RowId, Tid};
use crate::rowlock::{tag_of, txn_of, LockMode, WAITING};
use crossbeam_epoch::Guard;
use std::time::Duration;

impl Txn {
    /// Releases the row locks taken by subtransaction `sub` or later (0: all).
    pub(super) fn release_row_locks(&mut self, g: &Guard, sub: u32) {
        let _ = g;
        let (base, engine) = (self.lock_tag, self.engine);
        // Chunk by chunk, without allocating more than the kept entries' chunks.
        for chunk in self.row_locks.take_chunks() {
            for (r, s) in chunk {
                if s >= sub {
                    // SAFETY: a row-locked record is deleted only by its holder (us),
                    // which releases it under the guard `g` of that commit: still
                    // allocated.
                    unsafe { r.get() }.unlock_row(tag_of(base, s), engine);
                } else {
                    crate::scope::outside(|| self.row_locks.push((r, s)));
                }
            }
        }
    }

    pub(super) fn lock_row(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        sub: u32,
        mode: LockMode,
    ) -> Result<RowLock> {
        if let Some(e) = self.pending_entry(t, rowid) {
            if e.newest.data.is_null() {
                return Ok(RowLock::Gone);
            }
            if e.origin == super::write_set::Origin::Inserted {
                return Ok(RowLock::Locked {
                    tid: Tid::NONE,
                    fresh: false,
                });
            }
        }
        let engine = self.engine;
        let me = tag_of(self.lock_tag, sub);
        Ok(epoch::with_guard(&engine.collector, |g| {
            let Some(r) = t.rows.get(rowid, g) else {
                return RowLock::Gone;
            };
            // SAFETY: reached through the row index under guard `g`.
            let rec = unsafe { r.get() };
            match rec.try_lock_row(me, mode, engine) {
                crate::rowlock::TryLock::Busy { holder, holding } => {
                    RowLock::Busy { holder, holding }
                }
                crate::rowlock::TryLock::Held { fresh } => {
                    let s = rec.read(g);
                    if s.absent() {
                        if fresh {
                            rec.unlock_row(me, engine);
                        }
                        return RowLock::Gone;
                    }
                    if fresh {
                        // Private memory, like the write set.
                        crate::scope::outside(|| self.row_locks.push((r, sub)));
                    }
                    RowLock::Locked {
                        tid: s.tid(),
                        fresh,
                    }
                }
            }
        }))
    }

    /// Releases a lock `lock_row` just took (the row turned out not to qualify).
    pub(super) fn unlock_row(&mut self, t: &TableHandle, rowid: RowId) {
        let engine = self.engine;
        epoch::with_guard(&engine.collector, |g| {
            if let Some(r) = t.rows.get(rowid, g) {
                // The lock just taken is the last one recorded; otherwise it stays
                // held until the transaction ends.
                if let Some(&(x, s)) = self.row_locks.last() {
                    if x == r {
                        self.row_locks.pop();
                        // SAFETY: reached through the row index under guard `g`.
                        unsafe { r.get() }.unlock_row(tag_of(self.lock_tag, s), engine);
                    }
                }
            }
        });
    }

    /// Waits (at most `timeout`, less if interrupted or released) for `holder` to
    /// release the lock on `rowid`, published as a wait for deadlock detection until
    /// [`Txn::stop_waiting`]. Holds no epoch pin while it sleeps.
    pub(super) fn wait_row(
        &mut self,
        t: &TableHandle,
        rowid: RowId,
        holder: u64,
        timeout: Duration,
    ) {
        let engine = self.engine;
        engine.set_waiting(self.lock_tag, txn_of(holder));
        let rec = epoch::with_guard(&engine.collector, |g| t.rows.get(rowid, g));
        if let Some(r) = rec {
            // The record may be freed once unpinned: only its address is used below,
            // after the WAITING mark set under a fresh pin.
            let seq = engine.wake_seq(r.addr());
            let marked = epoch::with_guard(&engine.collector, |g| {
                t.rows.get(rowid, g) == Some(r) && {
                    // SAFETY: reached through the row index under guard `g`.
                    // Sleep only if somebody still holds it: a release after the mark
                    // wakes us; one before leaves the word free.
                    unsafe { r.get() }
                        .owner
                        .fetch_or(WAITING, std::sync::atomic::Ordering::AcqRel)
                        & !WAITING
                        != 0
                }
            });
            if marked {
                engine.sleep_on_row_addr(r.addr(), seq, timeout);
            }
        }
    }

    /// Ends the wait published by [`Txn::wait_row`].
    pub(super) fn stop_waiting(&mut self) {
        self.engine.set_waiting(self.lock_tag, 0);
    }
}
