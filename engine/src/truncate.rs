//! TRUNCATE in constant engine memory: the transaction gets an empty twin of the table
//! (same definition, indexes and index ids); at commit the twin replaces the table in
//! the catalog, and the old table with all its rows is freed once no reader can hold
//! it. Nothing is allocated per row, so a full engine can always be emptied.
//!
//! The redo log records the replacement inside the commit record (a truncate entry
//! before the rows, see `redo::payload`), so replay empties the table at that point
//! and then applies the rows the same transaction wrote afterwards.

use crate::catalog::TableDef;
use crate::engine::TableHandle;
use crate::engine::{Engine, Need};
use crate::epoch;
use crate::error::{Error, Result};
use crate::index::{IndexDef, KeyIndex};
use crate::redo::payload::Emptying;
use crate::scope;
use crate::table::Table;
use crate::unload::Residency;
use std::path::Path;
use std::sync::Arc;

impl Engine {
    /// A new, unpublished, empty table with `t`'s definition and indexes (same ids);
    /// its row ids continue above `t`'s.
    pub(crate) fn empty_twin(&self, t: &Table) -> Result<Arc<Table>> {
        self.resident_twin(t, None)
    }

    /// [`Engine::empty_twin`], with residency `to` if given (else `t`'s).
    pub(crate) fn resident_twin(&self, t: &Table, to: Option<&Residency>) -> Result<Arc<Table>> {
        let _s = scope::enter();
        let indexes = t.indexes();
        // Like a delete: it frees more than it takes, so it may use the headroom.
        self.check_memory_for_delete(Need::of(4096 * (1 + indexes.len())))?;
        let mut twin = Table::new(t.id, t.def.clone());
        twin.access = t.access.clone();
        twin.residency = to.unwrap_or(&t.residency).clone();
        twin.observe_rowid(crate::ids::RowId(
            t.peek_next_rowid().get().saturating_sub(1),
        ));
        let list: Vec<Arc<KeyIndex>> = indexes
            .iter()
            .map(|i| Arc::new(KeyIndex::new(i.def.clone(), &t.def, &self.collector)))
            .collect();
        twin.set_indexes(list);
        Ok(Arc::new(twin))
    }

    /// Makes `new` table `new.id` in place of `old`, if `old` is still the catalog's
    /// (the commit of a TRUNCATE); `old` is freed once no reader can hold it. Returns
    /// the catalog's reference to `old` instead when `now` (replay: nobody else uses
    /// the engine, and the memory is needed at once), for the caller to drop.
    pub(crate) fn replace_table(
        &self,
        old: &Arc<Table>,
        new: Arc<Table>,
        now: bool,
    ) -> Option<Arc<Table>> {
        let _s = scope::enter();
        let mut tables = self.tables_mut();
        let current = tables.get(&new.id).is_some_and(|c| Arc::ptr_eq(c, old));
        let replaced = if current {
            tables.insert(new.id, new)
        } else {
            None
        };
        drop(tables);
        match replaced {
            Some(t) if !now => {
                epoch::with_guard(&self.collector, |g| g.defer(move || drop(t)));
                None
            }
            other => other,
        }
    }

    /// A new, unpublished, empty table in place of `t` with definition `def` and
    /// indexes `indexes` (ALTER TABLE: the caller fills it with `t`'s rows, rewritten);
    /// its row ids continue above `t`'s. Index ids not in `t` come from
    /// [`Engine::next_index_id`].
    /// `replay`: the log replays the redefinition (see `check_memory_for_replay`).
    pub(crate) fn redefined_twin(
        &self,
        t: &Table,
        mut def: TableDef,
        indexes: &[IndexDef],
        replay: bool,
    ) -> Result<Arc<Table>> {
        def.database = t.id.database;
        def.validate()?;
        for i in indexes {
            i.validate(&def)?;
        }
        let _s = scope::enter();
        let need = Need::of(4096 * (1 + indexes.len()));
        if replay {
            self.check_memory_for_replay(need)?;
        } else {
            self.check_memory(need)?;
        }
        let shared_def = def.clone();
        scope::outside(|| drop(def));
        let mut twin = Table::new(t.id, shared_def);
        twin.access = t.access.clone();
        twin.residency = t.residency.clone();
        twin.observe_rowid(crate::ids::RowId(
            t.peek_next_rowid().get().saturating_sub(1),
        ));
        let list: Vec<Arc<KeyIndex>> = indexes
            .iter()
            .map(|i| {
                self.observe_index_id(i.id);
                Arc::new(KeyIndex::new(i.clone(), &twin.def, &self.collector))
            })
            .collect();
        twin.set_indexes(list);
        Ok(Arc::new(twin))
    }

    /// Replay of a truncate, redefine or residency entry: the table becomes empty now
    /// (with its new definition and indexes, or its new residency, and then the rows
    /// of the spill file a load read, from `spill_dir`).
    pub(crate) fn empty_now(&'static self, e: &Emptying, spill_dir: Option<&Path>) -> Result<()> {
        let id = match e {
            Emptying::Truncate(id) => *id,
            Emptying::Redefine(r) => r.table,
            Emptying::Reside { table, .. } => *table,
        };
        let Some(t) = self.table(id) else {
            return Ok(());
        };
        let twin = match e {
            Emptying::Truncate(_) => self.empty_twin(&t)?,
            Emptying::Redefine(r) => {
                let def = scope::outside(|| r.def.clone());
                self.redefined_twin(&t, def, &r.indexes, true)?
            }
            Emptying::Reside { to, from, .. } => {
                if let Some(f) = to.spill_file() {
                    // Its rows keep their TIDs: new ones must stay above them.
                    self.observe_tid(f.max_tid);
                }
                let twin = self.resident_twin(&t, Some(to))?;
                if let Some(name) = from {
                    let Some(dir) = spill_dir else {
                        return Err(Error::SpillIo(format!(
                            "replaying the load of table {id} needs spill file \"{name}\", and no spill directory was given"
                        )));
                    };
                    let handle = {
                        let _s = scope::enter();
                        TableHandle::of(twin.clone())
                    };
                    let threads = crate::threads::helper_threads();
                    self.read_spill_file(&handle, dir, name, threads, true)?;
                }
                twin
            }
        };
        let old = self.replace_table(t.arc(), twin, true);
        let _s = scope::enter();
        // The last references: the old table and its rows are freed here.
        drop(t);
        drop(old);
        Ok(())
    }
}
