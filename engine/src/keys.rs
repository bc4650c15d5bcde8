//! Memcomparable key encoding: index keys are byte strings whose `memcmp` order equals
//! PostgreSQL's btree order of the typed values, so the skip lists compare bytes only.
//!
//! A key is the concatenation of its columns' encodings, each self-delimiting (no
//! encoding is a proper prefix of another), so the encoding of a column prefix is a
//! byte prefix of the whole key, and "all keys whose first k columns equal these
//! values" is a byte-prefix range:
//!
//! * NULL is `0x02`, a value is `0x01` followed by its encoding, so NULLs sort last
//!   (PostgreSQL's default `ASC NULLS LAST`; read backwards: `DESC NULLS FIRST`);
//! * integers, date, time, timestamp, timestamptz: big-endian with the sign bit flipped;
//! * float4/8: IEEE bits, all bits flipped for negatives, the sign bit for positives;
//!   `-0` is encoded as `0` and every NaN as the largest value (PostgreSQL's order);
//! * numeric: class byte (-inf, negative, zero, positive, +inf, NaN), then for
//!   non-zero finite values the base-10000 weight and digits (all inverted for
//!   negatives), so the display scale does not matter (`1.0 = 1.00`);
//! * text/varchar: the bytes, then `0x00` (PostgreSQL text holds no NUL); char(n):
//!   trailing blanks dropped first (they are insignificant for bpchar);
//! * bytea: `0x00` escaped as `0x00 0xFF`, terminated by `0x00 0x00`;
//! * timetz: the UTC instant, then the zone; interval: its span in microseconds
//!   (months as 30 days, days as 24 hours, PostgreSQL's comparison value);
//! * uuid: the 16 bytes; bool: one byte.
//!
//! Text order is byte order: it equals PostgreSQL's only under the C collation. The
//! FDW offers text indexes for ranges and ORDER BY only then; equality is byte
//! equality for every deterministic collation.

use crate::catalog::ColumnType;
use crate::error::{Error, Result};

pub const NULL_MARK: u8 = 0x02;
pub const VALUE_MARK: u8 = 0x01;

/// Can a column of this type be part of an index key?
pub fn indexable(ty: ColumnType) -> bool {
    !matches!(
        ty,
        ColumnType::Json | ColumnType::Jsonb | ColumnType::Other { .. } | ColumnType::Dropped
    )
}

fn flip_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

fn flip_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&((v as u32) ^ (1 << 31)).to_be_bytes());
}

fn le<const N: usize>(b: &[u8]) -> Result<[u8; N]> {
    b.try_into()
        .map_err(|_| Error::Corrupt(format!("key value of {} bytes, expected {N}", b.len())))
}

/// Longest encoding [`encode_value`] gives a value (or NULL) of `ty`, if bounded: the
/// fixed-width types. Their keys go to B+trees (see [`crate::index`]).
pub fn max_encoded_len(ty: ColumnType) -> Option<usize> {
    use ColumnType::*;
    let value = match ty {
        Bool | Char1 => 1,
        Int2 => 2,
        Int4 | Date | Float4 | Oid => 4,
        Int8 | Time | Timestamp | TimestampTz | Float8 | Money => 8,
        TimeTz => 12,
        Interval | Uuid => 16,
        MacAddr(n) => n as usize,
        _ => return None,
    };
    Some(1 + value)
}

/// `b` without its trailing blanks: a `character(n)` value as its comparisons see it
/// (0x20 bytes; in every server encoding a byte below 0x80 is a whole ASCII character,
/// never part of a multibyte one).
#[inline]
pub fn trim_blanks(b: &[u8]) -> &[u8] {
    &b[..b.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1)]
}

/// Appends the encoding of one column value (`None` = NULL) of type `ty`, given in the
/// packed row representation.
pub fn encode_value(ty: ColumnType, v: Option<&[u8]>, out: &mut Vec<u8>) -> Result<()> {
    use ColumnType::*;
    let Some(b) = v else {
        out.push(NULL_MARK);
        return Ok(());
    };
    out.push(VALUE_MARK);
    match ty {
        Bool => out.push((b.first().copied().unwrap_or(0) != 0) as u8),
        Int2 => {
            let v = i16::from_le_bytes(le(b)?);
            out.extend_from_slice(&((v as u16) ^ (1 << 15)).to_be_bytes());
        }
        Int4 | Date => flip_i32(out, i32::from_le_bytes(le(b)?)),
        Int8 | Time | Timestamp | TimestampTz => flip_i64(out, i64::from_le_bytes(le(b)?)),
        Float4 => {
            let f = f32::from_le_bytes(le(b)?);
            let bits = if f.is_nan() {
                u32::MAX
            } else {
                let bits = (if f == 0.0 { 0.0f32 } else { f }).to_bits();
                if bits >> 31 == 1 {
                    !bits
                } else {
                    bits ^ (1 << 31)
                }
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Float8 => {
            let f = f64::from_le_bytes(le(b)?);
            let bits = if f.is_nan() {
                u64::MAX
            } else {
                let bits = (if f == 0.0 { 0.0f64 } else { f }).to_bits();
                if bits >> 63 == 1 {
                    !bits
                } else {
                    bits ^ (1 << 63)
                }
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        TimeTz => {
            let time = i64::from_le_bytes(le(&b[..8.min(b.len())])?);
            let zone = i32::from_le_bytes(le(&b[8.min(b.len())..])?);
            flip_i64(out, time.wrapping_add(zone as i64 * 1_000_000));
            flip_i32(out, zone);
        }
        Interval => {
            let time = i64::from_le_bytes(le(&b[..8.min(b.len())])?);
            let rest = &b[8.min(b.len())..];
            let day = i32::from_le_bytes(le(&rest[..4.min(rest.len())])?);
            let month = i32::from_le_bytes(le(&rest[4.min(rest.len())..])?);
            let span = time as i128 + (month as i128 * 30 + day as i128) * 86_400_000_000;
            out.extend_from_slice(&((span as u128) ^ (1 << 127)).to_be_bytes());
        }
        Uuid => out.extend_from_slice(&le::<16>(b)?),
        Text | Varchar(_) => {
            out.extend_from_slice(b);
            out.push(0);
        }
        Char(_) => {
            out.extend_from_slice(trim_blanks(b));
            out.push(0);
        }
        Bytea => {
            for &c in b {
                out.push(c);
                if c == 0 {
                    out.push(0xFF);
                }
            }
            out.extend_from_slice(&[0, 0]);
        }
        Numeric => encode_numeric(b, out)?,
        Oid => out.extend_from_slice(&u32::from_le_bytes(le(b)?).to_be_bytes()),
        Char1 => out.push(le::<1>(b)?[0]),
        Money => flip_i64(out, i64::from_le_bytes(le(b)?)),
        MacAddr(_) => out.extend_from_slice(b),
        Name => {
            // namecmp compares with strncmp: bytes up to the first NUL.
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            out.extend_from_slice(&b[..end]);
            out.push(0);
        }
        Json | Jsonb | Other { .. } | Dropped => {
            return Err(Error::Corrupt(format!(
                "{} values are not indexable",
                ty.name()
            )));
        }
    }
    Ok(())
}

const NUMERIC_SIGN_MASK: u16 = 0xC000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_SHORT: u16 = 0x8000;
const NUMERIC_SPECIAL: u16 = 0xC000;
const NUMERIC_EXT_SIGN_MASK: u16 = 0xF000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_SHORT_SIGN_MASK: u16 = 0x2000;
const NUMERIC_SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const NUMERIC_SHORT_WEIGHT_MASK: u16 = 0x003F;

/// PostgreSQL's numeric payload (the varlena body): short or long header, then
/// base-10000 digits as native int16.
fn encode_numeric(b: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let bad = || Error::Corrupt("malformed numeric value in an index key".into());
    if b.len() < 2 {
        return Err(bad());
    }
    let h = u16::from_le_bytes([b[0], b[1]]);
    let (neg, weight, digits) = match h & NUMERIC_SIGN_MASK {
        NUMERIC_SPECIAL => {
            out.push(match h & NUMERIC_EXT_SIGN_MASK {
                NUMERIC_NAN => 6,
                NUMERIC_PINF => 5,
                _ => 1,
            });
            return Ok(());
        }
        NUMERIC_SHORT => {
            let mut w = (h & NUMERIC_SHORT_WEIGHT_MASK) as i16;
            if h & NUMERIC_SHORT_WEIGHT_SIGN_MASK != 0 {
                w |= !(NUMERIC_SHORT_WEIGHT_MASK as i16);
            }
            (h & NUMERIC_SHORT_SIGN_MASK != 0, w, &b[2..])
        }
        s => {
            if b.len() < 4 {
                return Err(bad());
            }
            (s == NUMERIC_NEG, i16::from_le_bytes([b[2], b[3]]), &b[4..])
        }
    };
    if digits.len() % 2 != 0 {
        return Err(bad());
    }
    let mut ds: Vec<u16> = digits
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    if ds.iter().any(|&d| d > 9999) {
        return Err(bad());
    }
    // Normalise: leading zero digits lower the weight; trailing ones mean nothing.
    let lead = ds.iter().take_while(|&&d| d == 0).count();
    let weight = weight as i32 - lead as i32;
    ds.drain(..lead);
    while ds.last() == Some(&0) {
        ds.pop();
    }
    if ds.is_empty() {
        out.push(3);
        return Ok(());
    }
    out.push(if neg { 2 } else { 4 });
    let inv = |x: u16| if neg { !x } else { x };
    let w = (weight.clamp(i16::MIN as i32, i16::MAX as i32) as i16 as u16) ^ (1 << 15);
    out.extend_from_slice(&inv(w).to_be_bytes());
    for d in ds {
        out.extend_from_slice(&inv(d + 1).to_be_bytes());
    }
    out.extend_from_slice(&inv(0).to_be_bytes());
    Ok(())
}

/// The smallest byte string greater than every string that starts with `p`
/// (None if there is none: `p` is all `0xFF`).
pub fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last != 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(ty: ColumnType, v: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(ty, v, &mut out).unwrap();
        out
    }

    /// PostgreSQL's long numeric format for a decimal string (test helper).
    pub(crate) fn numeric(s: &str) -> Vec<u8> {
        let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let int = int.trim_start_matches('0');
        // Group digits in fours around the decimal point.
        let ipad = (4 - int.len() % 4) % 4;
        let istr = format!("{}{}", "0".repeat(ipad), int);
        let fpad = (4 - frac.len() % 4) % 4;
        let fstr = format!("{}{}", frac, "0".repeat(fpad));
        let mut digits: Vec<u16> = istr
            .as_bytes()
            .chunks(4)
            .chain(fstr.as_bytes().chunks(4))
            .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
            .collect();
        let mut weight = (istr.len() / 4) as i16 - 1;
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        let mut out = Vec::new();
        let sign: u16 = if neg && !digits.is_empty() {
            NUMERIC_NEG
        } else {
            0
        };
        out.extend_from_slice(&(sign | frac.len() as u16).to_le_bytes());
        out.extend_from_slice(&weight.to_le_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    #[test]
    fn nulls_sort_last_and_prefixes_are_byte_prefixes() {
        let a = enc(ColumnType::Int4, Some(&i32::MAX.to_le_bytes()));
        let n = enc(ColumnType::Int4, None);
        assert!(a < n);
        let mut two = enc(ColumnType::Text, Some(b"ab"));
        let first = two.clone();
        two.extend(enc(ColumnType::Int4, Some(&1i32.to_le_bytes())));
        assert!(two.starts_with(&first));
        assert!(enc(ColumnType::Text, Some(b"a")) < enc(ColumnType::Text, Some(b"a\x01")));
    }

    #[test]
    fn numeric_order_and_equality() {
        let vals = [
            "-1000000",
            "-10000.5",
            "-10000",
            "-9999.9999",
            "-1.5",
            "-1.25",
            "-1",
            "-0.0001",
            "0",
            "0.0001",
            "0.5",
            "1",
            "1.00001",
            "1.5",
            "9999",
            "10000",
            "10000.0001",
            "123456789",
        ];
        let encs: Vec<Vec<u8>> = vals
            .iter()
            .map(|v| enc(ColumnType::Numeric, Some(&numeric(v))))
            .collect();
        for w in encs.windows(2) {
            assert!(w[0] < w[1], "{:?} !< {:?}", w[0], w[1]);
        }
        assert_eq!(
            enc(ColumnType::Numeric, Some(&numeric("1.0"))),
            enc(ColumnType::Numeric, Some(&numeric("1.000")))
        );
        let nan = enc(ColumnType::Numeric, Some(&NUMERIC_NAN.to_le_bytes()));
        let pinf = enc(ColumnType::Numeric, Some(&NUMERIC_PINF.to_le_bytes()));
        let ninf = enc(ColumnType::Numeric, Some(&0xF000u16.to_le_bytes()));
        assert!(ninf < encs[0] && encs[encs.len() - 1] < pinf && pinf < nan);
        // Short format (as PostgreSQL stores small values): 1.5 = weight 0, digits 1, 5000.
        let short: Vec<u8> = [NUMERIC_SHORT | (1 << 7), 1, 5000]
            .iter()
            .flat_map(|d: &u16| d.to_le_bytes())
            .collect();
        assert_eq!(enc(ColumnType::Numeric, Some(&short)), encs[13]);
        assert!(encode_value(ColumnType::Numeric, Some(&[1]), &mut Vec::new()).is_err());
    }

    #[test]
    fn floats_follow_postgres_order() {
        let vals = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -1e-300,
            0.0,
            1e-300,
            1.0,
            f64::INFINITY,
            f64::NAN,
        ];
        let encs: Vec<_> = vals
            .iter()
            .map(|v| enc(ColumnType::Float8, Some(&v.to_le_bytes())))
            .collect();
        for w in encs.windows(2) {
            assert!(w[0] < w[1]);
        }
        assert_eq!(
            enc(ColumnType::Float8, Some(&(-0.0f64).to_le_bytes())),
            enc(ColumnType::Float8, Some(&0.0f64.to_le_bytes()))
        );
    }

    #[test]
    fn interval_compares_by_span_and_char_ignores_trailing_blanks() {
        let iv = |t: i64, d: i32, m: i32| {
            let mut b = t.to_le_bytes().to_vec();
            b.extend(d.to_le_bytes());
            b.extend(m.to_le_bytes());
            enc(ColumnType::Interval, Some(&b))
        };
        assert_eq!(iv(0, 1, 0), iv(86_400_000_000, 0, 0));
        assert_eq!(iv(0, 30, 0), iv(0, 0, 1));
        assert!(iv(-1, 0, 0) < iv(0, 0, 0));
        assert_eq!(
            enc(ColumnType::Char(5), Some(b"ab   ")),
            enc(ColumnType::Char(5), Some(b"ab"))
        );
    }

    #[test]
    fn oid_money_name_macaddr_and_char_orders() {
        let oid = |v: u32| enc(ColumnType::Oid, Some(&v.to_le_bytes()));
        assert!(oid(1) < oid(2) && oid(0x7fff_ffff) < oid(0x8000_0000));
        let money = |v: i64| enc(ColumnType::Money, Some(&v.to_le_bytes()));
        assert!(money(-5) < money(0) && money(0) < money(7));
        let name = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            b.resize(64, 0);
            enc(ColumnType::Name, Some(&b))
        };
        assert!(name("ab") < name("abc") && name("abc") < name("abd"));
        assert_eq!(name("x"), enc(ColumnType::Text, Some(b"x")));
        let ch = |c: u8| enc(ColumnType::Char1, Some(&[c]));
        assert!(ch(b'a') < ch(b'b') && ch(0x7f) < ch(0x80));
        let mac = |b: [u8; 6]| enc(ColumnType::MacAddr(6), Some(&b));
        assert!(mac([0, 0, 0, 0, 0, 9]) < mac([0, 0, 0, 0, 1, 0]));
        assert!(!indexable(ColumnType::Other {
            len: -1,
            byval: false
        }));
        assert!(encode_value(ColumnType::Dropped, Some(&[]), &mut Vec::new()).is_err());
    }

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF]), None);
    }

    proptest! {
        #[test]
        fn int_order(a: i64, b: i64) {
            let ea = enc(ColumnType::Int8, Some(&a.to_le_bytes()));
            let eb = enc(ColumnType::Int8, Some(&b.to_le_bytes()));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn int2_int4_order(a: i16, b: i16, c: i32, d: i32) {
            prop_assert_eq!(a.cmp(&b), enc(ColumnType::Int2, Some(&a.to_le_bytes())).cmp(&enc(ColumnType::Int2, Some(&b.to_le_bytes()))));
            prop_assert_eq!(c.cmp(&d), enc(ColumnType::Int4, Some(&c.to_le_bytes())).cmp(&enc(ColumnType::Int4, Some(&d.to_le_bytes()))));
        }

        #[test]
        fn float_order(a: f64, b: f64) {
            prop_assume!(!a.is_nan() && !b.is_nan());
            let ea = enc(ColumnType::Float8, Some(&a.to_le_bytes()));
            let eb = enc(ColumnType::Float8, Some(&b.to_le_bytes()));
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), ea.cmp(&eb));
        }

        #[test]
        fn bytea_and_text_order(a: Vec<u8>, b: Vec<u8>, x in "[a-z]{0,6}", y in "[a-z]{0,6}") {
            let ea = enc(ColumnType::Bytea, Some(&a));
            let eb = enc(ColumnType::Bytea, Some(&b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
            let ex = enc(ColumnType::Text, Some(x.as_bytes()));
            let ey = enc(ColumnType::Text, Some(y.as_bytes()));
            prop_assert_eq!(x.cmp(&y), ex.cmp(&ey));
        }

        #[test]
        fn numeric_order(a in -10_000_000i64..10_000_000, b in -10_000_000i64..10_000_000, sa in 0u32..5, sb in 0u32..5) {
            // a / 10^sa vs b / 10^sb, written as decimal strings.
            let s = |v: i64, sc: u32| {
                let d = 10i64.pow(sc);
                let sign = if v < 0 { "-" } else { "" };
                format!("{sign}{}.{:0w$}", v.abs() / d, v.abs() % d, w = sc as usize)
            };
            let (x, y) = (s(a, sa), s(b, sb));
            let (fa, fb) = (a as i128 * 10i128.pow(4 - sa), b as i128 * 10i128.pow(4 - sb));
            let ea = enc(ColumnType::Numeric, Some(&numeric(&x)));
            let eb = enc(ColumnType::Numeric, Some(&numeric(&y)));
            prop_assert_eq!(fa.cmp(&fb), ea.cmp(&eb), "{} vs {}", x, y);
        }
    }
}
