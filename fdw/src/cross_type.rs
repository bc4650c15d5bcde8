//! Index conditions whose comparison value has another type than the column, within
//! one btree operator family, as PostgreSQL's btree handles them: `int8_col = 5`
//! (int4), `int2_col < $1` (int8), `float4_col = 0.5` (float8), `date_col <
//! now()::timestamp`, `timestamptz_col >= '2024-01-01'::date`. Drivers commonly bind
//! integers as int8, so without this a point lookup becomes a full scan.
//!
//! The value is converted to the column's type for its key encoding:
//! * exactly, when the column type has the same value ([`Conv::Exact`]);
//! * to the nearest column value on the side that keeps every match, when it has no
//!   equal one ([`Conv::Rounded`]: `float4_col < 0.1::float8` scans up to the float4
//!   nearest 0.1, inclusive; a date column against a timestamp uses the timestamp's
//!   day). An equality with such a value matches nothing;
//! * or it lies beyond every value of the column type ([`Conv::AboveAll`],
//!   [`Conv::BelowAll`]): `int2_col = 100000` matches nothing, `int2_col < 100000`
//!   everything. (A date beyond the timestamp range is not beyond a timestamp column's
//!   infinities: it is [`Conv::Rounded`] to the infinity on its side.)
//!
//! PostgreSQL still checks every clause on the rows the index returns, so a bound only
//! has to keep every match.
//!
//! Pairs handled: int2/int4/int8 among themselves, float4/float8, and date, timestamp
//! and timestamptz; a timestamp column against a timestamptz value in ranges only
//! (PostgreSQL converts the column, through the session time zone, which is not
//! one-to-one: [`Conv::Between`]).

use memfdw_engine::ColumnType;
use pgrx::pg_sys;

/// A comparison value converted to a column's type.
#[derive(Debug, Clone, Copy)]
pub enum Conv {
    /// The same value, as a datum of the column's type.
    Exact(pg_sys::Datum),
    /// No column value equals it; this one is the nearest on the side that keeps every
    /// match (a bound to use inclusively).
    Rounded(pg_sys::Datum),
    /// Greater than every value of the column type.
    AboveAll,
    /// Less than every value of the column type.
    BelowAll,
    /// Every column value that compares with it as the condition asks lies within
    /// these bounds (inclusive): a lower bound for `>`/`>=`, an upper one for
    /// `<`/`<=`. Only for ranges: see [`convertible_for_range`].
    Between(pg_sys::Datum, pg_sys::Datum),
}

pub(crate) fn int_family(t: pg_sys::Oid) -> bool {
    t == pg_sys::INT2OID || t == pg_sys::INT4OID || t == pg_sys::INT8OID
}

fn float_family(t: pg_sys::Oid) -> bool {
    t == pg_sys::FLOAT4OID || t == pg_sys::FLOAT8OID
}

fn datetime_family(t: pg_sys::Oid) -> bool {
    t == pg_sys::DATEOID || t == pg_sys::TIMESTAMPOID || t == pg_sys::TIMESTAMPTZOID
}

/// Can an index on a column of type `col` (a base type) take a comparison value of
/// type `value`, of another type in the same operator family?
pub fn convertible(col: pg_sys::Oid, value: pg_sys::Oid) -> bool {
    (int_family(col) && int_family(value))
        || (float_family(col) && float_family(value))
        || (datetime_family(col)
            && datetime_family(value)
            && !(col == pg_sys::TIMESTAMPOID && value == pg_sys::TIMESTAMPTZOID))
}

/// Can a range condition (not an equality or IN) on a column of type `col` take a
/// value of type `value` through [`Conv::Between`]: a timestamp column against a
/// timestamptz value (`ts_col > now() - interval '1 hour'`)? PostgreSQL compares the
/// column's value read in the session time zone, whose offset from UTC is under a day
/// either way, so the value's own instant, read as a timestamp, one day either side,
/// bounds every match.
pub fn convertible_for_range(col: pg_sys::Oid, value: pg_sys::Oid) -> bool {
    col == pg_sys::TIMESTAMPOID && value == pg_sys::TIMESTAMPTZOID
}

const USECS_PER_DAY: i64 = 86_400_000_000;

/// Converts `d`, a non-null value of type `value`, to the type `col` of an index
/// column. `value` must be the column's own type or [`convertible`] to it.
///
/// # Safety
/// `d` must be a valid datum of type `value`.
pub unsafe fn to_column(col: ColumnType, value: pg_sys::Oid, d: pg_sys::Datum) -> Conv {
    match col {
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => {
            let v: i64 = match value {
                pg_sys::INT2OID => d.value() as i16 as i64,
                pg_sys::INT4OID => d.value() as i32 as i64,
                pg_sys::INT8OID => d.value() as i64,
                _ => return Conv::Exact(d),
            };
            let (lo, hi) = match col {
                ColumnType::Int2 => (i16::MIN as i64, i16::MAX as i64),
                ColumnType::Int4 => (i32::MIN as i64, i32::MAX as i64),
                _ => (i64::MIN, i64::MAX),
            };
            if v > hi {
                Conv::AboveAll
            } else if v < lo {
                Conv::BelowAll
            } else {
                Conv::Exact(pg_sys::Datum::from(v))
            }
        }
        ColumnType::Float4 if value == pg_sys::FLOAT8OID => {
            let v = f64::from_bits(d.value() as u64);
            let r = v as f32;
            if r as f64 == v || v.is_nan() {
                Conv::Exact(pg_sys::Datum::from(r.to_bits()))
            } else {
                Conv::Rounded(pg_sys::Datum::from(r.to_bits()))
            }
        }
        ColumnType::Float8 if value == pg_sys::FLOAT4OID => {
            let v = f32::from_bits(d.value() as u32) as f64;
            Conv::Exact(pg_sys::Datum::from(v.to_bits()))
        }
        ColumnType::Date if value != pg_sys::DATEOID => {
            // PostgreSQL compares the column's day as a timestamp(tz) at its midnight:
            // the value's own day is the nearest column value.
            let (day, midnight) = if value == pg_sys::TIMESTAMPOID {
                let ts = d.value() as i64;
                if ts == i64::MIN || ts == i64::MAX {
                    return infinity(ts == i64::MAX);
                }
                let day = ts.div_euclid(USECS_PER_DAY);
                if day > i32::MAX as i64 - 1 {
                    return Conv::AboveAll;
                }
                (day as i32, day * USECS_PER_DAY == ts)
            } else {
                let ts = d.value() as i64;
                if ts == i64::MIN || ts == i64::MAX {
                    return infinity(ts == i64::MAX);
                }
                // (F_DATE_TIMESTAMPTZ: the function `date(timestamptz)`.)
                // SAFETY: a built-in cast of a valid timestamptz (session time zone).
                let day = unsafe {
                    pg_sys::OidFunctionCall1Coll(
                        pg_sys::Oid::from(pg_sys::F_DATE_TIMESTAMPTZ),
                        pg_sys::InvalidOid,
                        d,
                    )
                }
                .value() as i32;
                let mut overflow = 0;
                // SAFETY: a conversion that reports overflow instead of raising it.
                let back = unsafe { pg_sys::date2timestamptz_opt_overflow(day, &mut overflow) };
                (day, overflow == 0 && back == ts)
            };
            let out = pg_sys::Datum::from(day);
            if midnight {
                Conv::Exact(out)
            } else {
                Conv::Rounded(out)
            }
        }
        ColumnType::Timestamp | ColumnType::TimestampTz if value == pg_sys::DATEOID => {
            let mut overflow = 0;
            let day = d.value() as i32;
            // SAFETY: conversions that report overflow instead of raising it.
            let ts = unsafe {
                if col == ColumnType::Timestamp {
                    pg_sys::date2timestamp_opt_overflow(day, &mut overflow)
                } else {
                    pg_sys::date2timestamptz_opt_overflow(day, &mut overflow)
                }
            };
            overflowed(ts, overflow)
        }
        ColumnType::Timestamp if value == pg_sys::TIMESTAMPTZOID => {
            let v = d.value() as i64;
            Conv::Between(
                pg_sys::Datum::from(v.saturating_sub(USECS_PER_DAY)),
                pg_sys::Datum::from(v.saturating_add(USECS_PER_DAY)),
            )
        }
        ColumnType::TimestampTz if value == pg_sys::TIMESTAMPOID => {
            let mut overflow = 0;
            // SAFETY: a conversion that reports overflow instead of raising it.
            let ts = unsafe {
                pg_sys::timestamp2timestamptz_opt_overflow(d.value() as i64, &mut overflow)
            };
            overflowed(ts, overflow)
        }
        _ => Conv::Exact(d),
    }
}

/// A converted timestamp(tz), or, beyond the type's finite range, the infinity on that
/// side as an inclusive bound: PostgreSQL orders the column's infinities beyond every
/// finite value, this one included, so `ts > '300000-01-01'::date` keeps 'infinity'.
fn overflowed(ts: i64, overflow: std::ffi::c_int) -> Conv {
    match overflow {
        0 => Conv::Exact(pg_sys::Datum::from(ts)),
        o if o > 0 => Conv::Rounded(pg_sys::Datum::from(i64::MAX)),
        _ => Conv::Rounded(pg_sys::Datum::from(i64::MIN)),
    }
}

/// A timestamp infinity against a date column: the date infinity of the same sign.
fn infinity(positive: bool) -> Conv {
    Conv::Exact(pg_sys::Datum::from(if positive {
        i32::MAX
    } else {
        i32::MIN
    }))
}
