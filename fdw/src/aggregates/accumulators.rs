//! The running state of each aggregate the engine computes, and its value at the end
//! (see the parent module for what is computed, exactly as PostgreSQL does).

use memfdw_engine::{ColumnType, IntForm, RowLayout};
use pgrx::pg_sys;
use std::ffi::CString;

/// An aggregate the engine computes; stored in plans as its discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar = 1,
    Count = 2,
    /// `sum(int2)`, `sum(int4)`: int8, wrapping as `int4_sum` does.
    SumToInt8 = 3,
    /// `sum(int8)`: numeric, from a 128-bit sum (`numeric_poly_sum`).
    SumToNumeric = 4,
    /// `avg(int2)`, `avg(int4)`: numeric, from an int8 sum (`int8_avg`).
    AvgOfInt8Sum = 5,
    /// `avg(int8)`: numeric, from a 128-bit sum (`numeric_poly_avg`).
    AvgOf128Sum = 6,
    Min = 7,
    Max = 8,
}

impl AggKind {
    pub fn from_int(v: i32) -> Option<AggKind> {
        use AggKind::*;
        [
            CountStar,
            Count,
            SumToInt8,
            SumToNumeric,
            AvgOfInt8Sum,
            AvgOf128Sum,
            Min,
            Max,
        ]
        .into_iter()
        .find(|k| *k as i32 == v)
    }

    /// The aggregate a built-in aggregate function is, with the column type its
    /// argument must have in the engine (None for `count`, which takes any).
    pub(super) fn of_function(f: u32) -> Option<(AggKind, Option<ColumnType>)> {
        use pg_sys as p;
        use AggKind::*;
        use ColumnType as T;
        let minmax = |k: AggKind, f: u32, min_f: [u32; 8], max_f: [u32; 8]| {
            let types = [
                T::Int2,
                T::Int4,
                T::Int8,
                T::Date,
                T::Time,
                T::Timestamp,
                T::TimestampTz,
                T::Money,
            ];
            let list = if k == Min { min_f } else { max_f };
            list.iter()
                .position(|&x| x == f)
                .map(|i| (k, Some(types[i])))
        };
        let min_f = [
            p::F_MIN_INT2,
            p::F_MIN_INT4,
            p::F_MIN_INT8,
            p::F_MIN_DATE,
            p::F_MIN_TIME,
            p::F_MIN_TIMESTAMP,
            p::F_MIN_TIMESTAMPTZ,
            p::F_MIN_MONEY,
        ];
        let max_f = [
            p::F_MAX_INT2,
            p::F_MAX_INT4,
            p::F_MAX_INT8,
            p::F_MAX_DATE,
            p::F_MAX_TIME,
            p::F_MAX_TIMESTAMP,
            p::F_MAX_TIMESTAMPTZ,
            p::F_MAX_MONEY,
        ];
        Some(match f {
            p::F_COUNT_ => (CountStar, None),
            p::F_COUNT_ANY => (Count, None),
            p::F_SUM_INT2 => (SumToInt8, Some(T::Int2)),
            p::F_SUM_INT4 => (SumToInt8, Some(T::Int4)),
            p::F_SUM_INT8 => (SumToNumeric, Some(T::Int8)),
            p::F_AVG_INT2 => (AvgOfInt8Sum, Some(T::Int2)),
            p::F_AVG_INT4 => (AvgOfInt8Sum, Some(T::Int4)),
            p::F_AVG_INT8 => (AvgOf128Sum, Some(T::Int8)),
            _ if f == p::F_MIN_OID.to_u32() => (Min, Some(T::Oid)),
            _ if f == p::F_MAX_OID.to_u32() => (Max, Some(T::Oid)),
            _ => return minmax(Min, f, min_f, max_f).or_else(|| minmax(Max, f, min_f, max_f)),
        })
    }
}

/// One aggregate of a plan: its kind and the column it reads (None for `count(*)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggSpec {
    pub kind: AggKind,
    /// 0-based column index.
    pub col: Option<usize>,
}

/// A datum of the integer type `form` reads, for value `v`.
fn int_datum(form: IntForm, v: i64) -> pg_sys::Datum {
    match form {
        IntForm::I16 => pg_sys::Datum::from(v as i16),
        IntForm::I32 => pg_sys::Datum::from(v as i32),
        IntForm::U32 => pg_sys::Datum::from(v as u32),
        IntForm::I64 => pg_sys::Datum::from(v),
    }
}

/// The running state of one aggregate.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acc {
    pub(super) spec: AggSpec,
    pub(super) form: Option<IntForm>,
    /// Input rows counted (non-NULL ones for a column aggregate).
    pub(super) n: i64,
    /// Sums wrap at 64 bits where PostgreSQL's int8 transition state does, else at 128
    /// (never, for fewer than 2^64 rows).
    pub(super) sum: i128,
    pub(super) best: i64,
}

impl Acc {
    #[inline]
    pub(super) fn add(&mut self, layout: &RowLayout, row: &[u8]) {
        let Some(col) = self.spec.col else {
            self.n += 1;
            return;
        };
        let Some(b) = layout.get(row, col) else {
            return;
        };
        self.n += 1;
        let Some(form) = self.form else {
            return;
        };
        // (Rows are packed by the engine: a column has its type's width.)
        let v = form.read(b).expect("an integer column's width");
        match self.spec.kind {
            AggKind::SumToInt8 | AggKind::AvgOfInt8Sum => {
                self.sum = (self.sum as i64).wrapping_add(v) as i128
            }
            AggKind::SumToNumeric | AggKind::AvgOf128Sum => self.sum += v as i128,
            AggKind::Min if self.n == 1 || v < self.best => self.best = v,
            AggKind::Max if self.n == 1 || v > self.best => self.best = v,
            _ => {}
        }
    }

    /// Adds what `o` (the same aggregate over other rows) counted: the result is the
    /// aggregate over both sets of rows (sums that wrap at 64 bits wrap the same way
    /// in any order).
    pub(super) fn merge(&mut self, o: &Acc) {
        let had = self.n > 0;
        self.n += o.n;
        match self.spec.kind {
            AggKind::SumToInt8 | AggKind::AvgOfInt8Sum => {
                self.sum = (self.sum as i64).wrapping_add(o.sum as i64) as i128
            }
            AggKind::SumToNumeric | AggKind::AvgOf128Sum => self.sum += o.sum,
            AggKind::Min if o.n > 0 && (!had || o.best < self.best) => self.best = o.best,
            AggKind::Max if o.n > 0 && (!had || o.best > self.best) => self.best = o.best,
            _ => {}
        }
    }

    /// The aggregate's value (None = NULL), allocated in the current memory context.
    ///
    /// # Safety
    /// Calls PostgreSQL's numeric functions.
    pub(super) unsafe fn result(&self) -> Option<pg_sys::Datum> {
        use AggKind::*;
        match self.spec.kind {
            CountStar | Count => Some(pg_sys::Datum::from(self.n)),
            _ if self.n == 0 => None,
            SumToInt8 => Some(pg_sys::Datum::from(self.sum as i64)),
            Min | Max => Some(int_datum(self.form.expect("typed"), self.best)),
            // SAFETY: PostgreSQL's numeric functions on values built here.
            SumToNumeric => Some(unsafe { numeric_of(self.sum) }),
            // SAFETY: PostgreSQL's numeric functions on values built here.
            AvgOfInt8Sum | AvgOf128Sum => unsafe {
                let count = pg_sys::Datum::from(pg_sys::int64_to_numeric(self.n));
                pgrx::fcinfo::direct_function_call_as_datum(
                    pg_sys::numeric_div,
                    &[Some(numeric_of(self.sum)), Some(count)],
                )
            },
        }
    }
}

/// A numeric datum for a 128-bit integer.
///
/// # Safety
/// Calls PostgreSQL's numeric functions.
unsafe fn numeric_of(v: i128) -> pg_sys::Datum {
    // SAFETY: PostgreSQL's numeric constructors on a well-formed integer literal.
    unsafe {
        if let Ok(small) = i64::try_from(v) {
            return pg_sys::Datum::from(pg_sys::int64_to_numeric(small));
        }
        let text = CString::new(v.to_string()).expect("digits");
        pgrx::fcinfo::direct_function_call_as_datum(
            pg_sys::numeric_in,
            &[
                Some(pg_sys::Datum::from(text.as_ptr())),
                Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                Some(pg_sys::Datum::from(-1i32)),
            ],
        )
        .expect("numeric_in returns a value")
    }
}
