//! The packed row format.
//!
//! ```text
//! [null bitmap: ceil(n/8) bytes][fixed area: one slot per column][variable area]
//! ```
//! A fixed-width column's slot holds its value; a variable-width column's slot holds
//! `u32 offset | u32 length` (little-endian, offset from the row start) of its bytes in
//! the variable area. A null column has its bitmap bit set and a zeroed slot. Rows are
//! plain byte strings: no alignment is assumed when reading them.

use crate::catalog::TableDef;
use crate::error::{Error, Result};

/// Largest packed row.
pub const MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
enum Slot {
    Fixed { offset: u32, width: u32 },
    Var { offset: u32 },
}

/// Where each column of a table lives in a packed row.
#[derive(Debug, Clone)]
pub struct RowLayout {
    slots: Vec<Slot>,
    nullable: Vec<bool>,
    names: Vec<String>,
    fixed_end: usize,
}

impl RowLayout {
    pub fn new(def: &TableDef) -> Self {
        let bitmap_len = def.columns.len().div_ceil(8);
        let mut offset = bitmap_len;
        let mut slots = Vec::with_capacity(def.columns.len());
        for c in &def.columns {
            match c.ty.fixed_width() {
                Some(w) => {
                    slots.push(Slot::Fixed {
                        offset: offset as u32,
                        width: w as u32,
                    });
                    offset += w;
                }
                None => {
                    slots.push(Slot::Var {
                        offset: offset as u32,
                    });
                    offset += 8;
                }
            }
        }
        RowLayout {
            slots,
            nullable: def.columns.iter().map(|c| c.nullable).collect(),
            names: def.columns.iter().map(|c| c.name.clone()).collect(),
            fixed_end: offset,
        }
    }

    pub fn columns(&self) -> usize {
        self.slots.len()
    }

    /// Packs one value per column (None = NULL) into `out` (cleared first).
    pub fn pack_into(&self, values: &[Option<&[u8]>], out: &mut Vec<u8>) -> Result<()> {
        if values.len() != self.slots.len() {
            return Err(Error::ColumnCount {
                got: values.len(),
                expected: self.slots.len(),
            });
        }
        let var_len: usize = values.iter().flatten().map(|v| v.len()).sum();
        let size = self.fixed_end + var_len;
        if size > MAX_ROW_BYTES {
            return Err(Error::RowTooLarge {
                size,
                max: MAX_ROW_BYTES,
            });
        }
        out.clear();
        out.resize(self.fixed_end, 0);
        out.reserve(var_len);
        for (i, (slot, v)) in self.slots.iter().zip(values).enumerate() {
            let Some(v) = v else {
                if !self.nullable[i] {
                    return Err(Error::NullViolation {
                        column: self.names[i].clone(),
                    });
                }
                out[i / 8] |= 1 << (i % 8);
                continue;
            };
            match *slot {
                Slot::Fixed { offset, width } => {
                    if v.len() != width as usize {
                        return Err(Error::BadValue {
                            column: self.names[i].clone(),
                            got: v.len(),
                            expected: width as usize,
                        });
                    }
                    out[offset as usize..(offset + width) as usize].copy_from_slice(v);
                }
                Slot::Var { offset } => {
                    let at = out.len() as u32;
                    let o = offset as usize;
                    out[o..o + 4].copy_from_slice(&at.to_le_bytes());
                    out[o + 4..o + 8].copy_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        Ok(())
    }

    pub fn pack(&self, values: &[Option<&[u8]>]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.pack_into(values, &mut out)?;
        Ok(out)
    }

    /// The bytes of column `i` of `row`, or None if it is NULL.
    ///
    /// Panics if `row` was not packed with this layout (a corrupt row is a bug, never
    /// user input: rows are packed by `pack_into` only).
    #[inline]
    pub fn get<'r>(&self, row: &'r [u8], i: usize) -> Option<&'r [u8]> {
        if row[i / 8] & (1 << (i % 8)) != 0 {
            return None;
        }
        match self.slots[i] {
            Slot::Fixed { offset, width } => Some(&row[offset as usize..(offset + width) as usize]),
            Slot::Var { offset } => {
                let o = offset as usize;
                let at = u32::from_le_bytes(row[o..o + 4].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(row[o + 4..o + 8].try_into().unwrap()) as usize;
                Some(&row[at..at + len])
            }
        }
    }

    /// Checks that `row` is well formed for this layout (used on rows read from disk).
    pub fn check(&self, row: &[u8]) -> bool {
        if row.len() < self.fixed_end {
            return false;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if let Slot::Var { offset } = *slot {
                if row[i / 8] & (1 << (i % 8)) != 0 {
                    continue;
                }
                let o = offset as usize;
                let at = u32::from_le_bytes(row[o..o + 4].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(row[o + 4..o + 8].try_into().unwrap()) as usize;
                if at < self.fixed_end || at.checked_add(len).is_none_or(|e| e > row.len()) {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, ColumnType, ColumnType::*};

    fn every_type() -> TableDef {
        let tys = [
            Bool,
            Int2,
            Int4,
            Int8,
            Float4,
            Float8,
            Numeric,
            Char(3),
            Varchar(10),
            Text,
            Bytea,
            Date,
            Time,
            TimeTz,
            Timestamp,
            TimestampTz,
            Interval,
            Uuid,
            Json,
            Jsonb,
        ];
        TableDef {
            database: 0,
            name: "all".into(),
            columns: tys
                .iter()
                .enumerate()
                .map(|(i, t)| ColumnDef::new(&format!("c{i}"), *t, i != 0))
                .collect(),
        }
    }

    fn sample(ty: ColumnType, seed: u8) -> Vec<u8> {
        match ty.fixed_width() {
            Some(w) => (0..w)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
                .collect(),
            None => (0..(seed as usize % 7)).map(|i| b'a' + i as u8).collect(),
        }
    }

    #[test]
    fn round_trip_every_type_with_nulls() {
        let def = every_type();
        let layout = RowLayout::new(&def);
        for mask in 0u32..64 {
            let vals: Vec<Option<Vec<u8>>> = def
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i != 0 && (mask >> (i % 6)) & 1 == 1 {
                        None
                    } else {
                        Some(sample(c.ty, (i as u8) ^ mask as u8))
                    }
                })
                .collect();
            let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
            let row = layout.pack(&refs).unwrap();
            assert!(layout.check(&row));
            for (i, v) in vals.iter().enumerate() {
                assert_eq!(layout.get(&row, i), v.as_deref(), "column {i} mask {mask}");
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        let def = every_type();
        let layout = RowLayout::new(&def);
        let mut vals: Vec<Option<&[u8]>> = vec![None; def.columns.len()];
        assert!(matches!(
            layout.pack(&vals),
            Err(Error::NullViolation { .. })
        ));
        vals[0] = Some(&[1, 2]);
        assert!(matches!(layout.pack(&vals), Err(Error::BadValue { .. })));
        assert!(matches!(
            layout.pack(&vals[..3]),
            Err(Error::ColumnCount { .. })
        ));
        vals[0] = Some(&[1]);
        let big = vec![0u8; MAX_ROW_BYTES];
        vals[9] = Some(&big);
        assert_eq!(layout.pack(&vals).unwrap_err().sqlstate(), "54000");
    }

    #[test]
    fn check_detects_truncation() {
        let def = every_type();
        let layout = RowLayout::new(&def);
        let vals: Vec<Option<Vec<u8>>> =
            def.columns.iter().map(|c| Some(sample(c.ty, 5))).collect();
        let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
        let row = layout.pack(&refs).unwrap();
        assert!(!layout.check(&row[..row.len() - 1]));
        assert!(!layout.check(&row[..3]));
    }
}
