//! Unloading and loading a table inside a transaction (see [`crate::unload`]): the
//! transaction works on a replacement with the new residency from then on, as after
//! a TRUNCATE (see [`super::truncate`]); its commit logs a residency entry.
//!
//! A residency change must be the first change of the table in its transaction (no
//! write, TRUNCATE or ALTER before it), and no index DDL may follow it on the same
//! replacement: the commit logs the residency entry for the catalog's table, and
//! what came after it as for any replacement.

use super::{RowKey, TableKey, Txn};
use crate::engine::TableHandle;
use crate::error::{Error, Result};
use crate::scope;
use crate::unload::{Residency, UnloadMode};
use std::path::Path;

impl Txn {
    /// Has this transaction changed table `t` (written, truncated, altered, loaded or
    /// unloaded it)?
    fn changed_table(&self, t: &TableHandle) -> bool {
        self.truncations_of(t.id)
            || self
                .pending
                .range(RowKey::all_of(TableKey::of(t.arc())))
                .next()
                .is_some()
    }

    /// Unloads `t` (spilling its rows to a file in `dir` for [`UnloadMode::Spill`]).
    /// Returns the new residency, or None if `t` already is unloaded that way (a
    /// spilled table asked to spill, or a discarded one).
    pub(super) fn unload(
        &mut self,
        t: &TableHandle,
        mode: UnloadMode,
        dir: &Path,
        sub: u32,
    ) -> Result<Option<Residency>> {
        if self.changed_table(t) {
            return Err(Error::ChangedInTransaction { table: t.id });
        }
        let engine = self.engine;
        let to = match (mode, t.residency()) {
            (UnloadMode::Spill, Residency::Loaded) => {
                let file = scope::outside(|| engine.write_spill_file(t, dir))?;
                let name = file.name.clone();
                self.spill_files.push(name);
                Residency::Spilled(file)
            }
            (UnloadMode::Spill, _) | (UnloadMode::Discard, Residency::Discarded) => {
                return Ok(None)
            }
            (UnloadMode::Discard, _) => Residency::Discarded,
        };
        let twin = engine.resident_twin(t, Some(&to))?;
        self.replace_with(t, twin, sub, Some(None));
        Ok(Some(scope::outside(|| to.clone())))
    }

    /// Loads `t` back: a spilled table gets its rows from its spill file in `dir`, a
    /// discarded one becomes an empty loaded table. Returns the rows loaded, or None
    /// if `t` is loaded already.
    pub(super) fn load(&mut self, t: &TableHandle, dir: &Path, sub: u32) -> Result<Option<u64>> {
        if self.changed_table(t) {
            return Err(Error::ChangedInTransaction { table: t.id });
        }
        let engine = self.engine;
        let from = match t.residency() {
            Residency::Loaded => return Ok(None),
            Residency::Spilled(f) => Some(f.name.clone()),
            Residency::Discarded => None,
        };
        let twin = engine.resident_twin(t, Some(&Residency::Loaded))?;
        let mut rows = 0;
        if let Some(name) = &from {
            let handle = TableHandle::of(twin.clone());
            let threads = crate::threads::helper_threads();
            // A twin the load fails to fill is dropped here: nobody else saw it.
            rows = scope::outside(|| engine.read_spill_file(&handle, dir, name, threads, false))?;
        }
        self.replace_with(t, twin, sub, Some(from));
        Ok(Some(rows))
    }

    /// Did this transaction load or unload table `id`?
    pub(super) fn resided(&self, id: crate::ids::TableId) -> bool {
        self.truncations
            .iter()
            .any(|x| x.id == id && x.reside.is_some())
    }

    /// Is `t` the replacement a load or unload of this transaction made (index DDL on
    /// it would not be logged)?
    pub(super) fn is_resident_twin(&self, t: &std::sync::Arc<crate::table::Table>) -> bool {
        self.truncations
            .iter()
            .any(|x| x.reside.is_some() && std::sync::Arc::ptr_eq(&x.with, t))
    }

    /// At the end of the transaction (committed or not): the spill files its unloads
    /// wrote are no longer in flight (a committed one is named by the catalog now; the
    /// next sweep deletes the others).
    pub(super) fn end_spills(&mut self) {
        for name in std::mem::take(&mut self.spill_files) {
            self.engine.unpin_spill_file(&name);
        }
    }
}
