//! Copying a table: what `CREATE DATABASE ... TEMPLATE t` does to the memory tables of
//! the template, so the new database gets its own tables (same relations, rows, keys
//! and indexes) instead of sharing the template's.

use crate::engine::Engine;
use crate::error::Result;
use crate::ids::TableId;
use crate::index::IndexDef;
use crate::txn::{RowBatch, ScanCursor, Stmt};

/// Rows copied per transaction (bounds the write set of a copy of a large table).
const ROWS_PER_COMMIT: usize = 10_000;

impl Engine {
    /// Creates table `to` as a copy of table `from`: its definition, its indexes
    /// (with new index ids) and its committed rows, everything logged like ordinary
    /// DDL and commits. An existing table `to` is replaced (it can only be left over
    /// from a copy or create that never committed). Returns the rows copied.
    ///
    /// The caller keeps writers of `from` out meanwhile (PostgreSQL allows no other
    /// session in a template database while it is copied) and drops `to` if the
    /// copy fails or its transaction aborts.
    pub fn copy_table(&'static self, from: TableId, to: TableId) -> Result<u64> {
        let Some(src) = self.table(from) else {
            return Err(crate::error::Error::NoSuchTable { table: from });
        };
        if *src.residency() != crate::unload::Residency::Loaded {
            // Its rows are not in memory: a copy would be silently empty.
            return Err(crate::error::Error::NotLoaded {
                table: from,
                state: src.residency().state(),
            });
        }
        if self.table(to).is_some() {
            self.drop_table(to)?;
        }
        self.create_table(to, src.def.clone())?;
        let dst = self.table(to).expect("just created");
        // Indexes first, on the empty table: rows then go in with their keys.
        for def in src.index_defs() {
            let mut txn = self.begin();
            txn.create_index(
                &dst,
                IndexDef {
                    id: self.next_index_id(),
                    ..def
                },
            )?;
            txn.commit()?;
        }
        let stmt = Stmt { cid: 0, sub: 1 };
        let mut reader = self.begin();
        let mut cursor = ScanCursor::new();
        let mut batch = RowBatch::new();
        let mut copied = 0u64;
        while !cursor.done() {
            reader.scan(&src, &mut cursor, u32::MAX, &mut batch, ROWS_PER_COMMIT)?;
            if batch.is_empty() {
                continue;
            }
            let mut writer = self.begin();
            while let Some(r) = batch.next() {
                writer.insert(&dst, r.data, stmt)?;
                copied += 1;
            }
            writer.commit()?;
        }
        reader.commit()?;
        Ok(copied)
    }
}
