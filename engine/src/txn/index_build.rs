//! CREATE INDEX inside a transaction: build the index over the table's rows, check
//! uniqueness, publish it.

use super::write_set::Origin;
use super::{pending_bytes, unique, RowKey, TableKey, Txn};
use crate::engine::{Need, TableHandle};
use crate::epoch;
use crate::error::Result;
use crate::ids::RowId;
use crate::index::{IndexDef, KeyIndex, KEY_ENTRY_BYTES};
use crate::scope;
use std::sync::Arc;

impl Txn {
    /// Builds index `def` over the rows of `t` and publishes it. Its entries are the
    /// committed rows' keys and this transaction's inserted rows' first keys (what
    /// commit and abort expect); uniqueness is checked on the rows as this transaction
    /// sees them. The caller makes sure no other transaction writes to `t` meanwhile
    /// (PostgreSQL's ShareLock on the table).
    pub(super) fn build_index(&mut self, t: &TableHandle, def: IndexDef) -> Result<()> {
        def.validate(&t.def)?;
        let engine = self.engine;
        let shared = def.clone();
        scope::outside(|| drop(def));
        let unique = shared.unique;
        let index = Arc::new(KeyIndex::new(shared, &t.def, &engine.collector));
        let mut keys_seen: Vec<(Vec<u8>, RowId)> = scope::outside(Vec::new);
        let this = &*self;
        let mut bytes = 0usize;
        let built = epoch::with_guard(&engine.collector, |g| {
            let mut key = Vec::new();
            let mut res = Ok(());
            t.rows.scan_after(None, g, |rowid, rec| {
                // SAFETY: reached through the row index under guard `g`.
                let committed = || unsafe { rec.get() }.read(g).live().map(|(d, _)| d);
                // The version whose keys the index gets, and the newest one (whose
                // keys must be unique).
                let (indexed, newest) = match this.pending_entry(t, rowid) {
                    // SAFETY: pending buffers live until the transaction ends.
                    Some(e) if e.origin == Origin::Inserted => {
                        (unsafe { pending_bytes(e.base_version()) }, e.newest_bytes())
                    }
                    Some(e) => (committed(), e.newest_bytes()),
                    None => (committed(), committed()),
                };
                let step = (|| {
                    if let Some(d) = indexed {
                        index.key_of(&t.layout, d, &mut key)?;
                        if bytes % (1 << 20) < KEY_ENTRY_BYTES + key.len() {
                            engine.check_memory(Need::of(1 << 20))?;
                        }
                        bytes += KEY_ENTRY_BYTES + key.len();
                        index.insert(&key, rowid, rec, g);
                    }
                    if let (true, Some(d)) = (unique, newest) {
                        if !index.key_of(&t.layout, d, &mut key)? {
                            scope::outside(|| keys_seen.push((key.clone(), rowid)));
                        }
                    }
                    Ok(())
                })();
                res = step;
                res.is_ok()
            });
            res
        });
        engine.account(bytes as isize);
        let dup = if built.is_ok() && unique {
            scope::outside(|| {
                keys_seen.sort_unstable();
                keys_seen
                    .windows(2)
                    .find(|w| w[0].0 == w[1].0)
                    .map(|w| w[1].1)
            })
        } else {
            None
        };
        scope::outside(|| drop(keys_seen));
        let result = match (built, dup) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(rowid)) => {
                let mut row = Vec::new();
                self.get_at(t, rowid, u32::MAX, crate::ids::Tid::NEWEST, &mut row);
                Err(unique::violation(&index, t, &row, (false, false)))
            }
            (Ok(()), None) => {
                let log = !self.is_twin(t.arc());
                engine.publish_index(t, index.clone(), log)
            }
        };
        if result.is_err() {
            engine.account(-(bytes as isize));
        }
        // An unpublished index is dropped here: nobody else saw it.
        drop(index);
        if result.is_ok() {
            // This transaction's pending updates of the table may give their rows
            // another key in the new index than the committed one: commit must look.
            let tk = TableKey::of(t.arc());
            let own: Vec<RowKey> = self
                .pending
                .range(RowKey::all_of(tk))
                .filter(|(_, &i)| self.entries.get(i).origin != Origin::Inserted)
                .map(|(&k, _)| k)
                .collect();
            if !own.is_empty() {
                self.rekeyed.note_untracked(tk, own);
            }
        }
        result
    }
}
