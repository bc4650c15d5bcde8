//! Undoing writes: abort of the whole transaction, and rollback to a savepoint
//! (every write of a subtransaction and its children).
//!
//! Both work chunk by chunk, freeing as they go: an abort must not need memory (it
//! often follows a statement refused for lack of it).

use super::write_set::{Origin, WriteEntry};
use super::{free_private, pending_bytes, Txn};
use crate::epoch;
use crate::garbage::{Garbage, Retired};
use crossbeam_epoch::Guard;

impl Txn {
    pub(super) fn abort(&mut self) {
        let engine = self.engine;
        self.release_snapshots();
        self.undo_prepared();
        let discarded = self.entries.len();
        let chunks = self.entries.take_chunks();
        engine.set_waiting(self.lock_tag, 0);
        epoch::with_guard(&engine.collector, |g| {
            self.release_row_locks(g, 0);
            let mut garbage = Garbage::default();
            for chunk in chunks {
                for e in chunk {
                    self.discard_entry(e, g, &mut garbage);
                }
            }
            garbage.retire(engine, g);
        });
        self.pending.clear();
        self.rekeyed.clear();
        self.truncations.clear();
        self.end_spills();
        self.active = false;
        reclaim_after(engine, discarded);
    }

    /// Undoes one write-set entry: unlinks what its insert linked, frees its buffers.
    pub(super) fn discard_entry(&self, e: WriteEntry, g: &Guard, garbage: &mut Garbage) {
        if e.origin == Origin::Inserted {
            // Unlink the index entries of the inserted version before it is freed.
            let table = &self.tables[e.table];
            // SAFETY: pending buffers live until freed below.
            if let Some(base) = unsafe { pending_bytes(e.base_version()) } {
                let mut key = Vec::new();
                for index in table.indexes().iter() {
                    if index.key_of(&table.layout, base, &mut key).is_ok()
                        && index.remove(&key, e.rowid, g)
                    {
                        self.engine
                            .account(-(index.entry_bytes(key.len()) as isize));
                    }
                }
            }
        }
        free_private(self.engine, e.newest.data);
        for o in &e.older {
            free_private(self.engine, o.data);
        }
        if let (Origin::Inserted, Some(rec)) = (e.origin, e.rec) {
            // Our own absent record, linked until now; who waits for its key goes on.
            // SAFETY: ours, still linked.
            unsafe { rec.get() }.release_insert_lock(self.lock_tag, self.engine);
            self.tables[e.table].rows.remove(e.rowid, g);
            garbage.push(Retired::Record(rec.0));
        }
    }

    pub(super) fn rollback_to(&mut self, sub: u32) {
        let engine = self.engine;
        // Chunk by chunk (see `abort`): kept entries move to new chunks as old ones
        // are freed.
        let discarded = self.entries.len();
        let chunks = self.entries.take_chunks();
        self.pending.clear();
        engine.set_waiting(self.lock_tag, 0);
        epoch::with_guard(&engine.collector, |g| {
            let mut garbage = Garbage::default();
            for chunk in chunks {
                for mut e in chunk {
                    while e.newest.sub >= sub {
                        let Some(prev) = e.older.pop() else { break };
                        free_private(engine, std::mem::replace(&mut e.newest, prev).data);
                    }
                    if e.newest.sub >= sub {
                        self.discard_entry(e, g, &mut garbage);
                    } else {
                        self.push_entry(e);
                    }
                }
            }
            // After the writes are undone: PostgreSQL releases the row locks of an
            // aborted subtransaction too.
            self.release_row_locks(g, sub);
            garbage.retire(engine, g);
        });
        self.rollback_truncations(sub);
        reclaim_after(engine, discarded - self.entries.len());
    }
}

/// Entries discarded at once above which the garbage is collected right away.
const RECLAIM_ABOVE: usize = 4096;

/// After `discarded` write-set entries were undone: their memory (row buffers,
/// records, skip-list nodes) waits in epoch bags, one deferred function per batch or
/// node, until enough epochs pass. A big abort collects it at once, so that the memory
/// an aborted statement held is back (and `memfdw.memory()` says so) when the
/// statement ends, not only after later work happens to advance the epoch.
fn reclaim_after(engine: &crate::engine::Engine, discarded: usize) {
    if discarded > RECLAIM_ABOVE {
        // Up to ~3 deferred functions per entry, 64 per bag, 8 bags per collection.
        epoch::reclaim_rounds(&engine.collector, discarded * 3 / 64 / 8 + 4);
    }
}
