//! Row filters: conditions a scan checks on each row where it lies, before copying it
//! out (or, for an aggregate, before adding it).
//!
//! A filter is a conjunction of per-column conditions: IS NULL, IS NOT NULL, or a
//! range of the column's memcomparable key (see [`crate::keys`]) with inclusive or
//! exclusive bounds (equality is a range of one key). The caller builds the bounds the
//! way it builds an index scan's, so a condition holds exactly when the index order
//! says it does; a NULL column satisfies no range. Rows a filter rejects are rows the
//! query's own conditions reject, so a caller may check a filter first and its
//! conditions after.
//!
//! Checking a row encodes its filtered columns' keys into the caller's scratch buffer:
//! it allocates only when a key outgrows the buffer.

use crate::catalog::ColumnType;
use crate::keys;
use crate::row::RowLayout;

/// One bound of a range: the encoded key and whether it is included.
pub type Bound = Option<(Vec<u8>, bool)>;

/// A condition on one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnCond {
    IsNull,
    NotNull,
    /// Not NULL, and the key between `lo` and `hi` (None: unbounded on that side).
    Range {
        lo: Bound,
        hi: Bound,
    },
    /// Not NULL, and the key one of these (sorted, without duplicates: `IN (...)`).
    AnyOf(Vec<Vec<u8>>),
    /// No row qualifies (an equality with a value no column value equals, a NULL
    /// comparison value).
    Never,
}

/// A conjunction of column conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    conds: Vec<(usize, ColumnType, ColumnCond, Option<IntCheck>)>,
}

/// A condition on an integer-like column, checked on its value without encoding a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IntCheck {
    Range(IntRange),
    /// One of these values (sorted).
    AnyOf(IntForm, Vec<i64>),
}

impl IntCheck {
    fn of(ty: ColumnType, cond: &ColumnCond) -> Option<IntCheck> {
        match cond {
            ColumnCond::AnyOf(keys) => {
                let form = IntForm::of(ty)?;
                let mut v = keys
                    .iter()
                    .map(|k| form.decode(k))
                    .collect::<Option<Vec<i64>>>()?;
                v.sort_unstable();
                Some(IntCheck::AnyOf(form, v))
            }
            _ => IntRange::of(ty, cond).map(IntCheck::Range),
        }
    }

    #[inline]
    fn check(&self, b: &[u8]) -> bool {
        match self {
            IntCheck::Range(r) => r.contains(b),
            IntCheck::AnyOf(form, v) => form.read(b).is_some_and(|x| v.binary_search(&x).is_ok()),
        }
    }
}

/// How an integer-like column's bytes read as an integer that orders as its type
/// (and its key) does: integers, dates and times, money (signed), oid (unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntForm {
    I16,
    I32,
    U32,
    I64,
}

impl IntForm {
    pub fn of(ty: ColumnType) -> Option<IntForm> {
        use ColumnType as T;
        Some(match ty {
            T::Int2 => IntForm::I16,
            T::Int4 | T::Date => IntForm::I32,
            T::Oid => IntForm::U32,
            T::Int8 | T::Time | T::Timestamp | T::TimestampTz | T::Money => IntForm::I64,
            _ => return None,
        })
    }

    fn width(self) -> usize {
        match self {
            IntForm::I16 => 2,
            IntForm::I32 | IntForm::U32 => 4,
            IntForm::I64 => 8,
        }
    }

    /// The value of a column's bytes (little-endian, as rows store them); None if
    /// they are not this form's width.
    #[inline]
    pub fn read(self, b: &[u8]) -> Option<i64> {
        Some(match self {
            IntForm::I16 => i16::from_le_bytes(b.try_into().ok()?) as i64,
            IntForm::I32 => i32::from_le_bytes(b.try_into().ok()?) as i64,
            IntForm::U32 => u32::from_le_bytes(b.try_into().ok()?) as i64,
            IntForm::I64 => i64::from_le_bytes(b.try_into().ok()?),
        })
    }

    /// The value a key encodes (see `keys::encode_value`: a value mark, then the
    /// big-endian bytes with the sign bit flipped for signed types).
    fn decode(self, k: &[u8]) -> Option<i64> {
        let (&mark, b) = k.split_first()?;
        if mark != keys::VALUE_MARK || b.len() != self.width() {
            return None;
        }
        Some(match self {
            IntForm::I16 => (u16::from_be_bytes(b.try_into().ok()?) ^ (1 << 15)) as i16 as i64,
            IntForm::I32 => (u32::from_be_bytes(b.try_into().ok()?) ^ (1 << 31)) as i32 as i64,
            IntForm::U32 => u32::from_be_bytes(b.try_into().ok()?) as i64,
            IntForm::I64 => (u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64,
        })
    }
}

/// A range of an integer-like column, checked on the values without encoding keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IntRange {
    form: IntForm,
    lo: Option<(i64, bool)>,
    hi: Option<(i64, bool)>,
}

impl IntRange {
    fn of(ty: ColumnType, cond: &ColumnCond) -> Option<IntRange> {
        let ColumnCond::Range { lo, hi } = cond else {
            return None;
        };
        let form = IntForm::of(ty)?;
        let decode = |b: &Bound| -> Option<Option<(i64, bool)>> {
            match b {
                None => Some(None),
                Some((k, incl)) => Some(Some((form.decode(k)?, *incl))),
            }
        };
        Some(IntRange {
            form,
            lo: decode(lo)?,
            hi: decode(hi)?,
        })
    }

    #[inline]
    fn contains(&self, b: &[u8]) -> bool {
        let Some(v) = self.form.read(b) else {
            return false;
        };
        self.lo
            .is_none_or(|(l, incl)| if incl { v >= l } else { v > l })
            && self
                .hi
                .is_none_or(|(h, incl)| if incl { v <= h } else { v < h })
    }
}

impl RowFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds condition `cond` on column `col` (of type `ty`).
    pub fn push(&mut self, col: usize, ty: ColumnType, cond: ColumnCond) {
        let fast = IntCheck::of(ty, &cond);
        self.conds.push((col, ty, cond, fast));
    }

    pub fn is_empty(&self) -> bool {
        self.conds.is_empty()
    }

    /// True if no row can pass.
    pub fn never(&self) -> bool {
        self.conds
            .iter()
            .any(|(_, _, c, _)| *c == ColumnCond::Never)
    }

    /// Does `row` (packed with `layout`) pass every condition? `scratch` holds the keys
    /// of variable-width columns.
    pub fn matches(&self, layout: &RowLayout, row: &[u8], scratch: &mut Vec<u8>) -> bool {
        self.conds.iter().all(|(col, ty, cond, fast)| {
            let v = layout.get(row, *col);
            if let Some(check) = fast {
                return v.is_some_and(|b| check.check(b));
            }
            match cond {
                ColumnCond::IsNull => v.is_none(),
                ColumnCond::NotNull => v.is_some(),
                ColumnCond::Never => false,
                ColumnCond::Range { lo, hi } => {
                    let Some(v) = v else {
                        return false;
                    };
                    with_key(*ty, v, scratch, |k| in_range(k, lo, hi)).unwrap_or(false)
                }
                ColumnCond::AnyOf(keys) => {
                    let Some(v) = v else {
                        return false;
                    };
                    with_key(*ty, v, scratch, |k| {
                        keys.binary_search_by(|x| x.as_slice().cmp(k)).is_ok()
                    })
                    .unwrap_or(false)
                }
            }
        })
    }
}

/// Calls `f` with the key of value `v` (encoded in `scratch`), or returns None if `v`
/// cannot be encoded (never for a row the engine packed): such a row passes no
/// condition.
fn with_key<R>(
    ty: ColumnType,
    v: &[u8],
    scratch: &mut Vec<u8>,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    scratch.clear();
    let mut encode = || keys::encode_value(ty, Some(v), scratch).is_ok();
    let ok = if ty == ColumnType::Numeric {
        // Its encoding allocates a work buffer: in the caller's memory, not the
        // engine's shared memory (filters run inside scans).
        crate::scope::outside(encode)
    } else {
        encode()
    };
    ok.then(|| f(scratch))
}

fn in_range(k: &[u8], lo: &Bound, hi: &Bound) -> bool {
    let above = match lo {
        None => true,
        Some((b, incl)) => {
            if *incl {
                k >= &b[..]
            } else {
                k > &b[..]
            }
        }
    };
    above
        && match hi {
            None => true,
            Some((b, incl)) => {
                if *incl {
                    k <= &b[..]
                } else {
                    k < &b[..]
                }
            }
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnDef, TableDef};

    fn layout() -> RowLayout {
        RowLayout::new(&TableDef {
            name: "t".into(),
            columns: vec![
                ColumnDef::new("a", ColumnType::Int4, true),
                ColumnDef::new("b", ColumnType::Text, true),
            ],
            database: 0,
        })
    }

    fn key(ty: ColumnType, v: &[u8]) -> Vec<u8> {
        let mut k = Vec::new();
        keys::encode_value(ty, Some(v), &mut k).unwrap();
        k
    }

    proptest::proptest! {
        /// The integer fast path decides as the keys' byte order does.
        #[test]
        fn integer_ranges_agree_with_key_order(
            v in proptest::prelude::any::<i64>(),
            lo in proptest::prelude::any::<i64>(),
            hi in proptest::prelude::any::<i64>(),
            incl in proptest::prelude::any::<(bool, bool)>(),
            which in 0usize..9,
        ) {
            let (ty, bytes): (ColumnType, fn(i64) -> Vec<u8>) = match which {
                0 => (ColumnType::Int2, |x| (x as i16).to_le_bytes().to_vec()),
                1 => (ColumnType::Int4, |x| (x as i32).to_le_bytes().to_vec()),
                2 => (ColumnType::Oid, |x| (x as u32).to_le_bytes().to_vec()),
                3 => (ColumnType::Date, |x| (x as i32).to_le_bytes().to_vec()),
                4 => (ColumnType::Time, |x| x.to_le_bytes().to_vec()),
                5 => (ColumnType::Timestamp, |x| x.to_le_bytes().to_vec()),
                6 => (ColumnType::TimestampTz, |x| x.to_le_bytes().to_vec()),
                7 => (ColumnType::Money, |x| x.to_le_bytes().to_vec()),
                _ => (ColumnType::Int8, |x| x.to_le_bytes().to_vec()),
            };
            let l = RowLayout::new(&TableDef {
                name: "t".into(),
                columns: vec![ColumnDef::new("a", ty, true)],
                database: 0,
            });
            let (kv, klo, khi) = (key(ty, &bytes(v)), key(ty, &bytes(lo)), key(ty, &bytes(hi)));
            let cond = ColumnCond::Range { lo: Some((klo.clone(), incl.0)), hi: Some((khi.clone(), incl.1)) };
            let mut f = RowFilter::new();
            f.push(0, ty, cond.clone());
            proptest::prop_assert!(IntCheck::of(ty, &cond).is_some());
            let want = (if incl.0 { kv >= klo } else { kv > klo })
                && (if incl.1 { kv <= khi } else { kv < khi });
            let row = l.pack(&[Some(&bytes(v))]).unwrap();
            proptest::prop_assert_eq!(f.matches(&l, &row, &mut Vec::new()), want);
        }
    }

    #[test]
    fn ranges_nulls_and_conjunctions() {
        let l = layout();
        let row = |a: Option<i32>, b: Option<&str>| {
            let a = a.map(|x| x.to_le_bytes().to_vec());
            l.pack(&[a.as_deref(), b.map(str::as_bytes)]).unwrap()
        };
        let k5 = key(ColumnType::Int4, &5i32.to_le_bytes());
        let mut s = Vec::new();
        // a > 5 (exclusive), and a <= 5 / a = 5 (one key, inclusive).
        let mut gt = RowFilter::new();
        gt.push(
            0,
            ColumnType::Int4,
            ColumnCond::Range {
                lo: Some((k5.clone(), false)),
                hi: None,
            },
        );
        let mut eq = RowFilter::new();
        eq.push(
            0,
            ColumnType::Int4,
            ColumnCond::Range {
                lo: Some((k5.clone(), true)),
                hi: Some((k5.clone(), true)),
            },
        );
        for (a, want_gt, want_eq) in [
            (Some(6), true, false),
            (Some(5), false, true),
            (Some(-7), false, false),
            (None, false, false),
        ] {
            let r = row(a, Some("x"));
            assert_eq!(gt.matches(&l, &r, &mut s), want_gt, "{a:?} > 5");
            assert_eq!(eq.matches(&l, &r, &mut s), want_eq, "{a:?} = 5");
        }
        // b = 'abc' AND a IS NULL; text keys go through the scratch buffer.
        let mut f = RowFilter::new();
        let kb = key(ColumnType::Text, b"abc");
        f.push(
            1,
            ColumnType::Text,
            ColumnCond::Range {
                lo: Some((kb.clone(), true)),
                hi: Some((kb, true)),
            },
        );
        f.push(0, ColumnType::Int4, ColumnCond::IsNull);
        assert!(f.matches(&l, &row(None, Some("abc")), &mut s));
        assert!(!f.matches(&l, &row(Some(1), Some("abc")), &mut s));
        assert!(!f.matches(&l, &row(None, Some("abd")), &mut s));
        assert!(!f.matches(&l, &row(None, None), &mut s));
        // IN lists: integers (fast path) and text (keys).
        let mut any = RowFilter::new();
        let mut ks: Vec<Vec<u8>> = [9i32, -3, 5]
            .iter()
            .map(|x| key(ColumnType::Int4, &x.to_le_bytes()))
            .collect();
        ks.sort();
        any.push(0, ColumnType::Int4, ColumnCond::AnyOf(ks));
        let mut tk = vec![key(ColumnType::Text, b"abc"), key(ColumnType::Text, b"")];
        tk.sort();
        any.push(1, ColumnType::Text, ColumnCond::AnyOf(tk));
        assert!(any.matches(&l, &row(Some(-3), Some("abc")), &mut s));
        assert!(any.matches(&l, &row(Some(9), Some("")), &mut s));
        assert!(!any.matches(&l, &row(Some(4), Some("abc")), &mut s));
        assert!(!any.matches(&l, &row(Some(5), Some("ab")), &mut s));
        assert!(!any.matches(&l, &row(None, Some("abc")), &mut s));
        let mut n = RowFilter::new();
        n.push(1, ColumnType::Text, ColumnCond::NotNull);
        assert!(n.matches(&l, &row(None, Some("")), &mut s));
        n.push(0, ColumnType::Int4, ColumnCond::Never);
        assert!(n.never() && !n.matches(&l, &row(Some(1), Some("")), &mut s));
    }
}
