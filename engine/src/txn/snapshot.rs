//! A transaction's snapshots: registered in the engine's snapshot table while they
//! may be read at (see [`crate::snapshots`]), so the versions they see are kept.

use super::{Isolation, Txn};
use crate::error::{Error, Result};
use crate::ids::Tid;
use crate::snapshots::SNAPSHOT_SLOTS;

impl Txn {
    /// Takes and registers a snapshot. The transaction's slot holds the oldest
    /// snapshot it still uses; a newer one does not move it.
    pub(super) fn take_snapshot(&mut self) -> Result<Tid> {
        let engine = self.engine;
        let s0 = engine.snapshot_tid();
        match self.snap_slot {
            Some(i) => {
                if engine.snapshots().get(i) > s0 {
                    engine.snapshots().set(i, s0);
                }
            }
            None => {
                let i =
                    engine
                        .snapshots()
                        .claim(s0, self.lock_tag)
                        .ok_or(Error::TooManySnapshots {
                            max: SNAPSHOT_SLOTS,
                        })?;
                self.snap_slot = Some(i);
            }
        }
        Ok(engine.snapshot_tid())
    }

    /// Read committed: the oldest snapshot the caller still reads at (None: none).
    /// Versions only older snapshots needed may then be reclaimed.
    pub(super) fn retain_snapshots(&mut self, oldest: Option<Tid>) {
        if self.iso != Isolation::ReadCommitted {
            return;
        }
        match (self.snap_slot, oldest) {
            (Some(i), Some(at)) => self.engine.snapshots().set(i, at),
            (Some(_), None) => self.release_snapshots(),
            (None, _) => {}
        }
    }

    /// Releases the transaction's slot (at its end).
    pub(super) fn release_snapshots(&mut self) {
        if let Some(i) = self.snap_slot.take() {
            self.engine.snapshots().release(i);
        }
        self.statement_snapshot = None;
    }
}
