//! TRUNCATE inside a transaction (see [`crate::truncate`]): the transaction works on
//! an empty twin of the table from the TRUNCATE on; its writes to the table before the
//! TRUNCATE are dropped at commit; the commit logs a truncate entry and puts the twin
//! in the catalog. PostgreSQL's AccessExclusiveLock keeps every other session away from
//! the table meanwhile; checkpoints read the catalog, so they never see the twin
//! before the commit.

use super::Txn;
use crate::engine::TableHandle;
use crate::epoch;
use crate::error::Result;
use crate::garbage::Garbage;
use crate::ids::TableId;
use crate::table::Table;
use std::sync::Arc;

/// One TRUNCATE of this transaction.
pub(super) struct Truncation {
    pub id: TableId,
    /// The table it emptied: the catalog's, or the twin of an earlier TRUNCATE.
    pub replaced: Arc<Table>,
    /// The empty twin the transaction uses from then on.
    pub with: Arc<Table>,
    /// The subtransaction that ran it.
    pub sub: u32,
    /// For a load or unload (see [`super::unload`]): Some(the spill file a load read).
    pub reside: Option<Option<String>>,
}

/// A table that a transaction's commit replaces (see [`Txn::final_truncations`]).
pub(super) struct Replacement {
    /// The catalog's table.
    pub old: Arc<Table>,
    /// What replaces it: the last replacement the transaction made.
    pub new: Arc<Table>,
    /// If the first replacement was a load or unload: that replacement, and the spill
    /// file a load read.
    pub reside: Option<(Arc<Table>, Option<String>)>,
}

impl Txn {
    /// The table `id` as this transaction sees it: the twin of its last TRUNCATE of
    /// it, or the catalog's.
    pub(super) fn current_table(&self, id: TableId) -> Option<TableHandle> {
        match self.truncations.iter().rev().find(|x| x.id == id) {
            Some(x) => Some(TableHandle::of(x.with.clone())),
            None => self.engine.table(id),
        }
    }

    /// ALTER TABLE of `t` (as this transaction sees it) by subtransaction `sub`: from
    /// now on the transaction works on an empty table with definition `def` and indexes
    /// `indexes`, which the caller fills with `t`'s rows, rewritten; at commit it
    /// replaces the table (logged as a redefine entry).
    pub(super) fn redefine(
        &mut self,
        t: &TableHandle,
        def: crate::catalog::TableDef,
        indexes: &[crate::index::IndexDef],
        sub: u32,
    ) -> Result<()> {
        let with = self.engine.redefined_twin(t, def, indexes, false)?;
        self.replace_with(t, with, sub, None);
        Ok(())
    }

    /// Is `t` a replacement made by this transaction (TRUNCATE or ALTER), not yet in
    /// the catalog? Its index DDL is then not logged on its own: the commit logs the
    /// replacement with its indexes.
    pub(super) fn is_twin(&self, t: &Arc<Table>) -> bool {
        self.truncations.iter().any(|x| Arc::ptr_eq(&x.with, t))
    }

    /// Did this transaction TRUNCATE table `id`?
    pub(super) fn truncations_of(&self, id: TableId) -> bool {
        self.truncations.iter().any(|x| x.id == id)
    }

    /// TRUNCATE of `t` (as this transaction sees it) by subtransaction `sub`.
    pub(super) fn truncate(&mut self, t: &TableHandle, sub: u32) -> Result<()> {
        let with = self.engine.empty_twin(t)?;
        self.replace_with(t, with, sub, None);
        Ok(())
    }

    /// From now on this transaction works on `with` in place of `t` (`reside`: see
    /// [`Truncation::reside`]).
    pub(super) fn replace_with(
        &mut self,
        t: &TableHandle,
        with: Arc<Table>,
        sub: u32,
        reside: Option<Option<String>>,
    ) {
        self.truncations.push(Truncation {
            id: t.id,
            replaced: t.arc().clone(),
            with,
            sub,
            reside,
        });
    }

    /// Was table object `t` emptied by a TRUNCATE of this transaction (its writes to it
    /// do not count)?
    pub(super) fn superseded(&self, t: &Arc<Table>) -> bool {
        self.truncations.iter().any(|x| Arc::ptr_eq(&x.replaced, t))
    }

    /// The replacements that take effect at commit: per table, the catalog's table,
    /// the final twin, and the load or unload that came first if one did.
    pub(super) fn final_truncations(&self) -> Vec<Replacement> {
        let mut out: Vec<Replacement> = Vec::new();
        for x in &self.truncations {
            match out.iter_mut().find(|r| r.old.id == x.id) {
                Some(e) => e.new = x.with.clone(),
                None => out.push(Replacement {
                    old: x.replaced.clone(),
                    new: x.with.clone(),
                    reside: x.reside.clone().map(|from| (x.with.clone(), from)),
                }),
            }
        }
        out
    }

    /// Before commit: drops the writes made to tables that a later TRUNCATE of this
    /// transaction emptied.
    pub(super) fn drop_superseded_writes(&mut self) {
        if self.truncations.is_empty() {
            return;
        }
        let engine = self.engine;
        let chunks = self.entries.take_chunks();
        self.pending.clear();
        epoch::with_guard(&engine.collector, |g| {
            let mut garbage = Garbage::default();
            for chunk in chunks {
                for e in chunk {
                    if self.superseded(&self.tables[e.table]) {
                        self.discard_entry(e, g, &mut garbage);
                    } else {
                        self.push_entry(e);
                    }
                }
            }
            garbage.retire(engine, g);
        });
    }

    /// Rolling back to subtransaction `sub` undoes its TRUNCATEs (their twins' writes
    /// are undone with the rest of its writes).
    pub(super) fn rollback_truncations(&mut self, sub: u32) {
        self.truncations.retain(|x| x.sub < sub);
    }
}
