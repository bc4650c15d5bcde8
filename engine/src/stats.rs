//! Statistics for the planner that PostgreSQL does not keep for foreign tables:
//!
//! * distinct values per key prefix of each key index (for a key (a, b): distinct a,
//!   distinct (a, b)), estimated with one HyperLogLog sketch per prefix while ANALYZE
//!   reads the table ([`PrefixSketches`]), and kept in the index ([`IndexStats`]);
//! * rows changed since the last ANALYZE, which decides automatic ANALYZE
//!   ([`Engine::tables_to_analyze`]); the glue adds to it once per statement, the
//!   commit path does nothing.
//!
//! The sketches cost one hash of each prefix of each row's key while ANALYZE scans
//! (which it does anyway, for its sample), and nothing on the foreground path.

use crate::catalog::ColumnType;
use crate::engine::Engine;
use crate::ids::TableId;
use crate::index::MAX_INDEX_COLUMNS;
use crate::point_cache::hash_key;
use crate::row::RowLayout;
use crate::scope;
use crate::table::Table;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// What the last ANALYZE found in a key index: distinct values of each key prefix
/// (0: not computed), the rows it read, and when (the caller's clock, µs).
#[derive(Debug)]
pub struct IndexStats {
    distinct: [AtomicU64; MAX_INDEX_COLUMNS],
    rows: AtomicU64,
    at: AtomicI64,
}

impl Default for IndexStats {
    fn default() -> Self {
        IndexStats {
            distinct: std::array::from_fn(|_| AtomicU64::new(0)),
            rows: AtomicU64::new(0),
            at: AtomicI64::new(0),
        }
    }
}

/// A copy of an index's [`IndexStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStatsView {
    /// Distinct values of the first 1, 2, ... key columns.
    pub distinct: Vec<u64>,
    pub rows: u64,
    pub analyzed_at: i64,
}

impl IndexStats {
    /// The statistics of an index with `columns` key columns, if ANALYZE computed them.
    pub fn view(&self, columns: usize) -> Option<IndexStatsView> {
        let at = self.at.load(Relaxed);
        (at != 0).then(|| IndexStatsView {
            distinct: self.distinct[..columns.min(MAX_INDEX_COLUMNS)]
                .iter()
                .map(|d| d.load(Relaxed))
                .collect(),
            rows: self.rows.load(Relaxed),
            analyzed_at: at,
        })
    }
}

/// Registers of a HyperLogLog sketch: 2^P one-byte registers (16 KB), a standard error
/// of about 0.8%; small counts are exact in practice (linear counting).
const P: u32 = 14;

/// A HyperLogLog sketch of 64-bit hashes.
struct Hll {
    regs: Vec<u8>,
}

impl Hll {
    fn new() -> Hll {
        Hll {
            regs: vec![0; 1 << P],
        }
    }

    fn add(&mut self, h: u64) {
        let i = (h >> (64 - P)) as usize;
        let rank = ((h << P) | (1 << (P - 1))).leading_zeros() as u8 + 1;
        if self.regs[i] < rank {
            self.regs[i] = rank;
        }
    }

    fn estimate(&self) -> f64 {
        let m = self.regs.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self.regs.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
        let zeros = self.regs.iter().filter(|&&r| r == 0).count();
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

/// Sketches of the key prefixes of a table's key indexes, filled row by row (call
/// outside the engine scope: private memory).
pub struct PrefixSketches {
    indexes: Vec<IndexSketches>,
    rows: u64,
    key: Vec<u8>,
}

struct IndexSketches {
    id: u32,
    columns: Vec<u16>,
    types: Vec<ColumnType>,
    prefixes: Vec<Hll>,
}

impl Table {
    /// Empty sketches for this table's key indexes.
    pub fn prefix_sketches(&self) -> PrefixSketches {
        let indexes = self
            .index_defs()
            .into_iter()
            .map(|d| {
                let types = d
                    .columns
                    .iter()
                    .map(|&c| self.def.columns[c as usize].ty)
                    .collect();
                IndexSketches {
                    id: d.id,
                    prefixes: d.columns.iter().map(|_| Hll::new()).collect(),
                    columns: d.columns,
                    types,
                }
            })
            .collect();
        PrefixSketches {
            indexes,
            rows: 0,
            key: Vec::new(),
        }
    }

    /// The statistics of key index `id`, if ANALYZE computed them.
    pub fn index_stats(&self, id: u32) -> Option<IndexStatsView> {
        let _s = scope::enter();
        let list = self.indexes();
        let i = list.iter().find(|i| i.def.id == id)?;
        let n = i.def.columns.len();
        scope::outside(|| i.stats.view(n))
    }
}

impl PrefixSketches {
    /// Adds packed row `row` of a table with layout `layout`.
    pub fn add_row(&mut self, layout: &RowLayout, row: &[u8]) {
        self.rows += 1;
        for ix in &mut self.indexes {
            self.key.clear();
            for ((&c, &ty), hll) in ix.columns.iter().zip(&ix.types).zip(&mut ix.prefixes) {
                if crate::keys::encode_value(ty, layout.get(row, c as usize), &mut self.key)
                    .is_err()
                {
                    break;
                }
                hll.add(hash_key(&self.key));
            }
        }
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The estimates: per index id, distinct values of each prefix.
    pub fn estimates(&self) -> Vec<(u32, Vec<u64>)> {
        self.indexes
            .iter()
            .map(|ix| {
                let d = ix
                    .prefixes
                    .iter()
                    .map(|h| (h.estimate().round() as u64).clamp(self.rows.min(1), self.rows))
                    .collect();
                (ix.id, d)
            })
            .collect()
    }

    /// Stores the estimates in `t`'s indexes, stamped `now`.
    pub fn publish(&self, t: &Table, now: i64) {
        let estimates = self.estimates();
        let _s = scope::enter();
        let list = t.indexes();
        for (id, distinct) in &estimates {
            let Some(i) = list.iter().find(|i| i.def.id == *id) else {
                continue;
            };
            for (slot, &d) in i.stats.distinct.iter().zip(distinct) {
                slot.store(d, Relaxed);
            }
            i.stats.rows.store(self.rows, Relaxed);
            i.stats.at.store(now.max(1), Relaxed);
        }
        drop(list);
    }
}

impl Engine {
    /// Tables (of `database`, or of every database) that an automatic ANALYZE should
    /// read: more rows changed since the last ANALYZE than `threshold` plus
    /// `scale_factor` times their rows (PostgreSQL's `autovacuum_analyze_*` rule).
    /// Those tried least recently come first.
    pub fn tables_to_analyze(
        &self,
        database: Option<u32>,
        threshold: u64,
        scale_factor: f64,
    ) -> Vec<TableId> {
        let mut due: Vec<(i64, TableId)> = Vec::new();
        for id in self.table_ids() {
            if database.is_some_and(|d| d != id.database) {
                continue;
            }
            let Some(t) = self.table(id) else { continue };
            if *t.residency() != crate::unload::Residency::Loaded {
                continue;
            }
            let changed = t.access.changed_since_analyze.load(Relaxed);
            let rows = t.stats().rows.max(0) as f64;
            if changed > 0 && changed as f64 > threshold as f64 + scale_factor * rows {
                due.push((t.access.autoanalyze_tried.load(Relaxed), id));
            }
        }
        due.sort();
        due.into_iter().map(|(_, id)| id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketches_count_distinct_values_closely() {
        for n in [1u64, 2, 10, 1000, 100_000, 1_000_000] {
            let mut h = Hll::new();
            for i in 0..n {
                // Twice each: duplicates do not count.
                h.add(hash_key(&i.to_be_bytes()));
                h.add(hash_key(&i.to_be_bytes()));
            }
            let e = h.estimate();
            let err = (e - n as f64).abs() / n as f64;
            let bound = if n <= 100 { 0.005 } else { 0.02 };
            assert!(err <= bound, "{n}: estimated {e}");
        }
    }
}
